"""A task's status tells the truth after every write: it is the aggregate of its shards,
except that a finished status is not replaced by an unfinished one unless a shard was
resubmitted (README, "Statuses, results and errors")."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from uniqc_taskstore import (
    ShardPlan,
    TaskInfo,
    TaskRepository,
    TaskShard,
    TaskStatus,
    TaskStore,
    assemble_results,
    generate_uniqc_task_id,
    plan_shards,
)

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
UNFINISHED = [PENDING, RUNNING]

# The README's table, row by row: shards' statuses -> the task's status.
AGGREGATES = [
    ([SUCCESS, SUCCESS], SUCCESS),
    ([SUCCESS, FAILED, SUCCESS], FAILED),
    ([FAILED, CANCELLED], FAILED),
    ([CANCELLED, SUCCESS], CANCELLED),
    ([CANCELLED], CANCELLED),
    ([SUCCESS, PENDING], RUNNING),
    ([FAILED, RUNNING], RUNNING),
    ([PENDING, PENDING], RUNNING),
]


def make_task(status: TaskStatus = PENDING, **fields: Any) -> TaskInfo:
    return TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", status=status, **fields)


def shards_with(task: TaskInfo, statuses: list[TaskStatus], job: str = "job") -> list[TaskShard]:
    return [
        TaskShard(task.task_id, i, f"{job}-{i}", task.backend, sub_index_offset=i, status=s)
        for i, s in enumerate(statuses)
    ]


def status_of(store: TaskStore, task_id: str) -> TaskStatus:
    task = store.get(task_id)
    assert task is not None
    return task.status


def unfinished_ids(store: TaskStore) -> set[str]:
    """What a poller that picks unfinished tasks would pick."""
    return {task.task_id for task in store.list(status=UNFINISHED)}


# -- every write path leaves the aggregate ----------------------------------------------


def _save(store: TaskStore, task: TaskInfo, shards: list[TaskShard]) -> None:
    store.save(task, shards)


def _save_many(store: TaskStore, task: TaskInfo, shards: list[TaskShard]) -> None:
    store.save_many([make_task(), task], shards)


def _save_then_save_shards(store: TaskStore, task: TaskInfo, shards: list[TaskShard]) -> None:
    store.save(task)
    store.save_shards(shards)


def _save_then_save_shard(store: TaskStore, task: TaskInfo, shards: list[TaskShard]) -> None:
    store.save(task)
    for one in shards:
        store.save_shard(one)


WRITES: dict[str, Callable[[TaskStore, TaskInfo, list[TaskShard]], None]] = {
    "save": _save,
    "save_many": _save_many,
    "save_shards": _save_then_save_shards,
    "save_shard": _save_then_save_shard,
}


@pytest.mark.parametrize("write", WRITES)
def test_every_shard_write_leaves_the_task_at_the_aggregate_of_its_shards(
    store: TaskStore, write: str
) -> None:
    for statuses, expected in AGGREGATES:
        task = make_task(PENDING)
        WRITES[write](store, task, shards_with(task, statuses))
        assert status_of(store, task.task_id) == expected, statuses
        assert store.aggregate_status(store.get_shards(task.task_id)) == expected


def test_save_with_finished_shards_sets_the_status_on_the_object_too(store: TaskStore) -> None:
    task = make_task(PENDING)
    store.save(task, shards_with(task, [SUCCESS, SUCCESS]))
    assert task.status == SUCCESS
    assert store.get(task.task_id) == task
    assert store.list(status="success") == [task]
    assert store.count(status="pending") == 0


def test_save_shards_of_several_tasks_sets_each_to_its_own_aggregate(store: TaskStore) -> None:
    done, failing, busy = make_task(), make_task(), make_task()
    store.save_many([done, failing, busy])
    store.save_shards(
        shards_with(done, [SUCCESS], "a")
        + shards_with(failing, [SUCCESS, FAILED], "b")
        + shards_with(busy, [SUCCESS, RUNNING], "c")
    )
    statuses = [status_of(store, t.task_id) for t in (done, failing, busy)]
    assert statuses == [SUCCESS, FAILED, RUNNING]


def test_save_shard_stamps_its_task_update_time(store: TaskStore) -> None:
    task = make_task()
    store.save(task)
    one = shards_with(task, [PENDING])[0]
    store.save_shard(one)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.update_time == one.update_time > task.update_time


def test_task_without_shards_keeps_the_status_it_was_saved_with(store: TaskStore) -> None:
    for status in TaskStatus:
        task = make_task(status)
        store.save(task)
        assert status_of(store, task.task_id) == status
        store.save_many([task])
        assert status_of(store, task.task_id) == status


def test_saving_an_unfinished_status_over_unfinished_shards_gives_the_aggregate(
    store: TaskStore,
) -> None:
    task = make_task(RUNNING)
    store.save(task, shards_with(task, [RUNNING, SUCCESS]))
    task.status = PENDING
    store.save(task)
    assert status_of(store, task.task_id) == RUNNING


def test_saving_unfinished_status_over_finished_shards_keeps_their_aggregate(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, shards_with(task, [SUCCESS, FAILED]))
    store.save(TaskInfo(task.task_id, task.backend, status=RUNNING))
    assert status_of(store, task.task_id) == FAILED


# -- a finished task is not reopened by a late report, but is by a resubmission ----------


def test_user_cancel_while_shards_run_stays_cancelled_through_late_polls(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, shards_with(task, [PENDING, PENDING]))
    store.update_shard(task.task_id, 0, status=RUNNING)
    task.status, task.error_message = CANCELLED, "cancelled by the user"
    store.save(task)
    assert status_of(store, task.task_id) == CANCELLED
    late = [
        store.update_shard(task.task_id, 0, status=RUNNING),
        store.update_shard(task.task_id, 1, status=RUNNING),
        store.update_shard(task.task_id, 0, status=SUCCESS),
    ]
    assert [(u.applied, u.task_status) for u in late] == [(True, CANCELLED)] * 3
    assert status_of(store, task.task_id) == CANCELLED
    assert task.task_id not in unfinished_ids(store)
    store.save_shard(shards_with(task, [PENDING, RUNNING])[1])  # same jobs, stale views
    assert status_of(store, task.task_id) == CANCELLED


def test_cancelled_task_takes_the_aggregate_once_every_shard_has_finished(
    store: TaskStore,
) -> None:
    for last, expected in ((SUCCESS, SUCCESS), (FAILED, FAILED), (CANCELLED, CANCELLED)):
        task = make_task()
        store.save(task, shards_with(task, [RUNNING, RUNNING]))
        task.status = CANCELLED
        store.save(task)
        store.update_shard(task.task_id, 0, status=SUCCESS)
        assert status_of(store, task.task_id) == CANCELLED
        outcome = store.update_shard(task.task_id, 1, status=last)
        assert outcome.task_status == expected
        assert status_of(store, task.task_id) == expected


def test_late_poll_does_not_reopen_a_task_saved_finished(store: TaskStore) -> None:
    for finished in (SUCCESS, FAILED, CANCELLED):
        task = make_task()
        store.save(task, shards_with(task, [PENDING, PENDING]))
        task.status = finished
        store.save(task)
        assert status_of(store, task.task_id) == finished
        outcome = store.update_shard(task.task_id, 1, status=RUNNING)
        assert (outcome.applied, outcome.task_status) == (True, finished)
        assert status_of(store, task.task_id) == finished


def test_resubmission_through_save_shard_reopens_a_failed_task(store: TaskStore) -> None:
    task = make_task()
    store.save(task, shards_with(task, [PENDING, PENDING]))
    store.update_shard(task.task_id, 0, status=SUCCESS)
    store.update_shard(task.task_id, 1, status=FAILED, error_message="device offline")
    assert status_of(store, task.task_id) == FAILED
    assert task.task_id not in unfinished_ids(store)
    retry = TaskShard(task.task_id, 1, "job-1-retry", task.backend, sub_index_offset=1)
    store.save_shard(retry)
    assert status_of(store, task.task_id) == RUNNING
    assert task.task_id in unfinished_ids(store)
    outcome = store.update_shard(task.task_id, 1, status=SUCCESS)
    assert (outcome.applied, outcome.task_status) == (True, SUCCESS)


def test_resubmission_in_save_reopens_even_a_task_saved_finished(store: TaskStore) -> None:
    task = make_task()
    store.save(task, shards_with(task, [FAILED]))
    assert status_of(store, task.task_id) == FAILED
    task.status = FAILED
    store.save(task, shards_with(task, [PENDING], job="retry"))
    assert status_of(store, task.task_id) == RUNNING
    assert task.status == RUNNING


def test_stale_save_shard_of_the_same_job_does_not_reopen_a_finished_task(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, shards_with(task, [SUCCESS, SUCCESS]))
    store.save_shards(shards_with(task, [RUNNING, PENDING]))
    assert [s.status for s in store.get_shards(task.task_id)] == [SUCCESS, SUCCESS]
    assert status_of(store, task.task_id) == SUCCESS


def test_cancelled_task_saved_again_with_its_same_jobs_stays_cancelled(store: TaskStore) -> None:
    task = make_task()
    store.save(task, shards_with(task, [RUNNING, RUNNING]))
    task.status = CANCELLED
    store.save(task)
    store.save(task, shards_with(task, [RUNNING, PENDING]))  # the same jobs: no new one
    assert status_of(store, task.task_id) == CANCELLED
    assert task.status == CANCELLED


def test_new_shard_added_to_a_finished_task_reopens_it(store: TaskStore) -> None:
    # The first job finished before the adapter saved the second: the task must not
    # look finished while the second job runs.
    task = make_task()
    store.save(task, shards_with(task, [SUCCESS]))
    assert status_of(store, task.task_id) == SUCCESS
    store.save_shard(TaskShard(task.task_id, 1, "second", task.backend, sub_index_offset=1))
    assert status_of(store, task.task_id) == RUNNING
    assert task.task_id in unfinished_ids(store)


def test_new_task_saved_finished_with_unfinished_shards_is_running(store: TaskStore) -> None:
    task = make_task(CANCELLED)
    store.save(task, shards_with(task, [RUNNING, SUCCESS]))
    assert status_of(store, task.task_id) == RUNNING


# -- the README's adapter, with a resubmission -------------------------------------------


class MyCloudAdapter:
    """The README's adapter, with a platform that hands out job ids and a resubmit."""

    max_native_batch_size = 2

    def __init__(self, store: TaskRepository) -> None:
        self.store = store
        self._job_ids = (f"job-{n}" for n in itertools.count())

    def submit(self, circuits: list[str]) -> str:
        task = TaskInfo(generate_uniqc_task_id(), backend="mycloud:device-7")
        shards = [
            TaskShard(
                task.task_id,
                plan.shard_index,
                self._send(circuits, plan),
                task.backend,
                plan.circuit_count,
                plan.sub_index_offset,
            )
            for plan in plan_shards(len(circuits), self.max_native_batch_size)
        ]
        self.store.save(task, shards)
        return task.task_id

    def _send(self, circuits: list[str], plan: ShardPlan) -> str:
        return next(self._job_ids)

    def resubmit(self, task_id: str, shard_index: int) -> None:
        (old,) = [s for s in self.store.get_shards(task_id) if s.shard_index == shard_index]
        plan = ShardPlan(old.shard_index, old.sub_index_offset, old.circuit_count)
        self.store.save_shard(
            TaskShard(
                task_id,
                shard_index,
                self._send([], plan),
                old.backend,
                old.circuit_count,
                old.sub_index_offset,
            )
        )

    def on_poll(self, task_id: str, shard_index: int, status: str, result: object) -> None:
        self.store.update_shard(task_id, shard_index, status=status, result=result)

    def results(self, task_id: str) -> list[object]:
        return assemble_results(self.store.get_shards(task_id))


def test_readme_adapter_resubmission_reopens_the_task_and_it_finishes(store: TaskStore) -> None:
    adapter = MyCloudAdapter(store)
    task_id = adapter.submit(["c0", "c1", "c2"])
    assert status_of(store, task_id) == RUNNING
    adapter.on_poll(task_id, 0, "success", [{"0": 1}, {"1": 1}])
    adapter.on_poll(task_id, 1, "failed", None)
    assert status_of(store, task_id) == FAILED
    assert task_id not in unfinished_ids(store)

    adapter.resubmit(task_id, 1)
    assert status_of(store, task_id) == RUNNING
    assert task_id in unfinished_ids(store)
    adapter.on_poll(task_id, 1, "running", None)
    adapter.on_poll(task_id, 1, "success", {"2": 1})
    assert status_of(store, task_id) == SUCCESS
    assert adapter.results(task_id) == [{"0": 1}, {"1": 1}, {"2": 1}]
