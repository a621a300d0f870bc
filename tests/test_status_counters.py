"""The status counters (schema v14): kept by triggers on ``tasks`` in every writing
transaction, read by ``count()``, ``count(status=...)`` and ``count_by("status")`` with
no other filter, checked and repaired by ``doctor``.

Killed writers are in the reliability suite (``test_reliability.py``)."""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from uniqc_taskstore import MIGRATIONS, TaskInfo, TaskShard, TaskStatus, TaskStore, counters
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.cli import main
from uniqc_taskstore.engine import Database
from uniqc_taskstore.errors import TaskStoreError
from uniqc_taskstore.exchange import export_tasks, import_tasks
from uniqc_taskstore.maintenance import diagnose, locate, repair_counts
from uniqc_taskstore.schema import task_counts
from uniqc_taskstore.transfer import copy_tasks

STATUSES = [s.value for s in TaskStatus]
IDS = [f"t{i}" for i in range(6)]


def _by_rows(store: TaskStore) -> dict[str, int]:
    return dict(sorted(store._db.read(counters.counted).items()))


def assert_counts_match(store: TaskStore) -> None:
    rows = _by_rows(store)
    assert store._db.read(counters.drift) == {}
    assert store.count_by("status") == rows
    assert store.count() == sum(rows.values())
    for status in STATUSES:
        assert store.count(status=status) == rows.get(status, 0)
    assert store.count(status=["success", "failed"]) == rows.get("success", 0) + rows.get(
        "failed", 0
    )


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.sampled_from(IDS), st.sampled_from(STATUSES)),
        st.tuples(st.just("save_with_shards"), st.sampled_from(IDS), st.integers(1, 3)),
        st.tuples(st.just("update_shard"), st.sampled_from(IDS), st.sampled_from(STATUSES)),
        st.tuples(st.just("save_many"), st.lists(st.sampled_from(IDS), max_size=3)),
        st.tuples(st.just("archive"), st.sampled_from(IDS)),
        st.tuples(st.just("restore"), st.sampled_from(IDS)),
        st.tuples(st.just("delete"), st.sampled_from(IDS)),
        st.tuples(st.just("archive_many"), st.lists(st.sampled_from(IDS), max_size=3)),
        st.tuples(st.just("restore_many"), st.lists(st.sampled_from(IDS), max_size=3)),
        st.tuples(st.just("delete_many"), st.lists(st.sampled_from(IDS), max_size=3)),
        st.tuples(st.just("finalize"), st.sampled_from(IDS)),
        st.tuples(st.just("clear_completed")),
        st.tuples(st.just("archive_older_than")),
        st.tuples(st.just("purge_archived")),
        st.tuples(st.just("clear_all")),
    ),
    max_size=12,
)


_BULK = ("archive_many", "restore_many", "delete_many")


def _apply(store: TaskStore, op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "save":
        store.save(TaskInfo(op[1], "ibm:dev", status=op[2]))
    elif name == "save_with_shards":
        shards = [TaskShard(op[1], i, f"job-{op[1]}-{i}", "ibm:dev") for i in range(op[2])]
        store.save(TaskInfo(op[1], "ibm:dev"), shards)
    elif name == "update_shard":
        store.update_shard(op[1], 0, status=op[2])
    elif name == "save_many":
        store.save_many(
            [TaskInfo(i, "ibm:dev", status=TaskStatus.RUNNING) for i in dict.fromkeys(op[1])]
        )
    elif name in ("archive", "restore", "delete", "finalize", *_BULK):
        getattr(store, name)(op[1])
    elif name == "clear_completed":
        store.clear_completed()
    elif name == "archive_older_than":
        store.archive_older_than(0)
    elif name == "purge_archived":
        store.purge_archived(older_than=0)
    else:
        store.clear_all()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_ops)
def test_counters_equal_count_star_after_any_operations(store: TaskStore, ops: list[Any]) -> None:
    """After every write path that adds, moves, re-statuses or removes live tasks (each
    example goes on from the last one's store)."""
    for op in ops:
        # A refused call (a missing task, a live twin) writes nothing.
        with contextlib.suppress(TaskStoreError):
            _apply(store, op)
        assert_counts_match(store)


