"""Shards: saving with and without their task, layout checks, resubmission, status
updates with task-status aggregation, and platform-id lookups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    ShardNotFoundError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)


def make_task(backend: str = "originq:WK_C180", **fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend=backend, **fields)


def at(second: int) -> str:
    """A canonical time ``second`` seconds into 2026."""
    return f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000000+00:00"


def shard(task: TaskInfo, index: int, **fields: Any) -> TaskShard:
    """Shard ``index`` of ``task``: one circuit at position ``index`` unless told."""
    fields.setdefault("platform_task_id", f"{task.task_id}-job-{index}")
    fields.setdefault("backend", task.backend)
    fields.setdefault("sub_index_offset", index)
    return TaskShard(task.task_id, index, **fields)


def saved_with_shards(store: TaskStore, count: int, **task_fields: Any) -> TaskInfo:
    task = make_task(**task_fields)
    store.save(task, [shard(task, i) for i in range(count)])
    return task


def status_of(store: TaskStore, task_id: str) -> TaskStatus:
    task = store.get(task_id)
    assert task is not None
    return task.status


# -- saving ----------------------------------------------------------------------------


def test_save_shard_without_parent_raises_task_not_found_and_writes_nothing(
    store: TaskStore,
) -> None:
    orphan = shard(make_task(), 0)
    with pytest.raises(TaskNotFoundError, match=orphan.uniqc_task_id):
        store.save_shard(orphan)
    assert store.get_shards(orphan.uniqc_task_id) == []
    assert store.get_shard_by_platform_id(orphan.platform_task_id) is None


def test_save_shards_with_one_orphan_writes_none_of_the_batch(store: TaskStore) -> None:
    parent = make_task()
    store.save(parent)
    with pytest.raises(TaskNotFoundError):
        store.save_shards([shard(parent, 0), shard(make_task(), 0)])
    assert store.get_shards(parent.task_id) == []


def test_get_shards_orders_by_index(store: TaskStore) -> None:
    task = make_task()
    store.save(task)
    for index in (3, 0, 2, 1):
        store.save_shard(shard(task, index))
    assert [s.shard_index for s in store.get_shards(task.task_id)] == [0, 1, 2, 3]


def test_save_with_shards_writes_task_and_shards_in_one_call(store: TaskStore) -> None:
    task = make_task(status=TaskStatus.RUNNING)
    shards = [shard(task, i, circuit_count=3, sub_index_offset=3 * i) for i in range(4)]
    store.save(task, shards)
    assert store.get(task.task_id) == task
    assert store.get_shards(task.task_id) == shards


def test_save_with_overlapping_shards_writes_neither_task_nor_shards(store: TaskStore) -> None:
    task = make_task()
    overlapping = [shard(task, 0, circuit_count=2), shard(task, 1, sub_index_offset=1)]
    with pytest.raises(ShardLayoutError):
        store.save(task, overlapping)
    assert store.get(task.task_id) is None
    assert store.get_shards(task.task_id) == []


def test_save_with_shard_of_another_task_raises_invalid_input_and_writes_nothing(
    store: TaskStore,
) -> None:
    task, other = make_task(), make_task()
    store.save(other)
    with pytest.raises(InvalidInputError) as raised:
        store.save(task, [shard(task, 0), shard(other, 0)])
    assert (raised.value.field, raised.value.value) == ("uniqc_task_id", other.task_id)
    assert store.get(task.task_id) is None
    assert store.get_shards(task.task_id) == []
    assert store.get_shards(other.task_id) == []


def test_overlapping_existing_shard_raises_layout_error_and_writes_nothing(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, [shard(task, 0, circuit_count=4)])
    before = store.get_shards(task.task_id)
    with pytest.raises(ShardLayoutError) as raised:
        store.save_shards([shard(task, 2, sub_index_offset=4), shard(task, 1, sub_index_offset=3)])
    assert (raised.value.field, raised.value.value) == ("sub_index_offset", 3)
    assert store.get_shards(task.task_id) == before


def test_reused_index_with_a_new_layout_is_checked_against_other_shards(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, [shard(task, 0), shard(task, 1)])
    before = store.get_shards(task.task_id)
    with pytest.raises(ShardLayoutError):
        store.save_shard(shard(task, 0, circuit_count=2))
    assert store.get_shards(task.task_id) == before


def test_two_shards_with_the_same_index_in_one_write_raise_layout_error_and_write_nothing(
    store: TaskStore,
) -> None:
    task = make_task()
    first = shard(task, 0, platform_task_id="first", circuit_count=1)
    last = shard(task, 0, platform_task_id="last", circuit_count=3)
    writes: list[Callable[[], None]] = [
        lambda: store.save(task, [first, last]),
        lambda: store.save_many([task], [first, last]),
        lambda: store.save_shards([first, last]),
    ]
    for write in writes:
        with pytest.raises(ShardLayoutError) as raised:
            write()
        assert (raised.value.field, raised.value.value) == ("shard_index", 0)
        assert store.get_shards(task.task_id) == []
        store.save(task)  # the parent for save_shards, the last write
    assert store.get_shard_by_platform_id("first") is None
    assert store.get_shard_by_platform_id("last") is None


def test_same_index_in_two_tasks_of_one_save_many_is_no_conflict(store: TaskStore) -> None:
    one, two = make_task(), make_task()
    store.save_many([one, two], [shard(one, 0), shard(two, 0)])
    assert [len(store.get_shards(t.task_id)) for t in (one, two)] == [1, 1]


def test_resubmission_with_new_platform_id_replaces_status_result_error_and_submit_time(
    store: TaskStore,
) -> None:
    task = make_task()
    done = shard(
        task,
        0,
        platform_task_id="old-job",
        status=TaskStatus.FAILED,
        result={"00": 1},
        error_message="device offline",
        submit_time=at(1),
    )
    store.save(task, [done])
    again = shard(task, 0, platform_task_id="new-job", submit_time=at(9))
    store.save_shard(again)
    (stored,) = store.get_shards(task.task_id)
    assert stored == again
    assert (stored.status, stored.result, stored.error_message) == (TaskStatus.PENDING, None, None)
    assert stored.submit_time == at(9)
    assert store.get_shard_by_platform_id("old-job") is None


def test_stale_report_for_same_platform_job_keeps_terminal_status_result_and_error(
    store: TaskStore,
) -> None:
    for final in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED):
        task = make_task()
        store.save(task, [shard(task, 0, status=final, result={"0": 7}, error_message="last")])
        store.save_shard(shard(task, 0, status=TaskStatus.RUNNING, result={"1": 1}))
        (stored,) = store.get_shards(task.task_id)
        assert (stored.status, stored.result, stored.error_message) == (final, {"0": 7}, "last")


def test_report_for_same_platform_job_keeps_first_submit_time(store: TaskStore) -> None:
    task = make_task()
    store.save(task, [shard(task, 0, submit_time=at(1))])
    store.save_shard(shard(task, 0, submit_time=at(30), status=TaskStatus.RUNNING))
    (stored,) = store.get_shards(task.task_id)
    assert (stored.submit_time, stored.status) == (at(1), TaskStatus.RUNNING)


# -- update_shard ----------------------------------------------------------------------


def test_update_shard_is_applied_and_reports_shard_and_task_status(store: TaskStore) -> None:
    task = saved_with_shards(store, 2)
    outcome = store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
    assert (outcome.applied, outcome.shard_status, outcome.task_status) == (
        True,
        TaskStatus.RUNNING,
        TaskStatus.RUNNING,
    )
    assert store.get_shards(task.task_id)[0].status == TaskStatus.RUNNING
    assert status_of(store, task.task_id) == TaskStatus.RUNNING


def test_update_shard_turning_final_status_back_is_not_applied(store: TaskStore) -> None:
    task = saved_with_shards(store, 1)
    store.update_shard(task.task_id, 0, status="success", result={"0": 1})
    before = store.get_shards(task.task_id)
    outcome = store.update_shard(task.task_id, 0, status="running", result={"x": 2})
    assert (outcome.applied, outcome.shard_status, outcome.task_status) == (
        False,
        TaskStatus.SUCCESS,
        TaskStatus.SUCCESS,
    )
    assert store.get_shards(task.task_id) == before


def test_stale_poll_leaves_the_task_row_untouched(store: TaskStore) -> None:
    task = saved_with_shards(store, 2)
    store.update_shard(task.task_id, 0, status="success")
    settled = store.get(task.task_id)
    outcome = store.update_shard(task.task_id, 0, status="running")
    assert (outcome.applied, outcome.task_status) == (False, TaskStatus.RUNNING)
    assert store.get(task.task_id) == settled  # not re-stamped, not re-settled


AGGREGATES = [
    (["success", "success", "success"], TaskStatus.SUCCESS),
    (["success", "failed", "success"], TaskStatus.FAILED),
    (["failed", "cancelled"], TaskStatus.FAILED),
    (["failed", "running"], TaskStatus.RUNNING),
    (["success", "running"], TaskStatus.RUNNING),
    (["success", "pending"], TaskStatus.RUNNING),
    (["cancelled", "success"], TaskStatus.CANCELLED),
    (["cancelled", "cancelled"], TaskStatus.CANCELLED),
]


def test_update_shard_sets_task_status_to_the_aggregate_of_its_shards(store: TaskStore) -> None:
    for statuses, expected in AGGREGATES:
        task = saved_with_shards(store, len(statuses))
        for index, status in enumerate(statuses):
            outcome = store.update_shard(task.task_id, index, status=status)
        assert outcome.task_status == expected, statuses
        assert status_of(store, task.task_id) == expected, statuses
        assert store.aggregate_status(store.get_shards(task.task_id)) == expected


def test_update_shard_stores_result_and_error_message(store: TaskStore) -> None:
    task = saved_with_shards(store, 2)
    store.update_shard(task.task_id, 0, status="success", result={"00": 600, "11": 400})
    store.update_shard(task.task_id, 1, status="failed", error_message="queue timeout")
    first, second = store.get_shards(task.task_id)
    assert (first.status, first.result, first.error_message) == (
        TaskStatus.SUCCESS,
        {"00": 600, "11": 400},
        None,
    )
    assert (second.status, second.result, second.error_message) == (
        TaskStatus.FAILED,
        None,
        "queue timeout",
    )


def test_update_shard_without_result_keeps_stored_result_and_error(store: TaskStore) -> None:
    task = make_task()
    store.save(task, [shard(task, 0, status="running", result={"partial": 1}, error_message="w")])
    store.update_shard(task.task_id, 0, status="success")
    (stored,) = store.get_shards(task.task_id)
    assert (stored.status, stored.result, stored.error_message) == (
        TaskStatus.SUCCESS,
        {"partial": 1},
        "w",
    )


def test_update_shard_stamps_shard_and_task_update_time(store: TaskStore) -> None:
    task = make_task()
    store.save(task, [shard(task, 0)])
    before_task = task.update_time
    store.update_shard(task.task_id, 0, status="running")
    stored_task = store.get(task.task_id)
    assert stored_task is not None
    (stored,) = store.get_shards(task.task_id)
    assert stored.update_time >= before_task
    assert stored_task.update_time == stored.update_time


def test_update_shard_of_missing_shard_or_task_raises_shard_not_found(store: TaskStore) -> None:
    task = saved_with_shards(store, 1)
    with pytest.raises(ShardNotFoundError):
        store.update_shard(task.task_id, 1, status="success")
    with pytest.raises(ShardNotFoundError):
        store.update_shard(generate_uniqc_task_id(), 0, status="success")
    assert store.get_shards(task.task_id)[0].status == TaskStatus.PENDING
    assert status_of(store, task.task_id) == TaskStatus.RUNNING


def test_update_shard_with_unknown_status_raises_invalid_input_and_changes_nothing(
    store: TaskStore,
) -> None:
    task = saved_with_shards(store, 1)
    before = store.get_shards(task.task_id)
    with pytest.raises(InvalidInputError) as raised:
        store.update_shard(task.task_id, 0, status="done")
    assert (raised.value.field, raised.value.value) == ("status", "done")
    assert store.get_shards(task.task_id) == before


# -- platform-id lookups ---------------------------------------------------------------


def test_platform_lookup_of_unknown_id_is_none(store: TaskStore) -> None:
    saved_with_shards(store, 1)
    assert store.get_shard_by_platform_id("no-such-job") is None
    assert store.find_uniqc_id_by_platform_id("no-such-job") is None


def test_platform_lookup_finds_the_shard_and_its_task(store: TaskStore) -> None:
    task = saved_with_shards(store, 3)
    found = store.get_shard_by_platform_id(f"{task.task_id}-job-1")
    assert found == store.get_shards(task.task_id)[1]
    assert store.find_uniqc_id_by_platform_id(f"{task.task_id}-job-1") == task.task_id


def test_platform_id_shared_by_several_tasks_finds_the_newest_submitted(
    store: TaskStore,
) -> None:
    made = {second: make_task() for second in (10, 30, 20)}
    for second, task in made.items():
        store.save(task, [shard(task, 0, platform_task_id="reused", submit_time=at(second))])
    found = store.get_shard_by_platform_id("reused")
    assert found is not None
    assert found.uniqc_task_id == made[30].task_id
    assert store.find_uniqc_id_by_platform_id("reused") == made[30].task_id


def test_platform_id_ties_are_broken_by_task_id_then_shard_index_descending(
    store: TaskStore,
) -> None:
    same_time = at(5)
    first, second = sorted((make_task(), make_task()), key=lambda t: t.task_id)
    for task in (first, second):
        store.save(
            task,
            [shard(task, i, platform_task_id="dup", submit_time=same_time) for i in range(3)],
        )
    for _ in range(3):
        found = store.get_shard_by_platform_id("dup")
        assert found is not None
        assert (found.uniqc_task_id, found.shard_index) == (second.task_id, 2)
    store.delete(second.task_id)
    found = store.get_shard_by_platform_id("dup")
    assert found is not None
    assert (found.uniqc_task_id, found.shard_index) == (first.task_id, 2)


def test_platform_lookup_backend_narrows_by_exact_label_and_family(store: TaskStore) -> None:
    by_backend = {
        backend: make_task(backend=backend)
        for backend in ("originq:WK_C180", "originqx:WK_C180", "ibm:brisbane")
    }
    for second, task in enumerate(by_backend.values()):
        store.save(task, [shard(task, 0, platform_task_id="42", submit_time=at(second))])
    expected = {
        "originq": "originq:WK_C180",
        "originq:WK_C180": "originq:WK_C180",
        "originqx": "originqx:WK_C180",
        "ibm": "ibm:brisbane",
        "ibm:brisbane": "ibm:brisbane",
        "originq:WK": None,
        "ibm:bris": None,
        "quafu": None,
    }
    for backend, label in expected.items():
        want = by_backend[label].task_id if label else None
        assert store.find_uniqc_id_by_platform_id("42", backend=backend) == want, backend


def test_delete_shards_returns_count_and_keeps_the_task(store: TaskStore) -> None:
    task = saved_with_shards(store, 3, status=TaskStatus.RUNNING)
    other = saved_with_shards(store, 2)
    assert store.delete_shards(task.task_id) == 3
    assert store.get_shards(task.task_id) == []
    assert store.get(task.task_id) == task
    assert len(store.get_shards(other.task_id)) == 2
    assert store.delete_shards(task.task_id) == 0


def test_thousand_shards_saved_in_one_call_read_back_complete(store: TaskStore) -> None:
    task = make_task(backend="dummy")
    shards = [
        shard(task, i, circuit_count=2, sub_index_offset=2 * i, result=[{"0": i}, {"1": i}])
        for i in range(1000)
    ]
    store.save(task, shards)
    assert store.get_shards(task.task_id) == shards
    found = store.get_shard_by_platform_id(f"{task.task_id}-job-999")
    assert found == shards[999]


def test_a_thousand_shards_saved_over_stored_ones_are_checked_against_them(
    store: TaskStore,
) -> None:
    task = make_task(backend="dummy")
    shards = [shard(task, i) for i in range(1000)]
    store.save(task, shards)
    store.save(task, shards)  # the same layout again
    clash = shard(task, 1000)  # circuit 999, which stored shard 999 (not written) covers
    clash.sub_index_offset = 999
    with pytest.raises(ShardLayoutError):
        store.save(task, [*shards[:999], clash])
    assert store.get_shards(task.task_id) == shards


# -- layouts written by older versions -------------------------------------------------


def raw_execute(location: dict[str, Any], statement: str, **params: Any) -> None:
    """Run raw SQL on the store's database, as an older version might have left it."""
    url = location.get("url") or f"sqlite:///{Path(location['cache_dir']) / 'tasks.sqlite'}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


