"""A database another writer keeps locked: ``DatabaseBusyError`` after the retry budget.

The budget is ``UNIQC_BUSY_TIMEOUT`` (seconds one attempt waits for a lock: SQLite's
busy wait, PostgreSQL's ``lock_timeout``, MariaDB's ``innodb_lock_wait_timeout``) and
``UNIQC_BUSY_ATTEMPTS``, read when the first store on a location opens. A raw
connection holds the lock (SQLite ``BEGIN IMMEDIATE``, a row ``FOR UPDATE`` on the
servers); the call fails as retryable, writes nothing, and succeeds once released.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select

from legacy_files import DATABASE_FILENAME, build_legacy_file, pragma
from uniqc_taskstore import (
    DatabaseBusyError,
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.schema import tasks

ATTEMPTS = 2


@pytest.fixture
def low_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIQC_BUSY_TIMEOUT", "0.05")
    monkeypatch.setenv("UNIQC_BUSY_ATTEMPTS", str(ATTEMPTS))


def make_task(**fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend="originq:WK_C180", **fields)


@pytest.fixture
def busy_store(
    low_budget: None,
    backend_kind: str,
    tmp_path: Path,
    fresh_database_url: Callable[[str], str],
) -> Iterator[tuple[TaskStore, str]]:
    """A store opened under the low budget, and the URL a raw lock holder connects to."""
    if backend_kind == "sqlite":
        url = f"sqlite:///{tmp_path / DATABASE_FILENAME}"
    else:
        url = fresh_database_url(backend_kind)
    with TaskStore(url=url) as store:
        yield store, url


@contextmanager
def row_locked(url: str, task_id: str) -> Iterator[None]:
    """Hold the write lock another writer would: the whole SQLite file, or the task's
    row ``FOR UPDATE`` on a server."""
    if url.startswith("sqlite"):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            locked = conn.execute(
                select(tasks.c.task_id).where(tasks.c.task_id == task_id).with_for_update()
            ).scalar()
            assert locked == task_id
            yield
    finally:
        engine.dispose()


def count_attempts(store: TaskStore) -> list[str]:
    """Every connection the store's pool hands out, appended as it happens: each attempt
    takes one, whether it runs through SQLAlchemy's execution or on the driver
    connection (the batched server writes, which SQLAlchemy's ``handle_error`` event
    does not see)."""
    checkouts: list[str] = []
    event.listen(store._db.engine, "checkout", lambda *args: checkouts.append(repr(args[0])))
    return checkouts


def test_held_lock_raises_retryable_busy_error_writing_nothing(
    busy_store: tuple[TaskStore, str],
) -> None:
    store, url = busy_store
    task = make_task(shots=100)
    store.save(task)
    attempts = count_attempts(store)
    changed = TaskInfo(task.task_id, task.backend, shots=200)

    with row_locked(url, task.task_id):
        with pytest.raises(DatabaseBusyError) as caught:
            store.save(changed)
        assert len(attempts) == ATTEMPTS

    error = caught.value
    assert error.retryable
    assert "nothing was written" in str(error)
    assert "UNIQC_BUSY_TIMEOUT" in str(error)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.shots == 100
    store.save(changed)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.shots == 200


def test_every_write_path_retries_a_held_lock_on_a_fresh_attempt(
    busy_store: tuple[TaskStore, str],
) -> None:
    """Each attempt checks a connection out of the pool anew (nothing on the engine
    watches statements here, so SQLite's writes run on the driver connection)."""
    store, url = busy_store
    task = make_task()
    store.save(task, [TaskShard(task.task_id, 0, "job-0", task.backend)])
    checkouts: list[str] = []
    event.listen(store._db.engine, "checkout", lambda *_: checkouts.append("checkout"))
    writes: list[Callable[[], object]] = [
        lambda: store.save(TaskInfo(task.task_id, task.backend, shots=7)),
        lambda: store.save_shard(TaskShard(task.task_id, 1, "job-1", task.backend, 1, 1)),
        lambda: store.update_shard(task.task_id, 0, status="running"),
    ]
    with row_locked(url, task.task_id):
        for write in writes:
            checkouts.clear()
            with pytest.raises(DatabaseBusyError):
                write()
            assert len(checkouts) == ATTEMPTS
    for write in writes:
        write()
    assert [s.shard_index for s in store.get_shards(task.task_id)] == [0, 1]


def test_lock_held_while_switching_to_wal_is_busy_and_changes_nothing(
    low_budget: None, tmp_path: Path
) -> None:
    legacy = build_legacy_file(tmp_path, 5)
    path = tmp_path / DATABASE_FILENAME
    rollback_journal = sqlite3.connect(path, isolation_level=None)
    try:  # as the oldest files are: not yet in WAL mode
        assert rollback_journal.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    finally:
        rollback_journal.close()
    before = path.read_bytes()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusyError, match="WAL") as caught:
            TaskStore(cache_dir=tmp_path)
        assert caught.value.retryable
        assert "UNIQC_BUSY_TIMEOUT" in str(caught.value)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert path.read_bytes() == before
    assert pragma(path, "user_version") == 5

    with TaskStore(cache_dir=tmp_path) as store:
        assert store.count() == len(legacy.live)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UNIQC_BUSY_TIMEOUT", "soon"),
        ("UNIQC_BUSY_TIMEOUT", "-1"),
        ("UNIQC_BUSY_ATTEMPTS", "0"),
        ("UNIQC_BUSY_ATTEMPTS", "2.5"),
    ],
)
def test_unusable_busy_setting_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInputError, match=name) as caught:
        TaskStore(cache_dir=tmp_path)
    assert caught.value.field == name
