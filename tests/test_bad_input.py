"""Every bad input is refused with a TaskStoreError naming the field and holding the
value, and leaves the database exactly as it was.

``BAD_INPUTS`` is the list; each entry runs as a subtest against one seeded store per
backend (``pytest -v`` shows ``SUBPASSED[<name>]`` for each), which keeps the suite fast:
a fresh server database per entry would cost a second or two each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    UnserializableValueError,
)


@dataclass(frozen=True)
class Known:
    """What the seeded store holds."""

    live: TaskInfo  # pending, shards 0 and 1 (one circuit each, offsets 0 and 1)
    done: TaskInfo  # success, one shard
    archived: TaskInfo  # failed, archived with two shards

    @property
    def ids(self) -> list[str]:
        return [self.live.task_id, self.done.task_id, self.archived.task_id, *EXTRA_IDS]


NEW_ID = "uqt_" + "e" * 32
MISSING_PARENT = "uqt_" + "f" * 32
BATCH_IDS = [f"batch-{i}" for i in range(3)]
EXTRA_IDS = [NEW_ID, MISSING_PARENT, *BATCH_IDS]

UNSERIALIZABLE = object()
A_SET = {1, 2}
LONG_ID = "x" * 256


def new_task(**bad: Any) -> TaskInfo:
    """A valid new task, then ``bad`` set on the object after construction."""
    task = TaskInfo(NEW_ID, "originq:WK_C180", result={"00": 1})
    loose: Any = task
    for name, value in bad.items():
        setattr(loose, name, value)
    return task


def new_shard(parent: str, index: int, **bad: Any) -> TaskShard:
    """A valid one-circuit shard of ``parent``, then ``bad`` set after construction."""
    shard = TaskShard(parent, index, f"{parent}-bad-{index}", "originq:WK_C180", sub_index_offset=5)
    loose: Any = shard
    for name, value in bad.items():
        setattr(loose, name, value)
    return shard


def construct_task(**fields: Any) -> TaskInfo:
    return TaskInfo(NEW_ID, "originq:WK_C180", **fields)


def save_many_with_bad_last(**bad: Any) -> Callable[[TaskStore, Known], object]:
    def attempt(store: TaskStore, known: Known) -> object:
        batch = [TaskInfo(task_id, "dummy", shots=i) for i, task_id in enumerate(BATCH_IDS)]
        loose: Any = batch[-1]
        for name, value in bad.items():
            setattr(loose, name, value)
        store.save_many(batch)
        return None

    return attempt


@dataclass(frozen=True)
class BadInput:
    name: str
    attempt: Callable[[TaskStore, Known], object]
    error: type[TaskStoreError]
    field: str | None
    """The field the error names (a JSON value may name a path below it, ``result['a']``);
    None for lookup errors, which carry no field."""
    value: object = None


BAD_INPUTS: list[BadInput] = [
    # -- tasks
    BadInput(
        "status-unknown-in-constructor",
        lambda s, k: s.save(construct_task(status="bogus")),
        InvalidInputError,
        "status",
        "bogus",
    ),
    BadInput(
        "status-unknown-set-after-construction",
        lambda s, k: s.save(new_task(status="bogus")),
        InvalidInputError,
        "status",
        "bogus",
    ),
    BadInput(
        "status-uppercase",
        lambda s, k: s.save(new_task(status="SUCCESS")),
        InvalidInputError,
        "status",
        "SUCCESS",
    ),
    BadInput(
        "shots-negative", lambda s, k: s.save(new_task(shots=-1)), InvalidInputError, "shots", -1
    ),
    BadInput(
        "shots-bool", lambda s, k: s.save(new_task(shots=True)), InvalidInputError, "shots", True
    ),
    BadInput(
        "shots-float", lambda s, k: s.save(new_task(shots=1.5)), InvalidInputError, "shots", 1.5
    ),
    BadInput(
        "shots-numeric-string",
        lambda s, k: s.save(new_task(shots="100")),
        InvalidInputError,
        "shots",
        "100",
    ),
    BadInput(
        "task-id-empty", lambda s, k: s.save(new_task(task_id="")), InvalidInputError, "task_id", ""
    ),
    BadInput(
        "task-id-whitespace",
        lambda s, k: s.save(new_task(task_id=" \t ")),
        InvalidInputError,
        "task_id",
        " \t ",
    ),
    BadInput(
        "task-id-int", lambda s, k: s.save(new_task(task_id=42)), InvalidInputError, "task_id", 42
    ),
    BadInput(
        "task-id-none",
        lambda s, k: s.save(new_task(task_id=None)),
        InvalidInputError,
        "task_id",
        None,
    ),
    BadInput(
        "task-id-256-chars",
        lambda s, k: s.save(new_task(task_id=LONG_ID)),
        InvalidInputError,
        "task_id",
        LONG_ID,
    ),
    BadInput(
        "task-id-with-nul",
        lambda s, k: s.save(new_task(task_id="a\x00b")),
        InvalidInputError,
        "task_id",
        "a\x00b",
    ),
    BadInput(
        "backend-empty",
        lambda s, k: s.save(new_task(backend="")),
        InvalidInputError,
        "backend",
        "",
    ),
    BadInput(
        "backend-none",
        lambda s, k: s.save(new_task(backend=None)),
        InvalidInputError,
        "backend",
        None,
    ),
    BadInput(
        "metadata-list",
        lambda s, k: s.save(new_task(metadata=["a", "b"])),
        InvalidInputError,
        "metadata",
        ["a", "b"],
    ),
    BadInput(
        "metadata-none",
        lambda s, k: s.save(new_task(metadata=None)),
        InvalidInputError,
        "metadata",
        None,
    ),
    BadInput(
        "error-message-int",
        lambda s, k: s.save(new_task(error_message=3)),
        InvalidInputError,
        "error_message",
        3,
    ),
    BadInput(
        "error-message-with-nul",
        lambda s, k: s.save(new_task(error_message="lost\x00")),
        InvalidInputError,
        "error_message",
        "lost\x00",
    ),
    BadInput(
        "shots-above-32-bit",
        lambda s, k: s.save(new_task(shots=2**31)),
        InvalidInputError,
        "shots",
        2**31,
    ),
    BadInput(
        "submit-time-not-iso",
        lambda s, k: s.save(new_task(submit_time="yesterday")),
        InvalidInputError,
        "submit_time",
        "yesterday",
    ),
    BadInput(
        "submit-time-not-a-string",
        lambda s, k: s.save(new_task(submit_time=1700000000)),
        InvalidInputError,
        "submit_time",
        1700000000,
    ),
    BadInput(
        "update-time-not-iso",
        lambda s, k: s.save(new_task(update_time="2026-13-45")),
        InvalidInputError,
        "update_time",
        "2026-13-45",
    ),
    BadInput(
        "result-object-in-save",
        lambda s, k: s.save(new_task(result=UNSERIALIZABLE)),
        UnserializableValueError,
        "result",
        UNSERIALIZABLE,
    ),
    BadInput(
        "result-set-in-save",
        lambda s, k: s.save(new_task(result=A_SET)),
        UnserializableValueError,
        "result",
        A_SET,
    ),
    BadInput(
        "result-set-in-resave-of-existing-task",
        lambda s, k: s.save(dataclasses.replace(k.live, result=A_SET, shots=1)),
        UnserializableValueError,
        "result",
        A_SET,
    ),
    BadInput(
        "metadata-value-set-in-save",
        lambda s, k: s.save(new_task(metadata={"k": A_SET})),
        UnserializableValueError,
        "metadata",
        A_SET,
    ),
    BadInput(
        "save-many-last-task-shots-negative",
        save_many_with_bad_last(shots=-5),
        InvalidInputError,
        "shots",
        -5,
    ),
    BadInput(
        "save-many-last-task-result-unserializable",
        save_many_with_bad_last(result=UNSERIALIZABLE),
        UnserializableValueError,
        "result",
        UNSERIALIZABLE,
    ),
    # -- shards
    BadInput(
        "shard-index-negative",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, shard_index=-1)),
        InvalidInputError,
        "shard_index",
        -1,
    ),
    BadInput(
        "shard-offset-negative",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, sub_index_offset=-1)),
        InvalidInputError,
        "sub_index_offset",
        -1,
    ),
    BadInput(
        "shard-circuit-count-zero",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, circuit_count=0)),
        InvalidInputError,
        "circuit_count",
        0,
    ),
    BadInput(
        "shard-status-unknown",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, status="done")),
        InvalidInputError,
        "status",
        "done",
    ),
    BadInput(
        "shard-platform-id-empty",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, platform_task_id="")),
        InvalidInputError,
        "platform_task_id",
        "",
    ),
    BadInput(
        "shard-for-missing-parent",
        lambda s, k: s.save_shard(new_shard(MISSING_PARENT, 0)),
        TaskNotFoundError,
        None,
    ),
    BadInput(
        "shard-overlapping-layout",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, sub_index_offset=1)),
        ShardLayoutError,
        "sub_index_offset",
        1,
    ),
    BadInput(
        "shard-of-other-task-in-save",
        lambda s, k: s.save(new_task(), [new_shard(k.done.task_id, 1)]),
        InvalidInputError,
        "uniqc_task_id",
        None,  # checked below: the other task's id
    ),
    BadInput(
        "shard-result-set-in-save-shard",
        lambda s, k: s.save_shard(new_shard(k.live.task_id, 2, result=A_SET)),
        UnserializableValueError,
        "result",
        A_SET,
    ),
    BadInput(
        "shard-result-object-in-save-with-task",
        lambda s, k: s.save(new_task(), [new_shard(NEW_ID, 0, result=UNSERIALIZABLE)]),
        UnserializableValueError,
        "result",
        UNSERIALIZABLE,
    ),
    BadInput(
        "update-shard-result-object",
        lambda s, k: s.update_shard(
            k.live.task_id, 0, status=TaskStatus.SUCCESS, result=UNSERIALIZABLE
        ),
        UnserializableValueError,
        "result",
        UNSERIALIZABLE,
    ),
    BadInput(
        "update-shard-status-unknown",
        lambda s, k: s.update_shard(k.live.task_id, 0, status="finished"),
        InvalidInputError,
        "status",
        "finished",
    ),
    BadInput(
        "update-shard-error-message-int",
        lambda s, k: s.update_shard(k.live.task_id, 0, status="failed", error_message=404),  # type: ignore[arg-type]
        InvalidInputError,
        "error_message",
        404,
    ),
    # -- reads and clean-up
    BadInput(
        "list-limit-fractional",
        lambda s, k: s.list(limit=2.5),  # type: ignore[arg-type]
        InvalidInputError,
        "limit",
        2.5,
    ),
    BadInput(
        "list-offset-negative", lambda s, k: s.list(offset=-1), InvalidInputError, "offset", -1
    ),
    BadInput(
        "list-status-bogus",
        lambda s, k: s.list(status="bogus"),
        InvalidInputError,
        "status",
        "bogus",
    ),
    BadInput(
        "count-status-bogus-among-several",
        lambda s, k: s.count(status=["success", "bogus"]),
        InvalidInputError,
        "status",
        "bogus",
    ),
    BadInput(
        "clear-completed-unknown-status",
        lambda s, k: s.clear_completed(["success", "bogus"]),
        InvalidInputError,
        "terminal_statuses",
        "bogus",
    ),
]


@pytest.fixture
def known(store: TaskStore) -> Known:
    def shards(task: TaskInfo, count: int) -> list[TaskShard]:
        return [
            TaskShard(task.task_id, i, f"{task.task_id}-{i}", task.backend, sub_index_offset=i)
            for i in range(count)
        ]

    live = TaskInfo("uqt_" + "1" * 32, "originq:WK_C180", shots=100, metadata={"n": 1})
    done = TaskInfo("uqt_" + "2" * 32, "ibm:brisbane", status=TaskStatus.SUCCESS, result={"00": 1})
    archived = TaskInfo(
        "uqt_" + "3" * 32, "quafu:ScQ", status=TaskStatus.FAILED, error_message="boom"
    )
    store.save_many([live, done, archived])
    store.save_shards([*shards(live, 2), *shards(done, 1), *shards(archived, 2)])
    store.archive(archived.task_id)
    return Known(live, done, archived)


def snapshot(store: TaskStore, known: Known) -> dict[str, Any]:
    """Everything the store holds that a bad call could have touched."""
    return {
        "live": store.list(),
        "archived": store.list_archived(),
        "shards": {task_id: store.get_shards(task_id) for task_id in known.ids},
        "archived_shards": {task_id: store.get_archived_shards(task_id) for task_id in known.ids},
        "counts": (store.count(), store.count_archived()),
    }


def test_bad_input_names_are_unique() -> None:
    names = [case.name for case in BAD_INPUTS]
    assert len(names) == len(set(names))


def test_every_bad_input_is_refused_and_leaves_database_unchanged(
    store: TaskStore, known: Known, subtests: pytest.Subtests
) -> None:
    for case in BAD_INPUTS:
        with subtests.test(case.name):
            before = snapshot(store, known)
            with pytest.raises(TaskStoreError) as raised:
                case.attempt(store, known)
            assert snapshot(store, known) == before, "the database changed"
            error = raised.value
            assert isinstance(error, case.error), repr(error)
            if case.field is None:
                assert MISSING_PARENT in str(error)
                continue
            assert isinstance(error, InvalidInputError)
            if case.name == "shard-of-other-task-in-save":
                assert (error.field, error.value) == ("uniqc_task_id", known.done.task_id)
                continue
            assert error.value == case.value, repr(error)
            assert error.field == case.field or error.field.startswith(case.field + "["), (
                f"error names field {error.field!r}, expected {case.field!r}"
            )
