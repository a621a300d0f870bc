"""Backups at their edges (issue 17, item 10): a leftover of a crashed backup does not
block the next one, backups into a directory within one second each get a file, and a
copy is trusted only when ``integrity_check`` (not just ``quick_check``) passes: a file
one byte short is neither kept as a backup, nor opened as a store, nor named as the
copy to restore."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from uniqc_taskstore import CorruptDatabaseError, TaskInfo, TaskStore, generate_uniqc_task_id
from uniqc_taskstore import maintenance as maintenance_module
from uniqc_taskstore.backends.sqlite import SqliteBackend, copy_database
from uniqc_taskstore.maintenance import Location, backup, diagnose


def filled(directory: Path, tasks: int = 50) -> TaskStore:
    store = TaskStore(directory)
    for _ in range(tasks):
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"pad": "x" * 200}))
    return store


def one_byte_short(source: Path, target: Path) -> Path:
    """A copy of the SQLite file ``source`` that lost its last byte (as a copy to a disk
    that filled up would): ``quick_check`` passes, ``integrity_check`` does not."""
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    target.write_bytes(source.read_bytes()[:-1])
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
    conn.close()
    return target


def test_a_partial_file_left_by_a_crashed_backup_does_not_block_the_next(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "nightly.sqlite"
    leftover = tmp_path / "nightly.sqlite.partial"
    leftover.write_bytes(b"half a backup")
    with filled(tmp_path / "cache") as store:
        report = backup(store, dest)
        assert report.path == dest
        with TaskStore(store.cache_dir, create=False) as again:
            assert again.count() == 50
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (50,)
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "nightly.sqlite",
        "nightly.sqlite.partial",  # not ours to delete: left as it was
    ]


def test_backups_into_a_directory_within_one_second_each_get_their_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance_module, "utc_now", lambda: "2026-05-01T12:00:00.000000+00:00")
    (tmp_path / "backups").mkdir()
    with filled(tmp_path / "cache") as store:
        paths = [backup(store, tmp_path / "backups").path for _ in range(3)]
        threads = [
            threading.Thread(target=lambda: paths.append(backup(store, tmp_path / "backups").path))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(set(paths)) == 6
    assert paths[:3] == [
        tmp_path / "backups" / name
        for name in (
            "tasks-2026-05-01T120000Z.sqlite",
            "tasks-2026-05-01T120000Z-2.sqlite",
            "tasks-2026-05-01T120000Z-3.sqlite",
        )
    ]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(p.name for p in paths)


def test_a_copy_that_fails_integrity_check_is_not_kept(tmp_path: Path) -> None:
    with filled(tmp_path / "cache") as store:
        assert store.db_path is not None
        short = one_byte_short(store.db_path, tmp_path / "short.sqlite")
    with pytest.raises(CorruptDatabaseError, match="failed its check"):
        copy_database(short, tmp_path / "backup.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "short.sqlite"]


def test_a_store_file_one_byte_short_is_refused_and_left_untouched(tmp_path: Path) -> None:
    with filled(tmp_path / "cache") as store:
        assert store.db_path is not None
        (tmp_path / "restored").mkdir(mode=0o700)
        short = one_byte_short(store.db_path, tmp_path / "restored" / "tasks.sqlite")
    before = short.read_bytes()
    with pytest.raises(CorruptDatabaseError, match="not a whole number of 4,096-byte pages"):
        TaskStore(tmp_path / "restored")
    assert short.read_bytes() == before
    assert [p.name for p in (tmp_path / "restored").iterdir()] == ["tasks.sqlite"]
    failed = [c for c in diagnose(Location(SqliteBackend(short), "test")) if c.status == "fail"]
    assert failed
    assert "cut short" in failed[0].message


def test_doctor_names_only_a_kept_copy_that_passes_integrity_check(tmp_path: Path) -> None:
    with filled(tmp_path / "cache") as store:
        path = store.db_path
        assert path is not None
        older = path.with_name(f"{path.name}.v5-20250101T000000Z.bak")
        older.write_bytes(path.read_bytes())
        newer = one_byte_short(path, path.with_name(f"{path.name}.v6-20250102T000000Z.bak"))
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = b"\x55" * (4096 * 3)  # pages inside the tables
    path.write_bytes(bytes(data))
    fix = next(c for c in diagnose(Location(SqliteBackend(path), "t")) if c.status == "fail").fix
    assert f"then cp {older} {path}" in (fix or "")
    assert str(newer) not in (fix or "")
    newer.unlink()
    older.write_bytes(older.read_bytes()[:-1])
    fix = next(c for c in diagnose(Location(SqliteBackend(path), "t")) if c.status == "fail").fix
    assert "the 1 kept before migrations fail integrity_check" in (fix or "")
