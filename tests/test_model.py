"""Statuses, the aggregate-status rule, task ids and the TaskInfo / TaskShard dataclasses.

Pure rules: no database. The aggregate rule is checked against a plain transcription
of the SPEC over every multiset of statuses.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

import pytest
from hypothesis import event, find, given
from hypothesis import strategies as st

from uniqc_taskstore import (
    TERMINAL_STATUSES,
    UNIQC_TASK_ID_PREFIX,
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    aggregate_status,
    generate_uniqc_task_id,
    is_generated_task_id,
    is_uniqc_task_id,
)
from uniqc_taskstore.model import validate_id, validate_task

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
ALL_STATUSES = list(TaskStatus)
HEX = "0123456789abcdef"
SOME_ID = "uqt_" + "0123456789abcdef" * 2


def spec_aggregate(statuses: Sequence[TaskStatus]) -> TaskStatus:
    """The SPEC's rule, written out literally."""
    if len(statuses) == 0:
        return PENDING
    for status in statuses:
        if status not in (SUCCESS, FAILED, CANCELLED):
            return RUNNING
    if all(status == SUCCESS for status in statuses):
        return SUCCESS
    if any(status == FAILED for status in statuses):
        return FAILED
    return CANCELLED


def all_multisets(max_size: int) -> list[tuple[TaskStatus, ...]]:
    return [
        combo
        for size in range(max_size + 1)
        for combo in itertools.combinations_with_replacement(ALL_STATUSES, size)
    ]


status_lists = st.lists(st.sampled_from(TaskStatus), max_size=12)
terminal_lists = st.lists(st.sampled_from([SUCCESS, FAILED, CANCELLED]), min_size=1, max_size=12)


# -- TaskStatus ---------------------------------------------------------------------------


def test_statuses_are_strings_equal_to_their_lowercase_names() -> None:
    assert [s.value for s in TaskStatus] == ["pending", "running", "success", "failed", "cancelled"]
    for status in TaskStatus:
        assert isinstance(status, str)
        assert status == status.name.lower()
        assert str(status) == status.name.lower()
        assert TaskStatus(status.name.lower()) is status


def test_terminal_statuses_are_success_failed_and_cancelled() -> None:
    assert frozenset({SUCCESS, FAILED, CANCELLED}) == TERMINAL_STATUSES
    assert "success" in TERMINAL_STATUSES
    assert "pending" not in TERMINAL_STATUSES
    assert [s for s in TaskStatus if s.is_terminal] == [SUCCESS, FAILED, CANCELLED]


# -- aggregate status ---------------------------------------------------------------------


def test_no_shards_makes_task_pending() -> None:
    assert aggregate_status([]) is PENDING


@pytest.mark.parametrize("statuses", all_multisets(4), ids=lambda c: ",".join(c) or "none")
def test_aggregate_status_follows_spec_for_every_multiset_up_to_four(
    statuses: tuple[TaskStatus, ...],
) -> None:
    expected = spec_aggregate(statuses)
    assert aggregate_status(statuses) is expected
    for permutation in set(itertools.permutations(statuses)):
        assert aggregate_status(permutation) is expected
    assert aggregate_status([s.value for s in statuses]) is expected


@given(status_lists)
def test_aggregate_status_matches_spec_rule(statuses: list[TaskStatus]) -> None:
    result = aggregate_status(statuses)
    assert isinstance(result, TaskStatus)
    assert result is spec_aggregate(statuses)


@given(status_lists.flatmap(lambda s: st.tuples(st.just(s), st.permutations(s))))
def test_order_of_shards_does_not_change_aggregate(
    original_and_shuffled: tuple[list[TaskStatus], list[TaskStatus]],
) -> None:
    original, shuffled = original_and_shuffled
    assert aggregate_status(shuffled) is aggregate_status(original)
    assert aggregate_status(reversed(original)) is aggregate_status(original)


