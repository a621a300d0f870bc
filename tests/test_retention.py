"""Age-based retention: archive old finished tasks, purge old archived ones, in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, update

from uniqc_taskstore import InvalidInputError, TaskInfo, TaskStatus, TaskStore
from uniqc_taskstore.schema import archived_tasks, tasks


def _age(store: TaskStore, table: Table, column: str, ids: list[str], days: float) -> None:
    """Backdate a column of some rows, as if they were written ``days`` ago."""
    moment = datetime.now(UTC) - timedelta(days=days)
    stmt = update(table).where(table.c.task_id.in_(ids)).values({column: moment.isoformat()})
    store._db.write(lambda conn: conn.execute(stmt))


def test_archive_older_than_takes_old_finished_tasks_only(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("old-done", "dummy", status=TaskStatus.SUCCESS),
            TaskInfo("old-failed", "dummy", status=TaskStatus.FAILED),
            TaskInfo("old-running", "dummy", status=TaskStatus.RUNNING),
            TaskInfo("new-done", "dummy", status=TaskStatus.SUCCESS),
        ]
    )
    _age(store, tasks, "update_time", ["old-done", "old-failed", "old-running"], 4)
    preview = store.archive_older_than(timedelta(hours=72), dry_run=True)
    assert preview.dry_run
    assert preview.count == 2
    assert preview.task_ids == ["old-done", "old-failed"]
    assert store.count() == 4
    done = store.archive_older_than(timedelta(hours=72))
    assert done.count == 2
    assert done.task_ids == []
    assert sorted(t.task_id for t in store.list_archived()) == ["old-done", "old-failed"]
    assert store.archive_older_than(72 * 3600, statuses=None).count == 1  # old-running


def test_archive_older_than_by_submit_time_and_filter(store: TaskStore) -> None:
    long_ago = "2020-01-01T00:00:00+00:00"
    store.save_many(
        [
            TaskInfo("a", "ibm:kyiv", status=TaskStatus.SUCCESS, submit_time=long_ago),
            TaskInfo("b", "dummy", status=TaskStatus.SUCCESS, submit_time=long_ago),
        ]
    )
    assert store.archive_older_than(timedelta(days=1)).count == 0  # updated just now
    result = store.archive_older_than(timedelta(days=1), by="submit_time", backend="ibm")
    assert result.count == 1
    assert store.get_archived("a") is not None


def test_archive_older_than_works_through_many_batches(store: TaskStore) -> None:
    store.save_many(
        [TaskInfo(f"t{k:04d}", "dummy", status=TaskStatus.SUCCESS) for k in range(1100)]
    )
    assert store.archive_older_than(0).count == 1100
    assert store.count() == 0
    assert store.count_archived() == 1100


def test_purge_archived_deletes_by_archive_age(store: TaskStore) -> None:
    store.save_many(
        [TaskInfo(t, "dummy", status=TaskStatus.SUCCESS, tags={"x": t}) for t in ("a", "b", "c")]
    )
    store.archive_many(["a", "b", "c"])
    _age(store, archived_tasks, "archived_at", ["a", "b"], 40)
    preview = store.purge_archived(older_than=timedelta(days=30), dry_run=True)
    assert preview.task_ids == ["a", "b"]
    assert store.count_archived() == 3
    assert store.purge_archived(older_than=timedelta(days=30)).count == 2
    assert [t.task_id for t in store.list_archived()] == ["c"]
    assert store.count_archived(tags={"x": None}) == 1


@pytest.mark.parametrize("age", [timedelta(seconds=-1), -5, "72h", True, float("nan")])
def test_bad_ages_are_refused(store: TaskStore, age: object) -> None:
    with pytest.raises(InvalidInputError):
        store.archive_older_than(age)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        store.purge_archived(older_than=age)  # type: ignore[arg-type]


def test_status_filter_and_statuses_both_hold(store: TaskStore) -> None:
    """``status=`` narrows the default finished ``statuses`` (every filter field must
    match), instead of being replaced by them."""
    store.save_many(
        [
            TaskInfo("done", "dummy", status=TaskStatus.SUCCESS),
            TaskInfo("failed", "dummy", status=TaskStatus.FAILED),
            TaskInfo("running", "dummy", status=TaskStatus.RUNNING),
        ]
    )
    _age(store, tasks, "update_time", ["done", "failed", "running"], 4)
    assert store.archive_older_than(3600, status="running", dry_run=True).task_ids == []
    assert store.archive_older_than(3600, status="failed", dry_run=True).task_ids == ["failed"]
    assert store.archive_older_than(
        3600, status="running", statuses=None, dry_run=True
    ).task_ids == ["running"]


@pytest.mark.parametrize(
    "age", [8.64e13, 1e300, 10**5000, timedelta.max], ids=["1e6years", "1e300", "10**5000", "max"]
)
def test_an_age_longer_than_the_calendar_matches_no_task(store: TaskStore, age: object) -> None:
    store.save(TaskInfo("done", "dummy", status=TaskStatus.SUCCESS))
    _age(store, tasks, "update_time", ["done"], 365 * 2000)  # year 26
    assert store.archive_older_than(age).count == 0  # type: ignore[arg-type]
    assert store.archive("done")
    assert store.purge_archived(older_than=age).count == 0  # type: ignore[arg-type]
    assert store.count_archived() == 1