@pytest.fixture
def legacy_overlap(store: TaskStore, store_location: dict[str, Any]) -> TaskInfo:
    """A task whose stored shards 0 (circuits 0..1) and 1 (circuit 1) overlap."""
    task = make_task()
    store.save(task, [shard(task, 0, circuit_count=2), shard(task, 1, sub_index_offset=2)])
    raw_execute(
        store_location,
        "UPDATE task_shards SET sub_index_offset = 1 WHERE uniqc_task_id = :t AND shard_index = 1",
        t=task.task_id,
    )
    assert [s.sub_index_offset for s in store.get_shards(task.task_id)] == [0, 1]
    return task


def test_legacy_overlap_does_not_block_a_shard_that_overlaps_neither(
    store: TaskStore, legacy_overlap: TaskInfo
) -> None:
    task = legacy_overlap
    store.save_shard(shard(task, 2, sub_index_offset=3))
    store.save(task, [shard(task, 3, sub_index_offset=4)])
    store.update_shard(task.task_id, 2, status="success")
    assert [s.shard_index for s in store.get_shards(task.task_id)] == [0, 1, 2, 3]


def test_moving_a_legacy_overlapping_shard_out_of_the_way_is_accepted(
    store: TaskStore, legacy_overlap: TaskInfo
) -> None:
    task = legacy_overlap
    store.save_shard(shard(task, 1, sub_index_offset=2))
    assert [s.sub_index_offset for s in store.get_shards(task.task_id)] == [0, 2]


