"""What adapters depend on: ``TaskRepository``, satisfied by every ``TaskStore`` and by
the private in-memory store adapters use in their own unit tests."""

from __future__ import annotations

import threading

import pytest

from uniqc_taskstore import (
    TaskInfo,
    TaskRepository,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.demo import DEMO_BACKEND, DummyAdapter, fake_counts


def submit_and_finish_one_job(repo: TaskRepository, platform_task_id: str) -> str:
    """An adapter written only against the Protocol: submit one job, see it succeed."""
    task = TaskInfo(task_id=generate_uniqc_task_id(), backend="originq:WK_C180")
    repo.save(task)
    repo.save_shard(TaskShard(task.task_id, 0, platform_task_id, task.backend))
    owner = repo.find_uniqc_id_by_platform_id(platform_task_id, backend="originq:WK_C180")
    assert owner == task.task_id
    shard = repo.get_shard_by_platform_id(platform_task_id)
    assert shard is not None
    repo.update_shard(owner, shard.shard_index, status=TaskStatus.RUNNING)
    repo.update_shard(owner, shard.shard_index, status="success", result={"00": 7})
    return owner


def test_store_serves_an_adapter_typed_against_the_protocol(store: TaskStore) -> None:
    repo: TaskRepository = store
    task_id = submit_and_finish_one_job(repo, "job-proto-1")
    saved = store.get(task_id)
    assert saved is not None
    assert saved.status is TaskStatus.SUCCESS
    assert [s.result for s in store.get_shards(task_id)] == [{"00": 7}]


def test_in_memory_store_serves_an_adapter_typed_against_the_protocol() -> None:
    repo: TaskRepository = TaskStore.in_memory()
    task_id = submit_and_finish_one_job(repo, "job-proto-2")
    saved = repo.get(task_id)
    assert saved is not None
    assert saved.status is TaskStatus.SUCCESS


@pytest.mark.parametrize(("circuits", "max_batch"), [(1, 3), (7, 3), (10, 4), (6, 6)])
def test_dummy_adapter_finishes_a_batch_in_memory_with_results_in_order(
    circuits: int, max_batch: int
) -> None:
    store = TaskStore.in_memory()
    adapter = DummyAdapter(store, max_native_batch_size=max_batch)
    batch = [f"OPENQASM 2.0; // protocol circuit {n}" for n in range(circuits)]
    task_id = adapter.submit(batch, shots=500)
    polls = 0
    while not adapter.poll(task_id).is_terminal:
        polls += 1
        assert polls < 10, "the dummy platform finishes every job on its second poll"
    task = store.get(task_id)
    assert task is not None
    assert task.status is TaskStatus.SUCCESS
    assert task.backend == DEMO_BACKEND
    shards = store.get_shards(task_id)
    assert len(shards) == -(-circuits // max_batch)
    assert all(s.circuit_count <= max_batch for s in shards)
    assert adapter.results(task_id) == [fake_counts(c, 500) for c in batch]


def test_in_memory_stores_do_not_share_tasks() -> None:
    first = TaskStore.in_memory()
    second = TaskStore.in_memory()
    task = TaskInfo(task_id=generate_uniqc_task_id(), backend="dummy")
    first.save(task)
    assert first.get(task.task_id) is not None
    assert second.get(task.task_id) is None
    assert second.count() == 0
    assert first.db_path is None


def test_in_memory_store_accepts_writes_from_several_threads() -> None:
    store = TaskStore.in_memory()
    errors: list[BaseException] = []

    def save_fifty(thread_index: int) -> None:
        try:
            for n in range(50):
                store.save(
                    TaskInfo(
                        task_id=generate_uniqc_task_id(),
                        backend=f"dummy:t{thread_index}",
                        metadata={"n": n},
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save_fifty, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 200
    assert all(store.count(backend=f"dummy:t{i}") == 50 for i in range(4))
    assert len(store.list()) == 200