@given(status_lists)
def test_duplicate_statuses_do_not_change_aggregate(statuses: list[TaskStatus]) -> None:
    expected = aggregate_status(statuses)
    assert aggregate_status(set(statuses)) is expected
    assert aggregate_status(statuses + statuses) is expected


@given(status_lists)
def test_aggregate_accepts_strings_and_generators(statuses: list[TaskStatus]) -> None:
    expected = aggregate_status(statuses)
    assert aggregate_status(s.value for s in statuses) is expected
    assert aggregate_status(iter(statuses)) is expected


@given(terminal_lists)
def test_adding_success_to_finished_shards_never_changes_outcome(
    statuses: list[TaskStatus],
) -> None:
    before = aggregate_status(statuses)
    assert aggregate_status([*statuses, SUCCESS]) is before


@given(terminal_lists)
def test_adding_failed_to_finished_shards_makes_task_failed(statuses: list[TaskStatus]) -> None:
    assert aggregate_status([*statuses, FAILED]) is FAILED


@given(status_lists, st.sampled_from([PENDING, RUNNING]))
def test_any_unfinished_shard_makes_task_running(
    statuses: list[TaskStatus], unfinished: TaskStatus
) -> None:
    assert aggregate_status([*statuses, unfinished]) is RUNNING


@given(terminal_lists)
def test_finished_shards_never_aggregate_to_unfinished(statuses: list[TaskStatus]) -> None:
    assert aggregate_status(statuses) in TERMINAL_STATUSES


@given(terminal_lists)
def test_cancelled_without_failure_makes_task_cancelled(statuses: list[TaskStatus]) -> None:
    with_cancel = [s for s in statuses if s != FAILED] + [CANCELLED]
    assert aggregate_status(with_cancel) is CANCELLED


