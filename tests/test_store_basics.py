"""Saving, reading, listing and deleting tasks: the SPEC's compatibility surface."""

from __future__ import annotations

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id


def make_task(backend: str = "originq:WK_C180", **fields: object) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend=backend, **fields)  # type: ignore[arg-type]


def test_saved_task_reads_back_equal(store: TaskStore) -> None:
    task = make_task(result={"00": 3}, metadata={"shots_note": "x"}, shots=5)
    store.save(task)
    assert store.get(task.task_id) == task


def test_missing_task_is_none(store: TaskStore) -> None:
    assert store.get("uqt_" + "0" * 32) is None


def test_task_saved_with_shards_reads_back(store: TaskStore) -> None:
    task = make_task()
    shards = [
        TaskShard(
            task.task_id, i, f"job-{i}", task.backend, circuit_count=2, sub_index_offset=2 * i
        )
        for i in range(3)
    ]
    store.save(task, shards)
    assert store.get_shards(task.task_id) == shards
    assert store.count(status=TaskStatus.RUNNING) == 1  # the aggregate of its pending shards
