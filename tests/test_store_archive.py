"""The archive: tasks (finished or not) and their shards move out of the live tables and
back."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import Counter
from typing import Any

import pytest

from uniqc_taskstore import (
    ShardNotFoundError,
    TaskInfo,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)

CANONICAL_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def at(second: int) -> str:
    """A canonical time ``second`` seconds into 2026."""
    return f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000000+00:00"


def saved(
    store: TaskStore,
    status: TaskStatus = TaskStatus.SUCCESS,
    shard_count: int = 2,
    **fields: Any,
) -> tuple[TaskInfo, list[TaskShard]]:
    """A task saved with ``shard_count`` shards, as the objects that were saved."""
    fields.setdefault("backend", "originq:WK_C180")
    fields.setdefault("task_id", generate_uniqc_task_id())
    task = TaskInfo(status=status, result={"00": 3, "11": 5}, metadata={"m": 1}, **fields)
    shards = [
        TaskShard(
            task.task_id,
            i,
            f"{task.task_id}-job-{i}",
            task.backend,
            status=status,
            result={"00": i},
            error_message="x" if status == TaskStatus.FAILED else None,
            sub_index_offset=i,
        )
        for i in range(shard_count)
    ]
    store.save(task, shards)
    return task, shards


def archived_copy(task: TaskInfo, archived_at: str | None) -> TaskInfo:
    return dataclasses.replace(task, archived_at=archived_at)


def test_archive_moves_an_unfinished_task_with_its_live_shards(store: TaskStore) -> None:
    for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        task, shards = saved(store, status)
        assert task.status == TaskStatus.RUNNING  # the aggregate of its unfinished shards
        assert store.archive(task.task_id) is True
        archived = store.get_archived(task.task_id)
        assert archived == archived_copy(task, archived.archived_at if archived else None)
        assert store.get_archived_shards(task.task_id) == shards
        assert store.get(task.task_id) is None
        assert store.get_shards(task.task_id) == []
    pending_without_shards, _ = saved(store, TaskStatus.PENDING, shard_count=0)
    assert store.archive(pending_without_shards.task_id) is True
    assert store.count_archived(status="pending") == 1
    assert store.count() == 0


def test_poll_of_an_archived_task_raises_shard_not_found_until_it_is_restored(
    store: TaskStore,
) -> None:
    task, _ = saved(store, TaskStatus.RUNNING)
    store.archive(task.task_id)
    with pytest.raises(ShardNotFoundError):
        store.update_shard(task.task_id, 0, status="success")
    assert store.get_archived_shards(task.task_id)[0].status == TaskStatus.RUNNING
    assert store.restore(task.task_id) is True
    outcome = store.update_shard(task.task_id, 0, status="success")
    assert (outcome.applied, outcome.task_status) == (True, TaskStatus.RUNNING)


def test_archive_of_missing_task_returns_false(store: TaskStore) -> None:
    saved(store)
    assert store.archive(generate_uniqc_task_id()) is False
    assert store.count_archived() == 0
    assert store.count() == 1


def test_archive_moves_finished_task_and_its_shards(store: TaskStore) -> None:
    for status in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED):
        task, shards = saved(store, status, shard_count=3)
        assert store.archive(task.task_id) is True
        archived = store.get_archived(task.task_id)
        assert archived is not None
        assert archived == archived_copy(task, archived.archived_at)
        assert store.get_archived_shards(task.task_id) == shards


def test_archived_task_is_gone_from_live_reads(store: TaskStore) -> None:
    task, shards = saved(store)
    kept, _ = saved(store)
    store.archive(task.task_id)
    assert store.get(task.task_id) is None
    assert store.get_shards(task.task_id) == []
    assert [t.task_id for t in store.list()] == [kept.task_id]
    assert store.count() == 1
    assert store.get_shard_by_platform_id(shards[0].platform_task_id) is None
    assert store.find_uniqc_id_by_platform_id(shards[1].platform_task_id) is None
    assert store.delete(task.task_id) is False


def test_archive_stamps_archived_at_in_canonical_utc_not_before_update_time(
    store: TaskStore,
) -> None:
    task, _ = saved(store)
    store.archive(task.task_id)
    archived = store.get_archived(task.task_id)
    assert archived is not None
    assert archived.archived_at is not None
    assert CANONICAL_UTC.fullmatch(archived.archived_at)
    assert archived.archived_at >= archived.update_time
    assert archived.update_time == task.update_time


@pytest.fixture
def archive_of_five(store: TaskStore) -> dict[str, TaskInfo]:
    """Five archived tasks by name, plus one live task that must never show."""
    specs = {
        "old-ok": ("originq:WK_C180", TaskStatus.SUCCESS, 1),
        "mid-failed": ("originq:A", TaskStatus.FAILED, 3),
        "new-ok": ("ibm:brisbane", TaskStatus.SUCCESS, 5),
        "cancelled": ("originqx:B", TaskStatus.CANCELLED, 2),
        "newest-failed": ("originq", TaskStatus.FAILED, 9),
    }
    made: dict[str, TaskInfo] = {}
    for name, (backend, status, second) in specs.items():
        task, _ = saved(store, status, shard_count=1, backend=backend, submit_time=at(second))
        store.archive(task.task_id)
        made[name] = task
    saved(store, TaskStatus.SUCCESS, backend="originq:live", submit_time=at(20))
    return made


def names(found: list[TaskInfo], made: dict[str, TaskInfo]) -> list[str]:
    by_id = {task.task_id: name for name, task in made.items()}
    return [by_id[task.task_id] for task in found]


def test_list_archived_is_newest_first(
    store: TaskStore, archive_of_five: dict[str, TaskInfo]
) -> None:
    assert names(store.list_archived(), archive_of_five) == [
        "newest-failed",
        "new-ok",
        "mid-failed",
        "cancelled",
        "old-ok",
    ]
    assert all(task.archived_at is not None for task in store.list_archived())


def test_list_archived_filters_by_status_and_backend_family(
    store: TaskStore, archive_of_five: dict[str, TaskInfo]
) -> None:
    assert names(store.list_archived(status="failed"), archive_of_five) == [
        "newest-failed",
        "mid-failed",
    ]
    assert names(store.list_archived(status=["success", "cancelled"]), archive_of_five) == [
        "new-ok",
        "cancelled",
        "old-ok",
    ]
    assert names(store.list_archived(backend="originq"), archive_of_five) == [
        "newest-failed",
        "mid-failed",
        "old-ok",
    ]
    assert names(store.list_archived(backend="originq", status="success"), archive_of_five) == [
        "old-ok"
    ]


def test_list_archived_pages_and_skips_results(
    store: TaskStore, archive_of_five: dict[str, TaskInfo]
) -> None:
    everything = store.list_archived()
    pages = [store.list_archived(limit=2, offset=start) for start in (0, 2, 4)]
    assert [task for page in pages for task in page] == everything
    summaries = store.list_archived(include_results=False)
    assert [task.result for task in summaries] == [None] * 5
    assert [dataclasses.replace(t, result=None) for t in everything] == summaries


def test_count_archived_applies_filters(
    store: TaskStore, archive_of_five: dict[str, TaskInfo]
) -> None:
    assert store.count_archived() == 5
    assert store.count_archived(status="success") == 2
    assert store.count_archived(status=["failed", "cancelled"]) == 3
    assert store.count_archived(backend="originq") == 3
    assert store.count_archived(backend="originq:A", status="failed") == 1
    assert store.count_archived(backend="quafu") == 0
    assert store.count() == 1


def test_restore_brings_back_task_and_shards_equal_to_before(store: TaskStore) -> None:
    task, shards = saved(store, TaskStatus.FAILED, shard_count=3)
    store.archive(task.task_id)
    assert store.restore(task.task_id) is True
    restored = store.get(task.task_id)
    assert restored == task
    assert restored is not None
    assert restored.archived_at is None
    assert store.get_shards(task.task_id) == shards
    assert store.find_uniqc_id_by_platform_id(shards[2].platform_task_id) == task.task_id
    assert store.get_archived(task.task_id) is None
    assert store.get_archived_shards(task.task_id) == []


def test_restore_of_task_not_in_archive_returns_false(store: TaskStore) -> None:
    live, shards = saved(store)
    assert store.restore(generate_uniqc_task_id()) is False
    assert store.restore(live.task_id) is False
    assert store.get(live.task_id) == live
    assert store.get_shards(live.task_id) == shards


def test_restore_over_a_live_task_of_the_same_id_raises_and_changes_nothing(
    store: TaskStore,
) -> None:
    task, _ = saved(store, shard_count=2)
    store.archive(task.task_id)
    archived = store.get_archived(task.task_id)
    archived_shards = store.get_archived_shards(task.task_id)
    live, live_shards = saved(store, TaskStatus.RUNNING, shard_count=1, task_id=task.task_id)
    with pytest.raises(TaskStateError):
        store.restore(task.task_id)
    assert store.get(task.task_id) == live
    assert store.get_shards(task.task_id) == live_shards
    assert store.get_archived(task.task_id) == archived
    assert store.get_archived_shards(task.task_id) == archived_shards


def test_archive_again_after_restore_works(store: TaskStore) -> None:
    task, shards = saved(store)
    store.archive(task.task_id)
    store.restore(task.task_id)
    assert store.archive(task.task_id) is True
    assert store.get(task.task_id) is None
    archived = store.get_archived(task.task_id)
    assert archived is not None
    assert archived == archived_copy(task, archived.archived_at)
    assert store.get_archived_shards(task.task_id) == shards
    assert store.count_archived() == 1


def test_archiving_when_an_older_archived_copy_exists_is_refused_and_keeps_both(
    store: TaskStore,
) -> None:
    first, first_shards = saved(store, TaskStatus.SUCCESS, shard_count=3)
    store.archive(first.task_id)
    older = store.get_archived(first.task_id)
    second, second_shards = saved(store, TaskStatus.FAILED, shard_count=1, task_id=first.task_id)
    with pytest.raises(TaskStateError, match="already archived"):
        store.archive(first.task_id)
    assert store.get_archived(first.task_id) == older
    assert store.get_archived_shards(first.task_id) == first_shards
    assert store.get(first.task_id) == second
    assert store.get_shards(first.task_id) == second_shards
    assert store.count_archived() == 1


def test_delete_archived_returns_true_and_removes_archived_shards(store: TaskStore) -> None:
    task, _ = saved(store, shard_count=2)
    other, other_shards = saved(store)
    store.archive(task.task_id)
    store.archive(other.task_id)
    assert store.delete_archived(task.task_id) is True
    assert store.get_archived(task.task_id) is None
    assert store.get_archived_shards(task.task_id) == []
    assert store.get_archived_shards(other.task_id) == other_shards
    assert store.count_archived() == 1


def test_delete_archived_of_missing_task_returns_false_and_spares_live_tasks(
    store: TaskStore,
) -> None:
    live, shards = saved(store)
    assert store.delete_archived(live.task_id) is False
    assert store.delete_archived(generate_uniqc_task_id()) is False
    assert store.get(live.task_id) == live
    assert store.get_shards(live.task_id) == shards


def test_restore_racing_save_of_the_same_id_loses_with_task_state_error(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    # Each round: restores and saves of one archived task's id start together. Every
    # call either succeeds or (a restore that finds the live task) gets TaskStateError.
    rounds, threads = 15, 4
    unexpected: list[BaseException] = []
    outcomes: Counter[str] = Counter()
    for _ in range(rounds):
        task, _ = saved(store, TaskStatus.SUCCESS, shard_count=2)
        store.archive(task.task_id)
        barrier = threading.Barrier(threads)

        def race(kind: str, task_id: str = task.task_id, start: Any = barrier) -> None:
            with TaskStore(**store_location) as own:
                start.wait()
                try:
                    if kind == "restore":
                        outcomes["restored" if own.restore(task_id) else "already restored"] += 1
                    else:
                        own.save(TaskInfo(task_id, "dummy", status=TaskStatus.RUNNING))
                        outcomes["saved"] += 1
                except TaskStateError:
                    outcomes["restore lost"] += 1
                except BaseException as exc:  # every other error is a failure
                    unexpected.append(exc)

        workers = [
            threading.Thread(target=race, args=("restore" if n % 2 else "save",))
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        live = store.get(task.task_id)
        assert live is not None
        archived = store.get_archived(task.task_id)
        assert (archived is None) == (store.get_archived_shards(task.task_id) == [])
    assert unexpected == []
    assert sum(outcomes.values()) == rounds * threads
    print(f"restore vs save races: {dict(outcomes)}")
