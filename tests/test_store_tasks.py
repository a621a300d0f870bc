"""Tasks: upsert rules, listing, filtering, paging, counting and deleting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from uniqc_taskstore import (
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)

OLD_TIME = "2001-02-03T04:05:06.000007+00:00"


def make_task(backend: str = "originq:WK_C180", **fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend=backend, **fields)


def at(second: int) -> str:
    """A canonical submit time ``second`` seconds into 2026."""
    return f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000000+00:00"


def ids(found: list[TaskInfo]) -> list[str]:
    return [task.task_id for task in found]


def shards_of(
    task: TaskInfo, count: int, status: TaskStatus = TaskStatus.PENDING
) -> list[TaskShard]:
    return [
        TaskShard(
            task.task_id,
            i,
            f"{task.task_id}-job-{i}",
            task.backend,
            sub_index_offset=i,
            status=status,
        )
        for i in range(count)
    ]


# -- save ------------------------------------------------------------------------------


def test_save_stamps_update_time_on_object_and_row(store: TaskStore) -> None:
    task = make_task(update_time=OLD_TIME)
    store.save(task)
    assert task.update_time > OLD_TIME
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.update_time == task.update_time


def test_resave_keeps_first_submit_time(store: TaskStore) -> None:
    task = make_task(submit_time=at(1))
    store.save(task)
    store.save(TaskInfo(task.task_id, task.backend, submit_time=at(50)))
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.submit_time == at(1)


def test_resave_updates_backend_shots_metadata_result_and_error(store: TaskStore) -> None:
    task = make_task(shots=10, metadata={"a": 1}, result={"00": 1})
    store.save(task)
    changed = TaskInfo(
        task.task_id,
        "quafu:ScQ-P10",
        status=TaskStatus.FAILED,
        shots=20,
        metadata={"b": [2]},
        result={"11": 9},
        error_message="calibration lost",
        submit_time=task.submit_time,
    )
    store.save(changed)
    assert store.get(task.task_id) == changed


def test_resave_can_clear_result_and_error(store: TaskStore) -> None:
    task = make_task(status=TaskStatus.RUNNING, result={"00": 1}, error_message="retrying")
    store.save(task)
    task.result = None
    task.error_message = None
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert (stored.result, stored.error_message) == (None, None)


TERMINAL = [TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED]
NON_TERMINAL = [TaskStatus.PENDING, TaskStatus.RUNNING]


def test_stored_terminal_status_is_not_replaced_by_non_terminal_save(store: TaskStore) -> None:
    pairs = [(final, stale) for final in TERMINAL for stale in NON_TERMINAL]
    finals = [
        make_task(status=final, result={"00": 512}, error_message="final word")
        for final, _ in pairs
    ]
    store.save_many(finals)
    store.save_many(
        [
            TaskInfo(t.task_id, t.backend, status=stale, result={"11": 1}, error_message="stale")
            for t, (_, stale) in zip(finals, pairs, strict=True)
        ]
    )
    for task, (final, stale) in zip(finals, pairs, strict=True):
        stored = store.get(task.task_id)
        assert stored is not None
        kept = (stored.status, stored.result, stored.error_message)
        assert kept == (final, {"00": 512}, "final word"), f"{final} then {stale}"


def test_stale_save_still_updates_shots_and_metadata(store: TaskStore) -> None:
    task = make_task(status=TaskStatus.SUCCESS, shots=1, metadata={"v": 1})
    store.save(task)
    store.save(
        TaskInfo(task.task_id, task.backend, status=TaskStatus.RUNNING, shots=2, metadata={"v": 2})
    )
    stored = store.get(task.task_id)
    assert stored is not None
    assert (stored.status, stored.shots, stored.metadata) == (TaskStatus.SUCCESS, 2, {"v": 2})


def test_terminal_status_is_replaced_by_another_terminal_status(store: TaskStore) -> None:
    pairs = [(first, then) for first in TERMINAL for then in TERMINAL if first != then]
    firsts = [make_task(status=first, result={"0": 1}) for first, _ in pairs]
    store.save_many(firsts)
    store.save_many(
        [
            TaskInfo(t.task_id, t.backend, status=then, result={"1": 2}, error_message="changed")
            for t, (_, then) in zip(firsts, pairs, strict=True)
        ]
    )
    for task, (first, then) in zip(firsts, pairs, strict=True):
        stored = store.get(task.task_id)
        assert stored is not None
        replaced = (stored.status, stored.result, stored.error_message)
        assert replaced == (then, {"1": 2}, "changed"), f"{first} then {then}"


def test_non_terminal_status_moves_forward_on_save(store: TaskStore) -> None:
    task = make_task(status=TaskStatus.PENDING)
    store.save(task)
    task.status = TaskStatus.RUNNING
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.status == TaskStatus.RUNNING


def test_save_many_writes_every_task_in_one_call(store: TaskStore) -> None:
    batch = [make_task(submit_time=at(i), shots=i) for i in range(25)]
    store.save_many(batch)
    assert store.count() == 25
    assert store.list() == sorted(batch, key=lambda t: t.submit_time, reverse=True)


def test_save_many_with_the_same_id_twice_keeps_the_last(store: TaskStore) -> None:
    first = make_task(shots=1)
    second = TaskInfo(first.task_id, first.backend, shots=2)
    store.save_many([first, second])
    stored = store.get(first.task_id)
    assert stored is not None
    assert stored.shots == 2
    assert store.count() == 1


CUSTOM_IDS = ["job-1", "x", "12345", "IBM/ibm_brisbane/cq1a2b", "a b", "uqt_short", "-"]


def test_custom_non_uniqc_task_ids_work(store: TaskStore) -> None:
    for task_id in CUSTOM_IDS:
        task = TaskInfo(task_id, "dummy", result={"id": task_id})
        store.save(task, [TaskShard(task_id, 0, "p-" + task_id, "dummy")])
        assert store.get(task_id) == task
        assert [s.platform_task_id for s in store.get_shards(task_id)] == ["p-" + task_id]
        assert store.find_uniqc_id_by_platform_id("p-" + task_id) == task_id
    assert sorted(ids(store.list())) == sorted(CUSTOM_IDS)
    assert store.delete("job-1") is True
    assert store.count() == len(CUSTOM_IDS) - 1


def test_ids_differing_in_case_are_distinct_tasks(store: TaskStore) -> None:
    store.save_many([TaskInfo("Job", "dummy", shots=1), TaskInfo("job", "dummy", shots=2)])
    lower, upper = store.get("job"), store.get("Job")
    assert lower is not None
    assert upper is not None
    assert (lower.shots, upper.shots) == (2, 1)


def test_ids_differing_only_by_trailing_space_are_distinct_tasks(store: TaskStore) -> None:
    store.save(TaskInfo("job", "dummy", shots=1))
    store.save(TaskInfo("job ", "dummy", shots=2))
    plain, spaced = store.get("job"), store.get("job ")
    assert plain is not None
    assert spaced is not None
    assert (plain.task_id, plain.shots) == ("job", 1)
    assert (spaced.task_id, spaced.shots) == ("job ", 2)
    assert store.count() == 2


def test_unicode_in_ids_backend_metadata_and_result_round_trips(store: TaskStore) -> None:
    task = TaskInfo(
        task_id="任务-ß-🎉",
        backend="量子:設備-Ω",
        result={"結果": ["ü", "😀"], "𝄞": 1},
        metadata={"注释": "ünïcødé 🎉", "emoji🙂": {"ключ": "значение"}},
        error_message="ошибка 💥",
        status=TaskStatus.FAILED,
    )
    store.save(task, [TaskShard(task.task_id, 0, "平台-🎉", task.backend)])
    assert store.get(task.task_id) == task
    assert ids(store.list(backend="量子")) == [task.task_id]
    assert store.find_uniqc_id_by_platform_id("平台-🎉") == task.task_id


@pytest.fixture
def shanghai_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time UTC+8, so a naive timestamp read as local time would show."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


SUBMIT_TIMES = {
    "2026-03-01T08:00:00+08:00": "2026-03-01T00:00:00.000000+00:00",
    "2026-02-28T19:30:00.5-05:00": "2026-03-01T00:30:00.500000+00:00",
    "2026-03-01T00:00:01Z": "2026-03-01T00:00:01.000000+00:00",
    "2026-03-01T00:00:02+00:00": "2026-03-01T00:00:02.000000+00:00",
    "2026-03-01T00:00:03": "2026-03-01T00:00:03.000000+00:00",  # naive: UTC, not local
    "2026-03-01 00:00:04.123456": "2026-03-01T00:00:04.123456+00:00",
}


@pytest.mark.usefixtures("shanghai_local_time")
def test_submit_times_in_any_offset_or_naive_are_stored_as_canonical_utc(
    store: TaskStore,
) -> None:
    for given, canonical in SUBMIT_TIMES.items():
        moment = datetime.fromisoformat(given)
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        assert moment == datetime.fromisoformat(canonical)
    made = {given: make_task(submit_time=given) for given in SUBMIT_TIMES}
    store.save_many(list(made.values()))
    for given, task in made.items():
        stored = store.get(task.task_id)
        assert stored is not None
        assert stored.submit_time == SUBMIT_TIMES[given], given


def test_offset_submit_times_list_in_instant_order(store: TaskStore) -> None:
    # 01:00+08:00 is earlier than 00:30+00:00, although its text sorts later.
    earlier = make_task(submit_time="2026-03-01T01:00:00+08:00")
    later = make_task(submit_time="2026-02-28T17:30:00+00:00")
    store.save_many([earlier, later])
    assert ids(store.list()) == [later.task_id, earlier.task_id]


def test_largest_accepted_shots_round_trips(store: TaskStore) -> None:
    # The model accepts counts up to 2**31 - 1 (a 32-bit integer on every backend).
    task = make_task(shots=2**31 - 1)
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.shots == 2**31 - 1


def test_long_error_message_round_trips(store: TaskStore) -> None:
    message = "Traceback (most recent call last):\n" + "  frame ü\n" * 20_000
    task = make_task(status=TaskStatus.FAILED, error_message=message)
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.error_message == message


def test_large_result_round_trips(store: TaskStore) -> None:
    result = {format(i, "014b"): i for i in range(2**14)}
    task = make_task(result=result, status=TaskStatus.SUCCESS)
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.result == result


# -- list ------------------------------------------------------------------------------


def test_list_is_newest_first_by_submit_time(store: TaskStore) -> None:
    order = [3, 0, 4, 1, 2]
    tasks_ = [make_task(submit_time=at(s)) for s in order]
    store.save_many(tasks_)
    expected = sorted(tasks_, key=lambda t: t.submit_time, reverse=True)
    assert ids(store.list()) == ids(expected)


def test_list_breaks_submit_time_ties_by_task_id_descending(store: TaskStore) -> None:
    tied = [make_task(submit_time=at(5)) for _ in range(6)]
    newer = make_task(submit_time=at(9))
    older = make_task(submit_time=at(1))
    store.save_many([*tied, newer, older])
    expected = [newer.task_id, *sorted(ids(tied), reverse=True), older.task_id]
    assert ids(store.list()) == expected


def test_limit_and_offset_pages_cover_every_task_exactly_once(store: TaskStore) -> None:
    tasks_ = [make_task(submit_time=at(i % 4)) for i in range(11)]
    store.save_many(tasks_)
    pages = [store.list(limit=3, offset=start) for start in range(0, 12, 3)]
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    flat = [task_id for page in pages for task_id in ids(page)]
    assert flat == ids(store.list())
    assert sorted(flat) == sorted(ids(tasks_))


def test_offset_without_limit_returns_the_rest_and_past_the_end_nothing(
    store: TaskStore,
) -> None:
    tasks_ = [make_task(submit_time=at(i)) for i in range(5)]
    store.save_many(tasks_)
    assert ids(store.list(offset=2)) == ids(store.list())[2:]
    assert store.list(offset=5) == []
    assert store.list(limit=0) == []


@pytest.fixture
def one_task_per_status(store: TaskStore) -> dict[TaskStatus, TaskInfo]:
    made = {
        status: make_task(status=status, submit_time=at(i)) for i, status in enumerate(TaskStatus)
    }
    store.save_many(list(made.values()))
    return made


def test_list_filters_by_one_status(
    store: TaskStore, one_task_per_status: dict[TaskStatus, TaskInfo]
) -> None:
    assert ids(store.list(status=TaskStatus.RUNNING)) == [
        one_task_per_status[TaskStatus.RUNNING].task_id
    ]
    assert ids(store.list(status="failed")) == [one_task_per_status[TaskStatus.FAILED].task_id]


def test_list_filters_by_several_statuses(
    store: TaskStore, one_task_per_status: dict[TaskStatus, TaskInfo]
) -> None:
    found = store.list(status=[TaskStatus.SUCCESS, "cancelled", TaskStatus.PENDING])
    assert {task.status for task in found} == {
        TaskStatus.SUCCESS,
        TaskStatus.CANCELLED,
        TaskStatus.PENDING,
    }
    assert len(found) == 3


@pytest.fixture
def labelled(store: TaskStore) -> dict[str, str]:
    """Task id by backend label."""
    labels = [
        "originq",
        "originq:WK_C180",
        "originq:WK_C180:v2",
        "originqx",
        "originqx:WK_C180",
        "ibm:brisbane",
        "a_b:dev",
        "axb:dev",
        "100%:dev",
        "100x:dev",
    ]
    made = {label: make_task(backend=label, submit_time=at(i)) for i, label in enumerate(labels)}
    store.save_many(list(made.values()))
    return {label: task.task_id for label, task in made.items()}


def found_labels(store: TaskStore, labelled: dict[str, str], backend: str) -> set[str]:
    by_id = {task_id: label for label, task_id in labelled.items()}
    return {by_id[task.task_id] for task in store.list(backend=backend)}


def test_backend_filter_matches_exact_label(store: TaskStore, labelled: dict[str, str]) -> None:
    assert found_labels(store, labelled, "ibm:brisbane") == {"ibm:brisbane"}


def test_backend_filter_matches_platform_family_but_not_longer_names(
    store: TaskStore, labelled: dict[str, str]
) -> None:
    assert found_labels(store, labelled, "originq") == {
        "originq",
        "originq:WK_C180",
        "originq:WK_C180:v2",
    }


def test_backend_filter_device_prefix_does_not_match_longer_device(
    store: TaskStore, labelled: dict[str, str]
) -> None:
    assert found_labels(store, labelled, "originq:WK") == set()
    assert found_labels(store, labelled, "originq:WK_C180") == {
        "originq:WK_C180",
        "originq:WK_C180:v2",
    }


def test_backend_filter_treats_like_metacharacters_literally(
    store: TaskStore, labelled: dict[str, str]
) -> None:
    assert found_labels(store, labelled, "a_b") == {"a_b:dev"}
    assert found_labels(store, labelled, "100%") == {"100%:dev"}
    assert found_labels(store, labelled, "%") == set()
    assert found_labels(store, labelled, "_") == set()
    escaped = make_task(backend="a\\_b:dev")
    store.save(escaped)
    assert ids(store.list(backend="a\\_b")) == [escaped.task_id]


def test_list_without_results_returns_result_none(store: TaskStore) -> None:
    task = make_task(result={"00": 1}, metadata={"kept": True}, status=TaskStatus.SUCCESS)
    store.save(task)
    (summary,) = store.list(include_results=False)
    assert summary.result is None
    summary.result = task.result
    assert summary == task


def test_count_applies_status_and_backend_filters(store: TaskStore) -> None:
    store.save_many(
        [
            make_task(backend="originq:A", status=TaskStatus.SUCCESS),
            make_task(backend="originq:B", status=TaskStatus.SUCCESS),
            make_task(backend="originq:B", status=TaskStatus.FAILED),
            make_task(backend="ibm:x", status=TaskStatus.SUCCESS),
            make_task(backend="ibm:x", status=TaskStatus.PENDING),
        ]
    )
    assert store.count() == 5
    assert store.count(status=TaskStatus.SUCCESS) == 3
    assert store.count(status=["failed", "pending"]) == 2
    assert store.count(backend="originq") == 3
    assert store.count(backend="originq:B", status="success") == 1
    assert store.count(backend="quafu") == 0


# -- delete and clear ------------------------------------------------------------------


def test_delete_returns_true_and_removes_task_and_shards(store: TaskStore) -> None:
    task, other = make_task(), make_task()
    store.save(task, shards_of(task, 3))
    store.save(other, shards_of(other, 2))
    assert store.delete(task.task_id) is True
    assert store.get(task.task_id) is None
    assert store.get_shards(task.task_id) == []
    assert store.find_uniqc_id_by_platform_id(f"{task.task_id}-job-0") is None
    assert len(store.get_shards(other.task_id)) == 2


def test_delete_missing_task_returns_false(store: TaskStore) -> None:
    store.save(make_task())
    assert store.delete(generate_uniqc_task_id()) is False
    assert store.count() == 1


def test_clear_completed_removes_terminal_tasks_and_their_shards(store: TaskStore) -> None:
    by_status = {status: make_task(status=status) for status in TaskStatus}
    for task in by_status.values():
        store.save(task, shards_of(task, 2, task.status))
    assert store.clear_completed() == 3
    kept = {TaskStatus.PENDING, TaskStatus.RUNNING}
    # A task with unfinished shards is running, whatever it was saved as.
    assert {task.status for task in store.list()} == {TaskStatus.RUNNING}
    for status, task in by_status.items():
        assert len(store.get_shards(task.task_id)) == (2 if status in kept else 0)


def test_clear_completed_with_custom_statuses_removes_only_those(store: TaskStore) -> None:
    by_status = {status: make_task(status=status) for status in TaskStatus}
    for task in by_status.values():
        store.save(task, shards_of(task, 1, task.status))
    assert store.clear_completed([TaskStatus.FAILED, "cancelled"]) == 2
    remaining = {TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS}
    assert {task.status for task in store.list()} == {TaskStatus.RUNNING, TaskStatus.SUCCESS}
    for status, task in by_status.items():
        assert len(store.get_shards(task.task_id)) == (1 if status in remaining else 0)


def test_clear_all_leaves_same_instance_working(store: TaskStore) -> None:
    old = make_task()
    store.save(old, shards_of(old, 2))
    archived = make_task(status=TaskStatus.SUCCESS)
    store.save(archived)
    store.archive(archived.task_id)
    store.clear_all()
    assert store.list() == []
    assert store.list_archived() == []
    assert store.get_shards(old.task_id) == []
    fresh = make_task()
    fresh_shards = shards_of(fresh, 1)
    store.save(fresh, fresh_shards)
    assert store.get(fresh.task_id) == fresh
    assert store.get_shards(fresh.task_id) == fresh_shards


def test_clear_all_leaves_another_store_on_same_location_working(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    with TaskStore(**store_location) as other:
        before = make_task()
        other.save(before)
        store.clear_all()
        assert other.get(before.task_id) is None
        after = make_task()
        other.save(after)
        assert other.get(after.task_id) == after
        assert store.get(after.task_id) == after
        assert store.count() == 1


def test_backend_filter_is_case_sensitive_like_exact_ids(store: TaskStore) -> None:
    store.save(make_task(backend="ORIGINQ:x"))
    store.save(make_task(backend="originq:ü-device"))
    assert store.count(backend="originq") == 1
    assert store.count(backend="ORIGINQ") == 1
    assert [t.backend for t in store.list(backend="originq")] == ["originq:ü-device"]
