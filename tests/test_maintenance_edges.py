"""The library side of backup, doctor and migrate (``uniqc_taskstore.maintenance``) at
its edges: where a store is looked for, backups that cannot be made, stores that are
missing, empty or too new, and the doctor's view of in-memory stores and kept copies."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    BackupUnavailableError,
    DatabaseError,
    InvalidInputError,
    SchemaTooNewError,
    StoreNotFoundError,
    TaskInfo,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.backends import backend_for_url
from uniqc_taskstore.backends.server import ServerBackend
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.maintenance import (
    Location,
    backup,
    diagnose,
    locate,
    native_backup_command,
    pending_migrations,
    schema_version_at,
)
from uniqc_taskstore.store import URL_ENV


def filled_store(directory: Path) -> TaskStore:
    store = TaskStore(directory)
    store.save(TaskInfo(generate_uniqc_task_id(), "originq:WK_C180"))
    return store


def stamp_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def test_locate_refuses_both_a_cache_dir_and_a_url(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="at most one location"):
        locate(tmp_path, "sqlite:///x.sqlite")


def test_locate_uses_the_url_variable_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, f"sqlite:///{tmp_path / 'env.sqlite'}")
    found = locate()
    assert found.reason == URL_ENV
    assert isinstance(found.backend, SqliteBackend)
    assert found.backend.path == tmp_path / "env.sqlite"


def test_backup_of_an_in_memory_store_is_refused_with_the_export_alternative(
    tmp_path: Path,
) -> None:
    with TaskStore.in_memory() as store, pytest.raises(BackupUnavailableError, match="export"):
        backup(store, tmp_path / "copy.sqlite")
    assert list(tmp_path.iterdir()) == []


def test_backup_into_a_directory_writes_a_dated_file_inside_it(tmp_path: Path) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    with filled_store(tmp_path / "cache") as store:
        report = backup(store, target)
    (made,) = target.iterdir()
    assert report.path == made
    assert made.name.startswith("tasks-")
    assert made.name.endswith("Z.sqlite")
    with TaskStore.from_url(f"sqlite:///{made}", create=False) as copy:
        assert copy.count() == 1


def test_backup_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with (
        filled_store(tmp_path / "cache") as store,
        pytest.raises(InvalidInputError, match="directory does not exist"),
    ):
        backup(store, tmp_path / "nowhere" / "copy.sqlite")
    assert not (tmp_path / "nowhere").exists()


def test_backup_that_cannot_be_written_names_the_target(tmp_path: Path) -> None:
    # /proc takes no new files, even from root.
    with (
        filled_store(tmp_path / "cache") as store,
        pytest.raises(InvalidInputError, match="cannot be written"),
    ):
        backup(store, "/proc/uniqc-backup.sqlite")


def test_native_backup_command_names_the_postgresql_schema() -> None:
    backend = backend_for_url("postgresql+psycopg://me@db.example:5433/tasks", schema="lab")
    assert isinstance(backend, ServerBackend)
    command = native_backup_command(backend, Path("/backups/tasks.dump"))
    assert "--schema=lab" in command
    assert "--dbname=postgresql://me@db.example:5433/tasks" in command


def test_native_backup_command_for_mariadb_without_a_user_asks_for_none() -> None:
    backend = backend_for_url("mysql+pymysql://db.example/tasks")
    assert isinstance(backend, ServerBackend)
    command = native_backup_command(backend, Path("/backups/tasks.sql"))
    assert "--user" not in command
    assert command.endswith("tasks > /backups/tasks.sql")


def test_schema_version_of_a_missing_file_is_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        schema_version_at(SqliteBackend(tmp_path / "tasks.sqlite"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_schema_version_of_an_empty_server_database_is_store_not_found(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    with pytest.raises(StoreNotFoundError):
        schema_version_at(backend_for_url(fresh_database_url(kind)))


def test_pending_migrations_of_a_newer_store_raise_schema_too_new(tmp_path: Path) -> None:
    filled_store(tmp_path / "cache").close()
    path = tmp_path / "cache" / "tasks.sqlite"
    stamp_version(path, CURRENT_SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNewError):
        pending_migrations(SqliteBackend(path))


def test_doctor_of_an_in_memory_store_checks_nothing_on_disk() -> None:
    checks = diagnose(Location(SqliteBackend(None), "test"))
    assert [(c.name, c.status) for c in checks] == [("location", "ok"), ("file", "ok")]
    assert "in-memory" in checks[-1].message


def test_doctor_of_an_empty_file_says_there_is_no_store(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    (directory / "tasks.sqlite").touch(mode=0o600)
    checks = diagnose(Location(SqliteBackend(directory / "tasks.sqlite"), "test"))
    assert (checks[-1].name, checks[-1].status) == ("file", "fail")
    assert "no task store" in checks[-1].message


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_doctor_of_an_empty_server_database_says_it_holds_no_store(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    checks = diagnose(Location(backend_for_url(fresh_database_url(kind)), "test"))
    stamp = next(c for c in checks if c.name == "stamp")
    assert stamp.status == "fail"
    assert "no schema stamp" in stamp.message


def test_doctor_reports_the_copies_kept_before_migrations(tmp_path: Path) -> None:
    filled_store(tmp_path / "cache").close()
    path = tmp_path / "cache" / "tasks.sqlite"
    kept = path.with_name(f"{path.name}.v5-20250101T000000Z.bak")
    kept.write_bytes(path.read_bytes())
    kept.chmod(0o600)
    checks = diagnose(Location(SqliteBackend(path), "test"))
    copies = next(c for c in checks if c.name == "copies")
    assert copies.status == "ok"
    assert "1 kept before migrations" in copies.message
    assert str(kept) in copies.message


def test_doctor_of_a_file_holding_another_programs_tables_names_them(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    path = directory / "tasks.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    path.chmod(0o600)
    before = path.read_bytes()
    checks = diagnose(Location(SqliteBackend(path), "test"))
    failed = [c for c in checks if c.status == "fail"]
    assert [c.name for c in failed] == ["database"]
    assert "invoices" in failed[0].message
    assert "--cache-dir" in (failed[0].fix or "")
    assert path.read_bytes() == before


def test_schema_version_at_an_unreachable_server_is_a_database_error() -> None:
    backend = backend_for_url("postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2")
    with pytest.raises(DatabaseError, match=r"127\.0\.0\.1"):
        schema_version_at(backend)


def test_doctor_of_a_damaged_file_with_a_kept_copy_says_to_restore_that_copy(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        for _ in range(300):
            store.save(TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"pad": "x" * 500}))
    path = directory / "tasks.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    kept = path.with_name(f"{path.name}.v5-20250101T000000Z.bak")
    kept.write_bytes(path.read_bytes())
    kept.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = b"\x55" * (4096 * 3)  # pages inside the tables
    path.write_bytes(bytes(data))
    checks = diagnose(Location(SqliteBackend(path), "test"))
    failed = [c for c in checks if c.status == "fail"]
    assert failed
    assert f"then cp {kept} {path}" in (failed[0].fix or "")