@pytest.mark.parametrize("bad", ["done", "SUCCESS", "", 3, None])
def test_aggregate_rejects_unknown_status(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        aggregate_status([SUCCESS, bad])
    assert caught.value.value == bad


@given(status_lists)
def test_store_aggregate_of_shard_objects_equals_rule(statuses: list[TaskStatus]) -> None:
    shards = [
        TaskShard(SOME_ID, index, f"job-{index}", "dummy", status=status)
        for index, status in enumerate(statuses)
    ]
    assert TaskStore.aggregate_status(shards) is spec_aggregate(statuses)
    assert TaskStore.aggregate_status(statuses) is spec_aggregate(statuses)


def test_store_aggregate_of_no_shards_is_pending() -> None:
    assert TaskStore.aggregate_status([]) is PENDING


# -- task ids -----------------------------------------------------------------------------


def test_generated_task_id_is_prefix_and_32_lowercase_hex() -> None:
    assert UNIQC_TASK_ID_PREFIX == "uqt_"
    seen = set()
    for _ in range(200):
        task_id = generate_uniqc_task_id()
        assert len(task_id) == 36
        assert task_id.startswith("uqt_")
        assert all(c in HEX for c in task_id[4:])
        assert uuid.UUID(hex=task_id[4:]).version == 4
        assert is_generated_task_id(task_id)
        assert is_uniqc_task_id(task_id)
        seen.add(task_id)
    assert len(seen) == 200


@pytest.mark.parametrize(
    "near_miss",
    [
        "uqt_" + "ABCDEF0123456789" * 2,
        "uqt_" + "0123456789abcdeF" * 2,
        "uqt_" + "a" * 31,
        "uqt_" + "a" * 33,
        "0123456789abcdef" * 2,
        "0123456789abcdef" * 2 + "abcd",
        "UQT_" + "a" * 32,
        "uqt-" + "a" * 32,
        "uqt_" + "g" * 32,
        "uqt_" + "a" * 32 + "\n",
        " uqt_" + "a" * 32,
        "uqt_" + "a" * 32 + " ",
        "uqt_" + "a" * 28 + "\u0661\u0662\u0663\u0664",  # Arabic-Indic digits
        "",
    ],
)
def test_near_miss_is_not_a_generated_task_id(near_miss: str) -> None:
    assert not is_generated_task_id(near_miss)


@pytest.mark.parametrize("ours", ["uqt_timeout", "uqt_", "uqt_" + "A" * 32, "uqt_" + "a" * 40])
def test_any_uqt_prefixed_id_is_ours_as_in_the_original(ours: str) -> None:
    # The SDK routes on this: an id with the prefix is looked up in the store, never
    # sent to a cloud platform, whatever follows the prefix.
    assert is_uniqc_task_id(ours)
    assert not is_generated_task_id(ours)


@pytest.mark.parametrize(
    "platform_id", ["", "UQT_" + "a" * 32, " uqt_x", "uqt-x", "0123456789abcdef" * 2]
)
def test_id_without_the_prefix_is_the_platforms(platform_id: str) -> None:
    assert not is_uniqc_task_id(platform_id)


@pytest.mark.parametrize(
    "not_a_string",
    [None, 123, ("uqt_" + "a" * 32).encode(), ["uqt_" + "a" * 32], uuid.uuid4()],
)
def test_non_string_is_not_a_task_id(not_a_string: object) -> None:
    assert not is_uniqc_task_id(not_a_string)
    assert not is_generated_task_id(not_a_string)


valid_task_ids = st.uuids(version=4).map(lambda u: UNIQC_TASK_ID_PREFIX + u.hex)
"""Ids as ``generate_uniqc_task_id`` makes them: drawn directly, not hoped for in random text."""

NOT_LOWER_HEX = "ABCDEFgz _-\n\u0661\uff10"
"""Characters that look like they might belong in an id but do not."""


@st.composite
def near_miss_task_ids(draw: st.DrawFn) -> str:
    """A valid id with one small edit: a character replaced, dropped or added, the prefix
    changed, or whitespace around it."""
    valid = draw(valid_task_ids)
    position = draw(st.integers(0, len(valid) - 1))
    edit = draw(st.sampled_from(["replace", "drop", "add", "prefix", "pad"]))
    event(f"near miss: {edit}")
    if edit == "replace":
        return valid[:position] + draw(st.sampled_from(NOT_LOWER_HEX)) + valid[position + 1 :]
    if edit == "drop":
        return valid[:position] + valid[position + 1 :]
    if edit == "add":
        return valid[:position] + draw(st.sampled_from(HEX + NOT_LOWER_HEX)) + valid[position:]
    if edit == "prefix":
        return draw(st.sampled_from(["UQT_", "uqt-", "uqt", "qt_", "uqt__"])) + valid[4:]
    return draw(st.sampled_from([" ", "\t", "\n"])).join(["", valid, ""][draw(st.integers(0, 1)) :])


def is_task_id_by_spec(text: str) -> bool:
    """The reference for ``is_generated_task_id``: ``uqt_`` + 32 lowercase hex characters.
    (``is_uniqc_task_id`` is the original's looser check: the ``uqt_`` prefix alone.)"""
    return len(text) == 36 and text.startswith(UNIQC_TASK_ID_PREFIX) and set(text[4:]) <= set(HEX)


task_id_candidates = st.one_of(valid_task_ids, near_miss_task_ids(), st.text(max_size=40))


@given(valid_task_ids)
def test_every_generated_shape_of_id_is_a_task_id_and_a_usable_id(task_id: str) -> None:
    assert is_generated_task_id(task_id)
    assert is_uniqc_task_id(task_id)
    assert validate_id(task_id, "task_id") == task_id
    validate_task(TaskInfo(task_id, "dummy"))


@given(task_id_candidates)
def test_task_id_check_agrees_with_the_spec(text: str) -> None:
    expected = is_task_id_by_spec(text)
    event("a task id" if expected else "not a task id")
    assert is_generated_task_id(text) is expected
    assert is_uniqc_task_id(text) is text.startswith(UNIQC_TASK_ID_PREFIX)


def test_task_id_candidates_reach_both_answers() -> None:
    # The property above is only worth something if both answers are drawn.
    find(task_id_candidates, is_task_id_by_spec)
    find(task_id_candidates, lambda text: not is_task_id_by_spec(text))


def is_usable_id_by_spec(text: str) -> bool:
    """The reference for ``validate_id``: non-blank text of at most 255 characters
    without NUL that UTF-8 can encode."""
    return (
        text.strip() != ""
        and len(text) <= 255
        and "\x00" not in text
        and not any("\ud800" <= c <= "\udfff" for c in text)
    )


@st.composite
def unusable_ids(draw: st.DrawFn) -> str:
    """A valid id made unusable: too long, a NUL or a lone surrogate in it, or blank."""
    valid = draw(valid_task_ids)
    position = draw(st.integers(0, len(valid)))
    kind = draw(st.sampled_from(["too long", "nul", "surrogate", "blank"]))
    event(f"unusable: {kind}")
    if kind == "too long":
        return valid + draw(st.sampled_from(HEX)) * (256 - len(valid))
    if kind == "nul":
        return valid[:position] + "\x00" + valid[position:]
    if kind == "surrogate":
        return valid[:position] + draw(st.sampled_from(["\ud800", "\udfff"])) + valid[position:]
    return draw(st.text(alphabet=" \t\n\r\u3000", max_size=5))


id_candidates = st.one_of(valid_task_ids, unusable_ids(), st.text(max_size=300))


@given(id_candidates)
def test_validate_id_accepts_exactly_the_usable_ids(text: str) -> None:
    if is_usable_id_by_spec(text):
        event("usable")
        assert validate_id(text, "platform_task_id") == text
        return
    event("refused")
    with pytest.raises(InvalidInputError) as caught:
        validate_id(text, "platform_task_id")
    assert (caught.value.field, caught.value.value) == ("platform_task_id", text)


def test_id_candidates_reach_both_answers() -> None:
    find(id_candidates, is_usable_id_by_spec)
    find(id_candidates, lambda text: "\x00" in text)
    find(id_candidates, lambda text: "\ud800" in text or "\udfff" in text)
    find(id_candidates, lambda text: text != "" and text.isspace())
    find(id_candidates, lambda text: len(text) > 255)


# -- TaskInfo / TaskShard -----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.datetimes(timezones=st.just(UTC)).map(
    lambda d: d.isoformat(timespec="microseconds")
)
ids = st.text(min_size=1, max_size=40)
optional_text = st.none() | st.text(max_size=20)

