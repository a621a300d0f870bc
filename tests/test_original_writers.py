"""Rows the original implementation writes into a file this store has upgraded.

An SDK still on the original code (schema 5) may share ``~/.uniqc/cache`` with us: it
accepts a file of a newer version and writes with its own SQL, which knows nothing of
the ``platform`` (v10) and ``name`` (v8) columns. The statements below are the ones
the original's ``TaskStore.save`` runs (unified-quantum 0.1.1,
``uniqc/backend_adapter/task/store.py``), through plain :mod:`sqlite3`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from uniqc_taskstore import TaskInfo, TaskStore
from uniqc_taskstore.model import legacy_task_name
from uniqc_taskstore.transfer import copy_tasks

ORIGINAL_SAVE = """
                INSERT INTO tasks
                    (task_id, backend, status, shots, submit_time, update_time,
                     result_json, metadata_json, error_message)
                VALUES
                    (:task_id, :backend, :status, :shots, :submit_time, :update_time,
                     :result_json, :metadata_json, :error_message)
                ON CONFLICT(task_id) DO UPDATE SET
                    backend       = excluded.backend,
                    status        = excluded.status,
                    shots         = excluded.shots,
                    update_time   = excluded.update_time,
                    result_json   = excluded.result_json,
                    metadata_json = excluded.metadata_json,
                    error_message = excluded.error_message
                """
ORIGINAL_ARCHIVE = (
    "INSERT INTO archived_tasks (task_id, backend, status, shots, submit_time, update_time,"
    " result_json, metadata_json, error_message, archived_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def original_save(path: Path, task_id: str, backend: str, metadata: Any) -> None:
    """What the original's ``save`` does: its own connection, its own statement."""
    now = datetime.now(UTC).isoformat()
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        conn.execute(
            ORIGINAL_SAVE,
            {
                "task_id": task_id,
                "backend": backend,
                "status": "running",
                "shots": 1000,
                "submit_time": now,
                "update_time": now,
                "result_json": None,
                "metadata_json": json.dumps(metadata, ensure_ascii=False),
                "error_message": None,
            },
        )
        conn.commit()
    finally:
        conn.close()


def new_id() -> str:
    return "uqt_" + uuid.uuid4().hex


def test_tasks_the_original_saves_are_found_by_every_filter(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path) as store:
        path = tmp_path / "tasks.sqlite"
        ours = new_id()
        store.save(TaskInfo(ours, "dummy:other"))
        # Written while our store is open (a gateway), and after: both are found.
        first, second, renamed = new_id(), new_id(), new_id()
        original_save(path, first, "dummy:sim", {"task_name": "bell", "shots": 3})
        assert {t.task_id for t in store.list(backend="dummy")} == {ours, first}
        original_save(path, second, "dummy", {})
        original_save(path, renamed, "originq:WK_C180", {"task_name": "ghz"})
        # The original saves it again (ON CONFLICT DO UPDATE): a new backend and name.
        original_save(path, renamed, "ibm:kyiv", {"task_name": "ghz-2"})
        assert {t.task_id for t in store.list(backend="dummy")} == {ours, first, second}
        assert store.count(backend="dummy") == 3
        assert [t.task_id for t in store.list(name="bell")] == [first]
        assert [t.task_id for t in store.list(search="bell")] == [first]
        assert [t.task_id for t in store.list(backend="ibm")] == [renamed]
        assert store.count_by("platform") == {"dummy": 3, "ibm": 1}
        assert store.list(backend="originq") == []
        # A name is kept once given (ours, or the first the original's metadata gave).
        assert [t.task_id for t in store.list(name="ghz")] == [renamed]
        assert store.get(first) == store.list(name="bell")[0]

        conn = sqlite3.connect(str(path))
        with conn:
            conn.execute(
                ORIGINAL_ARCHIVE,
                (
                    new_id(),
                    "quafu:sx",
                    "success",
                    10,
                    "2026-01-01T00:00:00+00:00",
                    "2026-01-01T00:00:00+00:00",
                    None,
                    '{"task_name": "old"}',
                    None,
                    "2026-01-02T00:00:00+00:00",
                ),
            )
        conn.close()
        assert [t.name for t in store.list_archived(backend="quafu")] == ["old"]


def test_rows_the_original_wrote_before_the_upgrade_are_repaired_when_it_runs(
    tmp_path: Path,
) -> None:
    TaskStore(cache_dir=tmp_path).close()
    path = tmp_path / "tasks.sqlite"
    conn = sqlite3.connect(str(path))
    with conn:
        # As the file was at version 12, before the triggers.
        triggers = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ]
        assert triggers
        for trigger in triggers:
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("PRAGMA user_version = 12")
    conn.close()
    task_id = new_id()
    original_save(path, task_id, "dummy:sim", {"task_name": "bell"})
    with TaskStore(cache_dir=tmp_path) as store:
        assert [t.task_id for t in store.list(backend="dummy", name="bell")] == [task_id]


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "sqlite"])
def test_copy_carries_derived_columns_never_nulls(
    tmp_path: Path, fresh_database_url: Callable[[str], str], kind: str
) -> None:
    source_dir = tmp_path / "source"
    with TaskStore(cache_dir=source_dir) as source:
        task_id = new_id()
        original_save(source_dir / "tasks.sqlite", task_id, "dummy:sim", {"task_name": "bell"})
        # Even a row whose platform reached the file NULL some other way. (Its name is
        # the task's own column once the row has a search key: a NULL name there is a
        # task saved without one, which no edit of its metadata names.)
        conn = sqlite3.connect(str(source_dir / "tasks.sqlite"))
        with conn:
            conn.execute("UPDATE tasks SET platform = NULL")
        conn.close()
        url = (
            f"sqlite:///{tmp_path / 'copy.sqlite'}"
            if kind == "sqlite"
            else fresh_database_url(kind)
        )
        with TaskStore(url=url) as destination:
            copy_tasks(source, destination)
            assert [t.task_id for t in destination.list(backend="dummy", name="bell")] == [task_id]
        engine = create_engine(url)
        with engine.connect() as raw:
            assert [
                tuple(v.decode() if isinstance(v, bytes) else v for v in row)  # MariaDB: binary
                for row in raw.execute(text("SELECT platform, name FROM tasks"))
            ] == [("dummy", "bell")]
        engine.dispose()


_NAMES = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", " ", "\u3000", "\x1c", "a\x00b", "x" * 255, "x" * 256, " bell "]),
)


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(_NAMES, st.integers(), st.none(), st.lists(st.text(max_size=3))))
def test_the_trigger_reads_a_name_as_the_store_does(tmp_path_factory: Any, name: Any) -> None:
    path = tmp_path_factory.getbasetemp() / "trigger-names" / "tasks.sqlite"
    if not path.exists():
        TaskStore(cache_dir=path.parent).close()
    task_id = new_id()
    original_save(path, task_id, "dummy", {"task_name": name})
    conn = sqlite3.connect(str(path))
    try:
        stored = conn.execute("SELECT name FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    finally:
        conn.close()
    assert stored == (legacy_task_name({"task_name": name}),)