def test_import_and_copy_keep_the_counters(store: TaskStore, tmp_path: Path) -> None:
    with TaskStore(tmp_path / "source") as source:
        for i, status in enumerate(STATUSES * 3):
            source.save(TaskInfo(f"s{i}", "ibm:dev", status=TaskStatus(status)))
        source.archive("s0")
        copy_tasks(source, store)
        assert_counts_match(store)
        dump = io.StringIO()
        export_tasks(source, dump, archived=True)
    with TaskStore(tmp_path / "other") as other:
        other.save(TaskInfo("s1", "ibm:dev", status=TaskStatus.FAILED))
        dump.seek(0)
        import_tasks(other, dump)
        assert_counts_match(other)
        assert other.count() == len(STATUSES) * 3 - 1


def test_counts_do_not_read_the_tasks_table(store: TaskStore) -> None:
    """Where the counters answer, ``COUNT(*)`` is not what answers: a counter changed
    behind the triggers' back shows in ``count_by`` (and ``doctor`` reports it)."""
    store.save(TaskInfo("a", "ibm:dev", status=TaskStatus.SUCCESS))

    def tamper(conn: Any) -> None:
        conn.execute(update(task_counts).where(task_counts.c.status == "success").values(n=7))

    store._db.write(tamper)
    assert store.count(status="success") == 7
    assert store.count_by("status") == {"success": 7}
    assert store.count(status="success", backend="ibm") == 1  # any other filter: the index
    assert store.count_by("status", backend="ibm") == {"success": 1}


def test_doctor_reports_counters_that_differ_and_repairs_them(store: TaskStore) -> None:
    for i, status in enumerate(STATUSES):
        store.save(TaskInfo(f"t{i}", "ibm:dev", status=TaskStatus(status)))

    def tamper(conn: Any) -> None:
        conn.execute(update(task_counts).values(n=task_counts.c.n + 3))

    store._db.write(tamper)
    location = locate(str(store.cache_dir), None) if store.cache_dir else locate(None, _url(store))
    checks = [c for c in diagnose(location, full=False, suffix="") if c.name == "counters"]
    assert checks == [] or checks[0].status == "ok"  # full=False runs no row checks
    checks = [c for c in diagnose(location, suffix="") if c.name == "counters"]
    assert [c.status for c in checks] == ["warn"]
    assert "doctor --repair-counts" in (checks[0].fix or "")
    fixed = repair_counts(store)
    assert set(fixed) == set(STATUSES)
    assert_counts_match(store)
    checks = [c for c in diagnose(location, suffix="") if c.name == "counters"]
    assert [c.status for c in checks] == ["ok"]


def _url(store: TaskStore) -> str:
    url = store._db.backend.url  # type: ignore[attr-defined]
    return str(url.render_as_string(hide_password=False))


def test_a_version_13_file_gets_counters_of_the_tasks_it_holds(tmp_path: Path) -> None:
    """Migration v14 fills the counters from the rows already there."""
    path = tmp_path / "tasks.sqlite"
    old = Database(SqliteBackend(path), migrations=MIGRATIONS[:13])
    old.ensure_ready()
    statuses = ["pending", "success", "success", "failed", "done"]  # "done": a foreign row
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 13
        assert "task_counts" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        conn.executemany(
            "INSERT INTO tasks (task_id, backend, platform, status, shots, submit_time, "
            "update_time, metadata_json) VALUES (?, 'ibm:dev', 'ibm', ?, 1, "
            "'2025-01-01T00:00:00.000000+00:00', '2025-01-01T00:00:00.000000+00:00', '{}')",
            [(f"t{i}", s) for i, s in enumerate(statuses)],
        )
    old.dispose()
    with TaskStore(tmp_path) as store:
        assert store.schema_version >= 14
        assert store.count_by("status") == {"done": 1, "failed": 1, "pending": 1, "success": 2}
        store.save(TaskInfo("t9", "ibm:dev", status=TaskStatus.SUCCESS))
        assert store.count(status="success") == 3
        assert_counts_match(store)


def test_cli_doctor_repair_counts_recounts_and_then_reports_ok(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    store.save(TaskInfo("a", "ibm:dev", status=TaskStatus.RUNNING))

    def tamper(conn: Any) -> None:
        conn.execute(update(task_counts).values(n=5))

    store._db.write(tamper)
    where = (
        ["--url", str(store_location["url"])]
        if "url" in store_location
        else ["--cache-dir", str(store_location["cache_dir"])]
    )
    main(["doctor", *where])
    assert "doctor --repair-counts" in capsys.readouterr().out
    main(["doctor", "--repair-counts", *where])
    out = capsys.readouterr().out
    assert "repaired  counters  running: 5 -> 1" in out
    assert re.search(r"OK\s+counters", out)
    assert store.count_by("status") == {"running": 1}