task_infos = st.builds(
    TaskInfo,
    task_id=ids,
    backend=ids,
    status=st.sampled_from(TaskStatus),
    result=json_values,
    shots=st.integers(min_value=0, max_value=10**9),
    submit_time=timestamps,
    update_time=timestamps,
    metadata=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    error_message=optional_text,
    archived_at=st.none() | timestamps,
)
task_shards = st.builds(
    TaskShard,
    uniqc_task_id=ids,
    shard_index=st.integers(min_value=0, max_value=10**6),
    platform_task_id=ids,
    backend=ids,
    circuit_count=st.integers(min_value=1, max_value=10**4),
    sub_index_offset=st.integers(min_value=0, max_value=10**6),
    status=st.sampled_from(TaskStatus),
    result=json_values,
    error_message=optional_text,
    submit_time=timestamps,
    update_time=timestamps,
)

TASK_FIELDS = {
    "task_id",
    "backend",
    "status",
    "result",
    "shots",
    "submit_time",
    "update_time",
    "metadata",
    "error_message",
    "archived_at",
    "name",
    "tags",
}
SHARD_FIELDS = {
    "uniqc_task_id",
    "shard_index",
    "platform_task_id",
    "backend",
    "circuit_count",
    "sub_index_offset",
    "status",
    "result",
    "error_message",
    "submit_time",
    "update_time",
}


@given(task_infos)
def test_task_info_round_trips_through_dict(task: TaskInfo) -> None:
    data = task.to_dict()
    assert set(data) == TASK_FIELDS
    assert type(data["status"]) is str
    assert data["status"] == task.status.value
    assert TaskInfo.from_dict(data) == task