def test_new_shard_over_a_legacy_overlap_is_refused_naming_the_shard_it_overlaps(
    store: TaskStore, legacy_overlap: TaskInfo
) -> None:
    task = legacy_overlap
    before = store.get_shards(task.task_id)
    with pytest.raises(ShardLayoutError) as raised:
        store.save_shard(shard(task, 5, sub_index_offset=0))
    assert (raised.value.field, raised.value.value) == ("sub_index_offset", 0)
    assert "shard 5" in str(raised.value)
    assert "stored shard 0" in str(raised.value)
    assert store.get_shards(task.task_id) == before


def test_widened_or_new_shard_is_refused_naming_the_stored_shard_it_overlaps(
    store: TaskStore,
) -> None:
    task = make_task()
    store.save(task, [shard(task, i, sub_index_offset=2 * i) for i in range(50)])
    store.save_shard(shard(task, 50, sub_index_offset=1))  # the gap between shards 0 and 1
    with pytest.raises(ShardLayoutError, match="stored shard 49"):
        store.save_shard(shard(task, 51, sub_index_offset=98, circuit_count=5))
    with pytest.raises(ShardLayoutError, match="stored shard 50"):
        store.save_shard(shard(task, 0, sub_index_offset=0, circuit_count=2))
    assert len(store.get_shards(task.task_id)) == 51


