"""Regressions found by the reliability suite, run by default on every backend.

Each bad input the reliability suite once tried in a loop on one SQLite file is a test
of its own here, on SQLite, PostgreSQL and MariaDB: it must raise the expected
``TaskStoreError`` subclass and leave every row of every table exactly as it was (read
back through a plain engine of its own, not through the store). Only the
multi-process, kill -9 and long race runs stay behind ``-m reliability``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from conftest import RawDatabase
from reliability_workers import count_regressions
from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    ShardNotFoundError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    UnserializableValueError,
    generate_uniqc_task_id,
)

# -- bad input: refused with a typed error, nothing written ---------------------------------


class _Seeded:
    """A store with content, so that 'unchanged' means something."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        running = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", metadata={"k": 1})
        store.save(
            running,
            [
                TaskShard(running.task_id, i, f"job-{i}", running.backend, sub_index_offset=i)
                for i in range(2)
            ],
        )
        store.update_shard(running.task_id, 0, status="running")
        self.running = running.task_id
        done = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS, result=[1])
        store.save(done)
        twin = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.FAILED)
        store.save(twin)
        store.archive(twin.task_id)
        store.save(TaskInfo(twin.task_id, "dummy"))  # a live task with an archived twin
        self.twin = twin.task_id

    def task(self, **fields: Any) -> TaskInfo:
        fields.setdefault("task_id", generate_uniqc_task_id())
        fields.setdefault("backend", "dummy")
        return TaskInfo(**fields)

    def shard(self, task_id: str | None = None, **fields: Any) -> TaskShard:
        fields.setdefault("shard_index", 7)
        fields.setdefault("platform_task_id", "job-new")
        fields.setdefault("backend", "dummy")
        return TaskShard(uniqc_task_id=task_id or self.running, **fields)

    def save_new_with_shards(self, *shard_fields: dict[str, Any]) -> None:
        """Save a new task together with shards 0, 1, ... built from ``shard_fields``."""
        task = self.task()
        shards = [
            TaskShard(task.task_id, index, f"job-{index}", "dummy", **fields)
            for index, fields in enumerate(shard_fields)
        ]
        self.store.save(task, shards)

    def with_status(self, status: str) -> TaskInfo:
        task = self.task()
        setattr(task, "status", status)  # noqa: B010 - bypasses the constructor's check
        return task


def _self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BadInput = tuple[str, type[TaskStoreError], Callable[[_Seeded], object]]

