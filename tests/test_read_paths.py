"""Reads that stay cheap at any size: point reads send one statement and no transaction,
and list pages, platform lookups and counts are index range reads with no sort (v9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore
from uniqc_taskstore.filters import LIVE, Sort, TaskFilter
from uniqc_taskstore.queries import _shard_by_platform_id, select_tasks


def _traced(store: TaskStore) -> list[str]:
    """Every SQL text SQLite runs on the store's connections from now on."""
    sent: list[str] = []
    store._db.dispose()

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(sent.append)

    event.listen(store._db.engine, "connect", on_connect)
    return sent


def _filled(tmp_path: Path) -> TaskStore:
    store = TaskStore(tmp_path)
    store.save(
        TaskInfo("uqt_" + "1" * 32, "originq:WK_C180", tags={"team": "a"}),
        [TaskShard("uqt_" + "1" * 32, 0, "job-1", "originq:WK_C180")],
    )
    return store


def test_point_reads_send_one_select_and_no_begin_on_sqlite(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    sent = _traced(store)
    task = store.get("uqt_" + "1" * 32)
    shards = store.get_shards("uqt_" + "1" * 32)
    shard = store.get_shard_by_platform_id("job-1", backend="originq")
    assert task is not None
    assert task.tags == {"team": "a"}
    assert [s.platform_task_id for s in shards] == ["job-1"]
    assert shard is not None
    assert shard.shard_index == 0
    statements = [s for s in sent if not s.startswith("PRAGMA")]
    assert len(statements) == 3, statements
    assert all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
    store.close()


def test_point_reads_of_missing_rows_return_none_or_empty(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    assert store.get("uqt_" + "2" * 32) is None
    assert store.get_shards("uqt_" + "2" * 32) == []
    assert store.get_shard_by_platform_id("job-1", backend="ibm") is None
    assert store.get_archived("uqt_" + "1" * 32) is None
    store.close()


def _plan(store: TaskStore, stmt: Any) -> str:
    engine = store._db.engine
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("criteria", "index"),
    [
        ({"status": "success"}, "tasks_status_submit_idx"),
        ({}, "tasks_submit_task_idx"),
    ],
)
def test_list_pages_read_their_index_in_order_without_sorting(
    tmp_path: Path, criteria: dict[str, Any], index: str
) -> None:
    store = _filled(tmp_path)
    stmt = select_tasks(LIVE, TaskFilter(**criteria), Sort(), limit=50)
    plan = _plan(store, stmt)
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    store.close()


def test_newest_shard_of_a_platform_job_is_read_without_sorting(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    stmt = _shard_by_platform_id(False).params(platform_task_id="job-1")
    plan = _plan(store, stmt)
    assert "task_shards_platform_submit_idx" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    store.close()