def test_shard_at_the_largest_offset_and_count_is_checked_without_overflow(
    store: TaskStore,
) -> None:
    task = make_task()
    big = 2**31 - 1
    store.save(task, [shard(task, 0, sub_index_offset=big, circuit_count=big)])
    with pytest.raises(ShardLayoutError):
        store.save_shard(shard(task, 1, sub_index_offset=big, circuit_count=big))
    store.save_shard(shard(task, 1, sub_index_offset=big - 1))
    assert len(store.get_shards(task.task_id)) == 2


# -- many tasks in one write -----------------------------------------------------------


def test_layout_check_over_many_like_tasks_refuses_only_the_one_that_overlaps(
    store: TaskStore,
) -> None:
    """1,200 tasks (more than one batch of ids) with stored shards get a shard each at
    the same index and circuit: checked against each task's own stored shards."""
    tasks = [make_task() for _ in range(1200)]
    wide = tasks[777]
    store.save_many(tasks, [shard(t, 0, circuit_count=3 if t is wide else 1) for t in tasks])
    with pytest.raises(ShardLayoutError) as raised:
        store.save_shards([shard(t, 1) for t in tasks])
    assert wide.task_id in str(raised.value)
    assert "stored shard 0" in str(raised.value)
    assert all(len(store.get_shards(t.task_id)) == 1 for t in tasks[770:780])

    store.save_shards([shard(t, 1, sub_index_offset=3) for t in tasks])
    assert [len(store.get_shards(t.task_id)) for t in tasks] == [2] * len(tasks)


