"""The error paths a user can reach but the other tests did not: each one raised for
real, against a real SQLite file or server database, with nothing changed behind it."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from uniqc_taskstore import (
    DatabaseBusyError,
    DatabaseError,
    ForeignDatabaseError,
    MigrationError,
    StoreLocationError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.migrator import load_migrations

SERVERS = ("postgresql", "mysql")


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def own_location(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> Iterator[tuple[TaskStore, str]]:
    """A store on a database of this test's own (it will be damaged), and a plain URL to it."""
    kind: str = request.param
    if kind == "sqlite":
        store = TaskStore(tmp_path)
        url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    else:
        url = fresh_database_url(kind)
        store = TaskStore.from_url(url)
    with store:
        yield store, url


# -- the generic DatabaseError -----------------------------------------------------------------


@pytest.mark.parametrize("own_location", ["sqlite", *SERVERS], indirect=True)
def test_a_driver_error_with_no_better_name_is_a_plain_database_error(
    own_location: tuple[TaskStore, str],
) -> None:
    # A table dropped behind the store's back: no more precise error fits.
    store, url = own_location
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    store.save(task)
    _execute(url, "DROP TABLE task_shards")
    with pytest.raises(DatabaseError) as caught:
        store.get_shards(task.task_id)
    assert type(caught.value) is DatabaseError
    assert "task_shards" in str(caught.value)


# -- foreign stamps on a server ----------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_server_database_stamped_by_another_application_is_refused_untouched(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    with TaskStore.from_url(url) as store:
        store.save(TaskInfo("theirs", "dummy"))
    _execute(url, "UPDATE uniqc_schema SET application_id = 1")
    with pytest.raises(ForeignDatabaseError, match="0x00000001"):
        TaskStore.from_url(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT application_id FROM uniqc_schema")).scalar() == 1
            ids = conn.execute(text("SELECT task_id FROM tasks")).scalars().all()
            assert [i.decode() if isinstance(i, bytes) else i for i in ids] == ["theirs"]
    finally:
        engine.dispose()


# -- bad migration files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [["v0001_a.py", "v0003_c.py"], ["v0001_a.py", "v0001_b.py"], ["v0002_b.py"]],
    ids=["gap", "duplicate", "not-from-one"],
)
def test_migration_files_not_numbered_one_to_n_are_refused(
    tmp_path: Path, names: list[str]
) -> None:
    for name in names:
        (tmp_path / name).write_text('def upgrade(conn):\n    """Nothing."""\n')
    with pytest.raises(MigrationError, match=r"not numbered 1\.\.n"):
        load_migrations(tmp_path)


# -- a parent deleted while its shard is saved ---------------------------------------------------


def test_shard_whose_task_vanishes_mid_save_is_task_not_found_and_nothing_changes(
    tmp_path: Path,
) -> None:
    # A trigger deletes the parent between the store's check and its insert, as a
    # concurrent writer on another connection could on a database without row locks.
    with TaskStore(tmp_path) as store:
        task = TaskInfo(generate_uniqc_task_id(), "dummy")
        store.save(task, [TaskShard(task.task_id, 0, "job-0", "dummy")])
        db = sqlite3.connect(tmp_path / "tasks.sqlite")
        with db:
            db.execute(
                "CREATE TRIGGER vanish BEFORE INSERT ON task_shards "
                "BEGIN DELETE FROM tasks WHERE task_id = NEW.uniqc_task_id; END"
            )
        db.close()
        with pytest.raises(TaskNotFoundError, match="disappeared"):
            store.save_shard(TaskShard(task.task_id, 1, "job-1", "dummy", sub_index_offset=1))
        assert store.get(task.task_id) is not None
        assert [s.platform_task_id for s in store.get_shards(task.task_id)] == ["job-0"]


# -- an unusable location, even for root -----------------------------------------------------------


def test_directory_where_the_file_should_be_is_refused_without_fallback(tmp_path: Path) -> None:
    # Permissions do not stop root; a directory named tasks.sqlite does.
    (tmp_path / "tasks.sqlite").mkdir()
    (tmp_path / "tasks.sqlite" / "keep").write_text("mine")
    temp_before = sorted(p.name for p in Path(tempfile.gettempdir()).iterdir())
    with pytest.raises(StoreLocationError, match="UNIQC_CACHE_DIR") as caught:
        TaskStore(tmp_path)
    assert str(tmp_path / "tasks.sqlite") in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.sqlite"]
    assert [p.name for p in (tmp_path / "tasks.sqlite").iterdir()] == ["keep"]
    assert sorted(p.name for p in Path(tempfile.gettempdir()).iterdir()) == temp_before


# -- a file locked by another process -----------------------------------------------------------


def test_file_locked_by_another_writer_is_busy_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver's own wait is shortened so that the store's retries run out quickly.
    monkeypatch.setenv("UNIQC_BUSY_TIMEOUT", "0.02")
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("before", "dummy"))
        other = sqlite3.connect(tmp_path / "tasks.sqlite", isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(DatabaseBusyError) as caught:
                store.save(TaskInfo("during", "dummy"))
            assert caught.value.retryable
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [t.task_id for t in store.list()] == ["before"]
        store.save(TaskInfo("after", "dummy"))
        assert store.count() == 2


def test_files_not_named_like_a_step_are_not_migrations(tmp_path: Path) -> None:
    (tmp_path / "v0001_first.py").write_text('def upgrade(conn):\n    """One."""\n')
    for stray in ("v12_draft.py", "v0002-typo.py", "vendored.py"):
        (tmp_path / stray).write_text("raise SystemExit('never imported')\n")
    assert [version for version, _ in load_migrations(tmp_path)] == [1]
