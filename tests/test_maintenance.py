"""``uniqc-tasks backup`` / ``doctor`` / ``migrate``, and the copy kept before a migration."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

import uniqc_taskstore.store as store_module
from conftest import RawDatabase
from legacy_files import build_legacy_file, dump, pragma
from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    BackupUnavailableError,
    MigrationError,
    TaskInfo,
    TaskShard,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.backends.sqlite import SqliteBackend, migration_backups
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, main
from uniqc_taskstore.maintenance import backup
from uniqc_taskstore.migrator import MIGRATIONS, migrate

DOCTOR_WARN, DOCTOR_FAIL = 1, 3


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", store_location["url"]]
    return ["--cache-dir", str(store_location["cache_dir"])]


def tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with a digest of its bytes."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# -- backup ---------------------------------------------------------------------------------


def test_backup_while_writers_run_is_a_consistent_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    stop = threading.Event()
    written = {0: 0, 1: 0}

    def writer(number: int) -> None:
        with TaskStore(cache) as store:
            while not stop.is_set():
                task = TaskInfo(
                    generate_uniqc_task_id(),
                    "dummy",
                    tags={"w": str(number), "seq": f"{written[number]:06d}"},
                )
                shards = [TaskShard(task.task_id, i, f"j{i}", "dummy", 1, i) for i in range(3)]
                store.save(task, shards)  # task, tags and shards in one transaction
                written[number] += 1

    TaskStore(cache).close()
    threads = [threading.Thread(target=writer, args=(n,)) for n in written]
    for thread in threads:
        thread.start()
    try:
        while min(written.values()) < 20 and all(t.is_alive() for t in threads):
            stop.wait(0.01)
        code = main(["backup", str(tmp_path / "copy.sqlite"), "--cache-dir", str(cache)])
        during = dict(written)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert code == EXIT_OK, capsys.readouterr().err
    copy = tmp_path / "copy.sqlite"
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    raw = sqlite3.connect(copy)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        raw.close()
    restored = tmp_path / "restored"
    restored.mkdir()
    os.replace(copy, restored / "tasks.sqlite")
    with TaskStore(restored, create=False) as store:
        tasks = store.list()
        for number in written:
            seq = sorted(int(t.tags["seq"]) for t in tasks if t.tags["w"] == str(number))
            assert seq == list(range(len(seq)))  # a prefix of each writer's work
            assert 20 <= len(seq) <= during[number] + 1
        assert all(len(store.get_shards(t.task_id)) == 3 for t in tasks)


def test_backup_never_replaces_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    TaskStore(tmp_path / "cache").close()
    existing = tmp_path / "precious"
    existing.write_text("keep me")
    assert main(["backup", str(existing), "--cache-dir", str(tmp_path / "cache")]) == EXIT_REFUSED
    assert existing.read_text() == "keep me"
    assert "never replaces" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "tool"),
    [
        ("postgresql+psycopg://me:s3cret@db.example:5433/quantum", "pg_dump"),
        ("mysql+pymysql://me:s3cret@db.example/quantum", "mariadb-dump"),
    ],
)
def test_backup_of_a_server_names_its_dump_command_without_the_password(
    url: str, tool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup", "q.dump", "--url", url]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert tool in err
    assert "db.example" in err
    assert "quantum" in err
    assert "s3cret" not in err
    assert err.count("\n") == 1


def test_backup_of_a_server_store_raises_with_its_dump_command(
    store: TaskStore, tmp_path: Path
) -> None:
    if store.db_path is not None:
        pytest.skip("SQLite files are backed up by copying")
    with pytest.raises(BackupUnavailableError) as caught:
        backup(store, tmp_path / "x.dump")
    assert caught.value.command is not None
    assert caught.value.command.split()[0] in ("pg_dump", "mariadb-dump")


# -- doctor ---------------------------------------------------------------------------------


def test_doctor_passes_a_healthy_store_on_every_database(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
    assert main(["doctor", *where(store_location)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "schema version" in out
    assert "FAIL" not in out
    assert "WARN" not in out
    assert main(["doctor", *where(store_location), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_doctor_names_a_row_the_store_cannot_read_and_how_to_be_rid_of_it(
    store: TaskStore,
    store_location: dict[str, Any],
    raw_database: RawDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = TaskInfo("good-task", "dummy"), TaskInfo("bad-task", "dummy")
    store.save_many([good, bad])
    with raw_database.engine.begin() as conn:  # metadata that is no JSON object
        conn.execute(text("UPDATE tasks SET metadata_json = '[1]' WHERE task_id = 'bad-task'"))
    assert main(["doctor", *where(store_location)]) == DOCTOR_WARN
    problems = [line for line in capsys.readouterr().out.splitlines() if "bad-task" in line]
    assert len(problems) == 1
    assert "metadata_json" in problems[0]
    assert "uniqc-tasks delete bad-task" in problems[0]
    assert main(["doctor", "--quick", *where(store_location)]) == EXIT_OK  # no row scan


def test_doctor_says_where_the_store_is_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["doctor"])
    assert f"the default, {store_module.DEFAULT_CACHE_DIR}" in capsys.readouterr().out
    monkeypatch.setenv("UNIQC_CACHE_DIR", str(tmp_path / "env"))
    main(["doctor"])
    assert f"{tmp_path / 'env'}/tasks.sqlite (from UNIQC_CACHE_DIR)" in capsys.readouterr().out
    main(["doctor", "--cache-dir", str(tmp_path / "flag")])
    assert "(from --cache-dir)" in capsys.readouterr().out


def _foreign(directory: Path) -> None:
    conn = sqlite3.connect(directory / "tasks.sqlite")
    conn.execute("CREATE TABLE notes (x)")
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()


def _garbage(directory: Path) -> None:
    (directory / "tasks.sqlite").write_bytes(b"this is not a database" * 50)


def _too_new(directory: Path) -> None:
    TaskStore(directory).close()
    conn = sqlite3.connect(directory / "tasks.sqlite")
    conn.execute(f"PRAGMA user_version = {CURRENT_SCHEMA_VERSION + 1}")
    conn.close()


def _damaged(directory: Path) -> None:
    with TaskStore(directory) as store:
        for _ in range(300):
            store.save(TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"pad": "x" * 500}))
    path = directory / "tasks.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = b"\x55" * (4096 * 3)  # overwrite pages inside the tables
    path.write_bytes(bytes(data))


BROKEN: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    "missing": (None, "does not exist"),
    "foreign": (_foreign, "application_id"),
    "not_a_database": (_garbage, "not a SQLite database"),
    "too_new": (_too_new, "pip install -U uniqc-taskstore"),
    "damaged": (_damaged, "mv "),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_doctor_explains_a_store_that_will_not_open_and_changes_nothing(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = BROKEN[case]
    directory = tmp_path / "cache"
    if make is not None:
        directory.mkdir(mode=0o700)
        make(directory)
    before = tree(tmp_path)
    assert main(["doctor", "--cache-dir", str(directory)]) == DOCTOR_FAIL
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if not line.startswith("OK")]
    assert problems
    assert all("-> fix: " in line for line in problems)
    assert expected in out
    assert tree(tmp_path) == before


def test_doctor_explains_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    directory = tmp_path / "cache"
    TaskStore(directory).close()
    directory.chmod(0o500)
    try:
        assert main(["doctor", "--cache-dir", str(directory)]) == DOCTOR_FAIL
        assert f"fix: chmod u+rwx {directory}" in capsys.readouterr().out
    finally:
        directory.chmod(0o700)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2", "cannot connect"),
        ("postgresql+pg8000://postgres@127.0.0.1/x", "pg8000"),
    ],
    ids=["server_down", "missing_driver"],
)
def test_doctor_explains_an_unreachable_server(
    url: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--url", url]) == DOCTOR_FAIL
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert expected in out


def test_doctor_warns_of_pending_migrations_and_loose_modes_without_fixing_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 5)
    legacy.path.chmod(0o644)
    before = tree(tmp_path)
    assert main(["doctor", "--cache-dir", str(legacy.directory)]) == DOCTOR_WARN
    out = capsys.readouterr().out
    assert f"schema version 5 on disk, {CURRENT_SCHEMA_VERSION} in this code" in out
    assert f"fix: uniqc-tasks migrate --cache-dir {legacy.directory}" in out
    assert f"fix: chmod 600 {legacy.path}" in out
    assert tree(tmp_path) == before


# -- migrate and the copy kept before it ----------------------------------------------------


def test_migrate_lists_pending_steps_then_applies_them_keeping_a_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 5)
    old = dump(legacy.path)
    before = tree(tmp_path)
    args = ["migrate", "--cache-dir", str(legacy.directory)]

    assert main([*args, "--dry-run", "--json"]) == EXIT_OK
    plan = json.loads(capsys.readouterr().out)
    assert [s["version"] for s in plan["pending"]] == list(range(6, CURRENT_SCHEMA_VERSION + 1))
    assert all(s["summary"] for s in plan["pending"])
    assert tree(tmp_path) == before

    assert main(args) == EXIT_OK
    out = capsys.readouterr().out
    assert f"schema version 5 -> {CURRENT_SCHEMA_VERSION}" in out
    (copy,) = migration_backups(legacy.path)
    assert str(copy) in out
    assert copy.name.startswith("tasks.sqlite.v5-")
    assert pragma(copy, "user_version") == 5
    assert dump(copy) == old
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    assert pragma(legacy.path, "user_version") == CURRENT_SCHEMA_VERSION

    assert main(args) == EXIT_OK
    assert "nothing to do" in capsys.readouterr().out


def test_failed_migration_keeps_the_copy_and_names_it(tmp_path: Path) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 5)
    old = dump(legacy.path)

    def failing(conn: Connection) -> None:
        raise RuntimeError("injected")

    backend = SqliteBackend(legacy.path)
    engine = backend.create_engine()
    try:
        with pytest.raises(MigrationError) as caught:
            migrate(backend, engine, [*MIGRATIONS[:5], (6, failing)])
    finally:
        engine.dispose()
    (copy,) = migration_backups(legacy.path)
    assert str(copy) in str(caught.value)
    assert dump(copy) == old
    assert pragma(copy, "user_version") == 5


def test_only_the_newest_three_copies_are_kept(tmp_path: Path) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 4)
    older = [legacy.path.with_name(f"tasks.sqlite.v{v}-2020010{v}T000000Z.bak") for v in (1, 2, 3)]
    for path in older:
        path.write_bytes(b"")
    with TaskStore(legacy.directory) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
    kept = migration_backups(legacy.path)
    assert kept[:2] == older[1:]
    assert len(kept) == 3
    assert kept[2].name.startswith("tasks.sqlite.v4-")


def test_opening_a_current_or_fresh_store_keeps_no_copy(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "cache") as store:
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
    TaskStore(tmp_path / "cache").close()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if ".bak" in p.name) == []