BAD_INPUTS: list[BadInput] = [
    ("unknown task status", InvalidInputError, lambda s: s.store.save(s.with_status("done"))),
    (
        "unknown status in update_shard",
        InvalidInputError,
        lambda s: s.store.update_shard(s.running, 0, status="finished"),
    ),
    ("negative shots", InvalidInputError, lambda s: s.store.save(s.task(shots=-1))),
    ("boolean shots", InvalidInputError, lambda s: s.store.save(s.task(shots=True))),
    ("shots beyond 32 bits", InvalidInputError, lambda s: s.store.save(s.task(shots=2**31))),
    ("empty task id", InvalidInputError, lambda s: s.store.save(s.task(task_id=""))),
    ("blank task id", InvalidInputError, lambda s: s.store.save(s.task(task_id="   "))),
    ("non-string task id", InvalidInputError, lambda s: s.store.save(s.task(task_id=12345))),
    ("task id of 256 chars", InvalidInputError, lambda s: s.store.save(s.task(task_id="x" * 256))),
    ("NUL in task id", InvalidInputError, lambda s: s.store.save(s.task(task_id="uqt_\x00"))),
    ("empty backend", InvalidInputError, lambda s: s.store.save(s.task(backend=""))),
    ("metadata not a dict", InvalidInputError, lambda s: s.store.save(s.task(metadata=[1, 2]))),
    (
        "submit_time not ISO-8601",
        InvalidInputError,
        lambda s: s.store.save(s.task(submit_time="yesterday")),
    ),
    (
        "error_message not text",
        InvalidInputError,
        lambda s: s.store.save(s.task(error_message=404)),
    ),
    ("not a TaskInfo", InvalidInputError, lambda s: s.store.save({"task_id": "x"})),  # type: ignore[arg-type]
    (
        "negative shard index",
        InvalidInputError,
        lambda s: s.store.save_shard(s.shard(shard_index=-1)),
    ),
    (
        "zero circuit_count",
        InvalidInputError,
        lambda s: s.store.save_shard(s.shard(circuit_count=0)),
    ),
    (
        "shard for a missing parent",
        TaskNotFoundError,
        lambda s: s.store.save_shard(s.shard(generate_uniqc_task_id(), shard_index=0)),
    ),
    (
        "shard of a task not in the save_many batch",
        InvalidInputError,
        lambda s: s.store.save_many([s.task()], [s.shard(generate_uniqc_task_id(), shard_index=0)]),
    ),
    (
        "overlapping layout in one save",
        ShardLayoutError,
        lambda s: s.save_new_with_shards({"circuit_count": 2}, {"sub_index_offset": 1}),
    ),
    (
        "shard overlapping a stored shard",
        ShardLayoutError,
        lambda s: s.store.save_shard(s.shard(shard_index=5, sub_index_offset=1)),
    ),
    (
        "object() as result",
        UnserializableValueError,
        lambda s: s.store.save(s.task(result=object())),
    ),
    (
        "set in metadata",
        UnserializableValueError,
        lambda s: s.store.save(s.task(metadata={"qubits": {1, 2}})),
    ),
    ("bytes in result", UnserializableValueError, lambda s: s.store.save(s.task(result=b"\x00"))),
    (
        "unserializable shard result in save(task, shards)",
        UnserializableValueError,
        lambda s: s.save_new_with_shards({"result": object()}),
    ),
    (
        "unserializable result in update_shard",
        UnserializableValueError,
        lambda s: s.store.update_shard(s.running, 0, status="success", result=object()),
    ),
    (
        "invalid second task of save_many",
        InvalidInputError,
        lambda s: s.store.save_many([s.task(), s.task(shots=-5)]),
    ),
    (
        "update of a missing shard",
        ShardNotFoundError,
        lambda s: s.store.update_shard(s.running, 9, status="running"),
    ),
    ("restore over a live task", TaskStateError, lambda s: s.store.restore(s.twin)),
    ("unknown status filter", InvalidInputError, lambda s: s.store.list(status="bogus")),
    ("negative offset", InvalidInputError, lambda s: s.store.list(offset=-1)),
    ("fractional limit", InvalidInputError, lambda s: s.store.list(limit=2.5)),  # type: ignore[arg-type]
    (
        "unknown status to clear_completed",
        InvalidInputError,
        lambda s: s.store.clear_completed(["nope"]),
    ),
    (
        "lone surrogate in backend",
        InvalidInputError,
        lambda s: s.store.save(s.task(backend="originq:\ud800")),
    ),
    (
        "lone surrogate in error_message",
        InvalidInputError,
        lambda s: s.store.update_shard(s.running, 1, status="failed", error_message="\ud800"),
    ),
    (
        "self-containing list as result",
        InvalidInputError,
        lambda s: s.store.save(s.task(result=_self_containing())),
    ),
    (
        "result nested 5,000 deep",
        InvalidInputError,
        lambda s: s.store.save(s.task(result=_nested(5_000))),
    ),
    ("non-string backend filter", InvalidInputError, lambda s: s.store.list(backend=5)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("expected", "attempt"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_raises_a_store_error_and_changes_nothing(
    store: TaskStore,
    raw_database: RawDatabase,
    expected: type[TaskStoreError],
    attempt: Callable[[_Seeded], object],
) -> None:
    seeded = _Seeded(store)
    before = _without_commit_tick(raw_database.snapshot())
    with pytest.raises(expected):
        attempt(seeded)
    assert _without_commit_tick(raw_database.snapshot()) == before


def _without_commit_tick(dump: dict[str, Any]) -> dict[str, Any]:
    """The dump less MariaDB's commit tick: a sequence, which an ``update_shard`` of a
    missing shard of a live task advances in its one batch (as a rolled-back insert
    consumes an AUTO_INCREMENT value) while writing no change row and no data."""
    marks = [row for row in dump.get("change_marks", []) if not row.startswith("('tick',")]
    return dump | ({"change_marks": marks} if "change_marks" in dump else {})


def test_bad_input_names_are_unique() -> None:
    names = [case[0] for case in BAD_INPUTS]
    assert len(names) == len(set(names))


# -- odd but valid values: accepted and read back exactly -----------------------------------

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("NaN in metadata", {"metadata": {"fidelity": math.nan}}),
    ("infinity and complex in result", {"result": {"e": math.inf, "amp": 0.5 - 0.5j}}),
    ("integer keys in result", {"result": {0: 512, 1: 488}}),
    ("NUL inside metadata text", {"metadata": {"note": "a\x00b"}}),
    ("lone surrogate inside metadata text", {"metadata": {"note": "\udcff"}}),
]


@pytest.mark.parametrize(
    "fields", [case[1] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
def test_odd_but_valid_values_are_accepted_and_round_trip(
    store: TaskStore, fields: dict[str, Any]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", **fields)
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert repr(stored.metadata) == repr(task.metadata)
    assert repr(stored.result) == repr(task.result)


# -- a late poll of a cancelled task --------------------------------------------------------


def test_late_shard_poll_does_not_reopen_a_cancelled_task(store: TaskStore) -> None:
    # The user cancels a task while its shard still runs; a poller that read the
    # platform a moment earlier then reports the shard as running.
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
    store.save(task, [TaskShard(task.task_id, 0, "job-0", task.backend)])
    store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
    task.status, task.error_message = TaskStatus.CANCELLED, "cancelled by the user"
    store.save(task)
    store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.status == TaskStatus.CANCELLED


# -- the counter the race figures rest on ---------------------------------------------------


def test_regression_count_flags_a_running_status_seen_after_a_final_one() -> None:
    # A non-final status whose read began after a read of a final status had ended is a
    # regression; overlapping reads are not.
    observations = [
        ("shard", 0.0, 1.0, 1),
        ("shard", 2.0, 3.0, 2),
        ("shard", 2.5, 3.5, 1),  # overlaps the final read: may have happened first
        ("shard", 4.0, 5.0, 1),  # began after the final read ended: a regression
        ("other", 4.0, 5.0, 1),
    ]
    assert count_regressions(observations)[0] == 1