@given(task_shards)
def test_task_shard_round_trips_through_dict(shard: TaskShard) -> None:
    data = shard.to_dict()
    assert set(data) == SHARD_FIELDS
    assert type(data["status"]) is str
    assert data["status"] == shard.status.value
    assert TaskShard.from_dict(data) == shard


def test_to_dict_is_a_copy_of_nested_values() -> None:
    task = TaskInfo(SOME_ID, "dummy", result={"counts": {"00": 1}}, metadata={"tags": ["a"]})
    data = task.to_dict()
    data["result"]["counts"]["00"] = 99
    data["metadata"]["tags"].append("b")
    assert task.result == {"counts": {"00": 1}}
    assert task.metadata == {"tags": ["a"]}


def test_task_from_dict_tolerates_missing_error_message_and_archived_at() -> None:
    data = TaskInfo(SOME_ID, "dummy", status=TaskStatus.SUCCESS, result=[1]).to_dict()
    del data["error_message"]
    del data["archived_at"]
    task = TaskInfo.from_dict(data)
    assert task.error_message is None
    assert task.archived_at is None
    assert task.status is SUCCESS
    assert task.result == [1]


def test_task_from_dict_fills_defaults_for_optional_fields() -> None:
    task = TaskInfo.from_dict({"task_id": SOME_ID, "backend": "dummy"})
    assert task.status is PENDING
    assert task.shots == 1000
    assert task.metadata == {}
    assert task.result is None
    assert task.submit_time.endswith("+00:00")


def test_shard_from_dict_tolerates_missing_optional_fields() -> None:
    shard = TaskShard.from_dict(
        {"uniqc_task_id": SOME_ID, "shard_index": 2, "platform_task_id": "p", "backend": "b"}
    )
    assert (shard.circuit_count, shard.sub_index_offset) == (1, 0)
    assert shard.status is PENDING
    assert shard.error_message is None
    assert shard.result is None


def test_from_dict_ignores_unknown_keys() -> None:
    data = TaskInfo(SOME_ID, "dummy").to_dict() | {"added_in_a_later_version": 1}
    assert TaskInfo.from_dict(data).task_id == SOME_ID


@pytest.mark.parametrize("status", list(TaskStatus))
def test_status_strings_are_coerced_to_members(status: TaskStatus) -> None:
    task = TaskInfo(SOME_ID, "dummy", status=status.value)  # type: ignore[arg-type]
    shard = TaskShard(SOME_ID, 0, "p", "dummy", status=status.value)  # type: ignore[arg-type]
    assert task.status is status
    assert shard.status is status
    from_dict = TaskInfo.from_dict(TaskInfo(SOME_ID, "dummy").to_dict() | {"status": status.value})
    assert from_dict.status is status
    assert type(from_dict.status) is TaskStatus


@pytest.mark.parametrize("via", ["TaskInfo.from_dict", "TaskShard.from_dict", "TaskInfo()"])
@pytest.mark.parametrize("bad_status", ["done", "Success", " success", "", 1, None])
def test_unknown_status_is_invalid_input_naming_status(bad_status: Any, via: str) -> None:
    data = TaskInfo(SOME_ID, "dummy").to_dict() | {"status": bad_status}
    shard_data = TaskShard(SOME_ID, 0, "p", "dummy").to_dict() | {"status": bad_status}
    build: Callable[[], object] = {
        "TaskInfo.from_dict": lambda: TaskInfo.from_dict(data),
        "TaskShard.from_dict": lambda: TaskShard.from_dict(shard_data),
        "TaskInfo()": lambda: TaskInfo(SOME_ID, "dummy", status=bad_status),
    }[via]
    with pytest.raises(InvalidInputError) as caught:
        build()
    error = caught.value
    assert error.field == "status"
    assert error.value == bad_status
    assert isinstance(error, TaskStoreError)
    assert isinstance(error, ValueError)
    assert repr(bad_status) in str(error)
