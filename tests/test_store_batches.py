"""Calls over more ids than one ``IN (...)`` list holds (500): every id is still seen."""

from __future__ import annotations

import pytest

from uniqc_taskstore import (
    ShardLayoutError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
)

MANY = 1_201
"""Three id lists: two full ones and a last one holding a single id."""


def _ids(n: int = MANY) -> list[str]:
    return [f"task-{k:05d}" for k in range(n)]


def _fill(store: TaskStore, status: TaskStatus = TaskStatus.PENDING) -> list[str]:
    ids = _ids()
    store.save_many([TaskInfo(task_id, "dummy", status=status) for task_id in ids])
    # The shards carry the task's status: a task takes its shards' aggregate status.
    store.save_shards(
        [TaskShard(task_id, 0, f"job-{task_id}", "dummy", status=status) for task_id in ids]
    )
    return ids


def test_shards_of_more_tasks_than_one_id_list_are_all_saved(store: TaskStore) -> None:
    ids = _fill(store)
    assert store.count() == MANY
    assert [s.platform_task_id for s in store.get_shards(ids[-1])] == [f"job-{ids[-1]}"]
    assert store.find_uniqc_id_by_platform_id(f"job-{ids[600]}") == ids[600]


def test_missing_parent_in_the_last_id_list_is_found_and_nothing_is_saved(
    store: TaskStore,
) -> None:
    ids = _ids(MANY - 1)
    store.save_many([TaskInfo(task_id, "dummy") for task_id in ids])
    missing = f"task-{MANY - 1:05d}"  # sorts last: alone in the third id list
    shards = [TaskShard(t, 0, f"job-{t}", "dummy") for t in [*ids, missing]]
    with pytest.raises(TaskNotFoundError, match=missing):
        store.save_shards(shards)
    assert store.get_shards(ids[0]) == []


def test_layout_clash_with_a_stored_shard_in_the_last_id_list_is_found(
    store: TaskStore,
) -> None:
    ids = _fill(store)
    # Shard 1 of the last task claims circuit 0, which its stored shard 0 holds.
    shards = [TaskShard(t, 1, f"again-{t}", "dummy", sub_index_offset=1) for t in ids[:-1]]
    shards.append(TaskShard(ids[-1], 1, "clash", "dummy", sub_index_offset=0))
    with pytest.raises(ShardLayoutError, match=ids[-1]):
        store.save_shards(shards)
    assert len(store.get_shards(ids[0])) == 1


def test_clear_completed_deletes_more_tasks_than_one_id_list(store: TaskStore) -> None:
    ids = _fill(store, TaskStatus.SUCCESS)
    store.save(TaskInfo("still-running", "dummy", status=TaskStatus.RUNNING))
    assert store.clear_completed() == MANY
    assert [t.task_id for t in store.list()] == ["still-running"]
    assert store.get_shards(ids[-1]) == []
    assert store.find_uniqc_id_by_platform_id(f"job-{ids[-1]}") is None
