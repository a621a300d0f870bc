"""Bulk archive, restore and delete by id, and atomic edits of one task."""

from __future__ import annotations

import threading

import pytest

from uniqc_taskstore import (
    BulkResult,
    InvalidInputError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
)


def _save(store: TaskStore, n: int, **fields: object) -> list[str]:
    ids = [f"t{k:04d}" for k in range(n)]
    store.save_many(
        [TaskInfo(i, "dummy", tags={"n": str(k)}, **fields) for k, i in enumerate(ids)],  # type: ignore[arg-type]
        [TaskShard(i, 0, f"job-{i}", "dummy") for i in ids],
    )
    return ids


def test_archive_many_moves_more_than_a_batch_of_any_status(store: TaskStore) -> None:
    ids = _save(store, 520, status=TaskStatus.RUNNING)
    result = store.archive_many(ids)
    assert result == BulkResult(done=ids, missing=[], refused=[])
    assert store.count() == 0
    assert store.count_archived() == 520
    assert len(store.get_archived_shards("t0519")) == 1
    archived = store.get_archived("t0519")
    assert archived is not None
    assert archived.tags == {"n": "519"}


def test_archive_many_reports_missing_and_already_archived_in_order(store: TaskStore) -> None:
    _save(store, 3, status=TaskStatus.SUCCESS)
    assert store.archive("t0001")
    result = store.archive_many(["t0002", "nope", "t0001", "t0000", "t0002"])
    assert result.done == ["t0002", "t0000"]
    assert result.missing == ["nope"]
    assert result.refused == [("t0001", "already archived")]


def test_restore_many_refuses_an_id_that_is_also_live(store: TaskStore) -> None:
    ids = _save(store, 3, status=TaskStatus.SUCCESS)
    store.archive_many(ids)
    store.save(TaskInfo("t0001", "dummy"))
    result = store.restore_many([*ids, "nope"])
    assert result.done == ["t0000", "t0002"]
    assert result.missing == ["nope"]
    assert [task_id for task_id, _ in result.refused] == ["t0001"]
    assert store.get_archived("t0001") is not None
    restored = store.get("t0002")
    assert restored is not None
    assert restored.tags == {"n": "2"}
    assert len(store.get_shards("t0002")) == 1


def test_delete_many_removes_live_or_archived_tasks_with_shards(store: TaskStore) -> None:
    ids = _save(store, 4, status=TaskStatus.SUCCESS)
    store.archive_many(ids[2:])
    assert store.delete_many(ids).done == ids[:2]
    assert store.delete_many(ids, archived=True) == BulkResult(ids[2:], ids[:2], [])
    assert store.count() == store.count_archived() == 0
    assert store.get_shards("t0000") == []
    assert store.get_archived_shards("t0003") == []


@pytest.mark.parametrize("bad", ["t0000", [""], [None], 5])
def test_bulk_calls_refuse_bad_id_lists_before_writing(store: TaskStore, bad: object) -> None:
    _save(store, 1)
    with pytest.raises(InvalidInputError):
        store.archive_many(bad)  # type: ignore[arg-type]
    assert store.count() == 1


def test_update_metadata_merges_and_removes_keys(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy", metadata={"keep": 1, "drop": 2}))
    assert store.update_metadata("a", {"new": [1, 2]}, remove=["drop"]) == {
        "keep": 1,
        "new": [1, 2],
    }
    got = store.get("a")
    assert got is not None
    assert got.metadata == {"keep": 1, "new": [1, 2]}
    with pytest.raises(TaskNotFoundError):
        store.update_metadata("nope", {"x": 1})
    with pytest.raises(InvalidInputError):
        store.update_metadata("a", {"x": object()})
    with pytest.raises(InvalidInputError):
        store.update_metadata("a", {}, remove="drop")


def test_concurrent_metadata_patches_all_survive(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy"))

    def patch(k: int) -> None:
        for j in range(5):
            store.update_metadata("a", {f"w{k}-{j}": j})

    threads = [threading.Thread(target=patch, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = store.get("a")
    assert got is not None
    assert len(got.metadata) == 20


def test_finalize_assembles_results_and_joins_shard_errors(store: TaskStore) -> None:
    store.save(
        TaskInfo("a", "dummy", status=TaskStatus.RUNNING),
        [
            TaskShard(
                "a", 0, "j0", "dummy", 2, 0, status=TaskStatus.SUCCESS, result=[{"0": 1}, {"1": 2}]
            ),
            TaskShard("a", 1, "j1", "dummy", 1, 2, status=TaskStatus.RUNNING),
            TaskShard("a", 2, "j2", "dummy", 1, 3, status=TaskStatus.SUCCESS, result={"00": 5}),
        ],
    )
    with pytest.raises(TaskStateError, match=r"\[1\]"):
        store.finalize("a")
    store.update_shard("a", 1, status=TaskStatus.FAILED, error_message="calibration")
    task = store.finalize("a")
    assert task.result == [{"0": 1}, {"1": 2}, None, {"00": 5}]
    assert task.error_message == "shard 1: calibration"
    assert task.status == "failed"
    assert store.get("a") == task


def test_finalize_refuses_a_task_without_shards_or_missing(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy"))
    with pytest.raises(TaskStateError):
        store.finalize("a")
    with pytest.raises(TaskNotFoundError):
        store.finalize("nope")