def test_new_jobs_in_a_write_over_many_tasks_reopen_only_their_tasks(store: TaskStore) -> None:
    """A finished task reopens for a new index or a new platform job at a stored one, not
    for a report of the same job; told apart per task across batches of ids."""
    tasks = [make_task(status=TaskStatus.SUCCESS) for _ in range(1100)]
    store.save_many(tasks, [shard(t, 0, status=TaskStatus.SUCCESS) for t in tasks])
    again = [shard(t, 0, status=TaskStatus.RUNNING) for t in tasks]  # same job: stale
    again[5] = shard(tasks[5], 0, platform_task_id="resubmitted", status=TaskStatus.RUNNING)
    again.append(shard(tasks[900], 1, status=TaskStatus.RUNNING))  # a new index
    store.save_shards(again)
    reopened = {t.task_id for t in tasks if status_of(store, t.task_id) is TaskStatus.RUNNING}
    assert reopened == {tasks[5].task_id, tasks[900].task_id}


def test_update_of_a_shard_whose_task_is_gone_raises_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A shard left without its task (files written without foreign keys) is not found,
    and the report is not written to it."""
    with TaskStore(cache_dir=tmp_path) as store:
        task = make_task()
        store.save(task, [shard(task, 0)])
        orphan = task.task_id
        raw = create_engine(f"sqlite:///{tmp_path / 'tasks.sqlite'}")
        with raw.begin() as conn:  # the file's foreign keys are off here, as in old files
            conn.execute(text("DELETE FROM tasks WHERE task_id = :t"), {"t": orphan})
        raw.dispose()
        with pytest.raises(ShardNotFoundError):
            store.update_shard(orphan, 0, status="success")
        with pytest.raises(ShardNotFoundError):
            store.update_shard(orphan, 0, status="running")
        assert [s.status for s in store.get_shards(orphan)] == [TaskStatus.PENDING]
