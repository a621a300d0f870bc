"""The SQLite file: whose it is, where it lives, how it is created, opened and kept private.

Files that are not ours, too new, or damaged are refused and left byte-for-byte as
they were; the directory and file are private; the location follows
``UNIQC_CACHE_DIR`` and never silently falls back elsewhere; a warm store opens no
connection and runs no ``PRAGMA`` per call. (``clear_all``: ``test_clear_all.py``.)
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

import uniqc_taskstore.store as store_module
from legacy_files import DATABASE_FILENAME, build_legacy_file, pragma
from uniqc_taskstore import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    CorruptDatabaseError,
    ForeignDatabaseError,
    SchemaTooNewError,
    StoreLocationError,
    StoreNotFoundError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.cli import main

SIDECARS = ("-wal", "-shm", "-journal")


def make_task(**fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend="originq:WK_C180", **fields)


def directory_listing(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def write_sqlite(path: Path, *statements: str) -> None:
    """A SQLite file in the default rollback-journal mode, holding what ``statements`` make."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def assert_refused_untouched(
    directory: Path, error: type[Exception], match: str | None = None
) -> pytest.ExceptionInfo[Exception]:
    """Opening ``directory`` raises ``error`` and leaves every file there as it was."""
    before = directory_listing(directory)
    with pytest.raises(error, match=match) as caught:
        TaskStore(cache_dir=directory)
    assert directory_listing(directory) == before
    for suffix in SIDECARS:
        assert not (directory / (DATABASE_FILENAME + suffix)).exists()
    return caught


# -- files that are not ours, too new, or damaged ---------------------------------------------


def test_file_with_another_application_id_is_refused_untouched(tmp_path: Path) -> None:
    write_sqlite(
        tmp_path / DATABASE_FILENAME,
        "PRAGMA application_id = 1234",
        "CREATE TABLE notes (body TEXT)",
        "INSERT INTO notes VALUES ('mine')",
    )
    caught = assert_refused_untouched(tmp_path, ForeignDatabaseError)
    assert str(tmp_path / DATABASE_FILENAME) in str(caught.value)


@pytest.mark.parametrize(
    ("user_version", "statements"),
    [
        (0, ("CREATE TABLE notes (body TEXT)",)),
        (0, ("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)",)),
        (2, ("CREATE TABLE tasks (task_id TEXT PRIMARY KEY)", "CREATE TABLE notes (body TEXT)")),
    ],
    ids=["other-tables", "a-tasks-table-at-version-0", "our-tables-and-others"],
)
def test_unstamped_file_holding_other_tables_is_refused_untouched(
    tmp_path: Path, user_version: int, statements: tuple[str, ...]
) -> None:
    write_sqlite(tmp_path / DATABASE_FILENAME, *statements, f"PRAGMA user_version = {user_version}")
    assert_refused_untouched(tmp_path, ForeignDatabaseError)


def test_file_newer_than_this_code_is_refused_naming_both_versions(tmp_path: Path) -> None:
    newer = CURRENT_SCHEMA_VERSION + 1
    with TaskStore(cache_dir=tmp_path) as store:
        store.save(make_task())
    # As a newer uniqc-taskstore would leave it: ours, WAL, one version ahead.
    conn = sqlite3.connect(tmp_path / DATABASE_FILENAME)
    try:
        conn.execute(f"PRAGMA user_version = {newer}")
    finally:
        conn.close()

    caught = assert_refused_untouched(tmp_path, SchemaTooNewError)
    error = caught.value
    assert isinstance(error, SchemaTooNewError)
    assert (error.found, error.supported) == (newer, CURRENT_SCHEMA_VERSION)
    assert str(tmp_path / DATABASE_FILENAME) in str(error)
    words = str(error).replace(str(tmp_path / DATABASE_FILENAME), "<file>")
    assert re.search(rf"\b{newer}\b", words)
    assert re.search(rf"\b{CURRENT_SCHEMA_VERSION}\b", words)
    assert pragma(tmp_path / DATABASE_FILENAME, "user_version") == newer


def _real_database_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "source" / DATABASE_FILENAME
    write_sqlite(source, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
    return source.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        lambda real: real[:50],
        lambda real: b"this is not a database, just bytes\n" * 200,
        lambda real: real[:100] + b"\xa5" * (len(real) - 100),
    ],
    ids=["truncated-to-50-bytes", "garbage-bytes", "header-then-garbage-pages"],
)
def test_damaged_file_is_refused_as_corrupt_and_left_untouched(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / DATABASE_FILENAME).write_bytes(damage(_real_database_bytes(tmp_path)))
    assert_refused_untouched(directory, CorruptDatabaseError, match="untouched")


_CRASHED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
for statement in sys.argv[2:]:
    conn.execute(statement)
os._exit(0)  # no close: the -wal and -shm stay, as after a crash or while it runs
"""


def crash_leaving_wal(path: Path, *statements: str) -> None:
    """Another program writes ``statements`` to ``path`` in WAL mode and dies, leaving
    them in the ``-wal`` file, not yet in the database file."""
    subprocess.run([sys.executable, "-c", _CRASHED_WRITER, str(path), *statements], check=True)


def file_and_wal(directory: Path) -> dict[str, bytes]:
    """The bytes of tasks.sqlite and tasks.sqlite-wal, both required to exist. (-shm is
    the WAL's shared-memory index: any reader writes its read marks there.)"""
    return {
        suffix: (directory / (DATABASE_FILENAME + suffix)).read_bytes() for suffix in ("", "-wal")
    }


def test_foreign_wal_database_is_refused_with_its_wal_left_in_place(tmp_path: Path) -> None:
    crash_leaving_wal(
        tmp_path / DATABASE_FILENAME,
        "PRAGMA application_id = 1234",
        "CREATE TABLE notes (body TEXT)",
        "INSERT INTO notes VALUES ('only in the -wal so far')",
    )
    before = file_and_wal(tmp_path)
    assert before["-wal"]

    with pytest.raises(ForeignDatabaseError, match="0x000004d2"):
        TaskStore(cache_dir=tmp_path)

    assert file_and_wal(tmp_path) == before
    assert (tmp_path / (DATABASE_FILENAME + "-shm")).exists()


def test_too_new_wal_database_is_refused_with_its_wal_left_in_place(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path) as store:
        store.save(make_task())
    newer = CURRENT_SCHEMA_VERSION + 1
    crash_leaving_wal(tmp_path / DATABASE_FILENAME, f"PRAGMA user_version = {newer}")
    before = file_and_wal(tmp_path)

    with pytest.raises(SchemaTooNewError):
        TaskStore(cache_dir=tmp_path)

    assert file_and_wal(tmp_path) == before
    assert (tmp_path / (DATABASE_FILENAME + "-shm")).exists()


def test_damaged_legacy_file_is_refused_before_it_is_switched_to_wal_or_stamped(
    tmp_path: Path,
) -> None:
    build_legacy_file(tmp_path, 3, stamped=False)
    path = tmp_path / DATABASE_FILENAME
    conn = sqlite3.connect(path, isolation_level=None)
    try:  # the oldest files use a rollback journal
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    finally:
        conn.close()
    real = path.read_bytes()
    page_size = int.from_bytes(real[16:18], "big")
    # The first page (header and table list) reads fine; the tables' pages are garbage.
    path.write_bytes(real[:page_size] + b"\xa5" * (len(real) - page_size))

    assert_refused_untouched(tmp_path, CorruptDatabaseError, match="untouched")
    assert path.read_bytes()[18:20] == b"\x01\x01"  # still a rollback-journal file
    assert pragma(path, "application_id") == 0


# -- where the file lives and how it is created --------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_new_directory_is_private_and_file_is_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "home" / ".uniqc" / "cache"
    with umask(0o022), TaskStore(cache_dir=directory) as store:
        store.save(make_task())
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / DATABASE_FILENAME).stat().st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            sidecar = directory / (DATABASE_FILENAME + suffix)
            assert sidecar.exists()
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600


def test_file_uses_a_wal_journal(tmp_path: Path) -> None:
    TaskStore(cache_dir=tmp_path).close()
    conn = sqlite3.connect(tmp_path / DATABASE_FILENAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert pragma(tmp_path / DATABASE_FILENAME, "application_id") == APPLICATION_ID
    assert pragma(tmp_path / DATABASE_FILENAME, "user_version") == CURRENT_SCHEMA_VERSION


def test_openers_switching_one_fresh_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """SQLite answers one of two connections upgrading their shared locks "database is
    locked" at once, without waiting (its busy handler would deadlock); the switch to
    WAL waits and asks again. CI once saw 1 of 8 processes opening a fresh directory
    fail here; threads race it about 1 in 100 tries, so 100 files make it show."""
    errors: list[BaseException] = []

    def open_file(path: Path, start: threading.Barrier) -> None:
        backend = SqliteBackend(path)
        engine = backend.create_engine()
        try:
            start.wait()
            backend.after_open(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    for n in range(100):
        path = tmp_path / f"{n}.sqlite"
        path.touch(mode=0o600)
        start = threading.Barrier(8)
        threads = [threading.Thread(target=open_file, args=(path, start)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()
    assert not errors, errors[0]


def test_store_follows_uniqc_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "chosen"
    monkeypatch.setenv("UNIQC_CACHE_DIR", str(chosen))
    with TaskStore() as store:
        store.save(make_task())
        assert store.db_path == chosen.resolve() / DATABASE_FILENAME
    assert (chosen / DATABASE_FILENAME).is_file()
    assert not store_module.DEFAULT_CACHE_DIR.exists()


def test_uniqc_cache_dir_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIQC_CACHE_DIR", "~/elsewhere")
    with TaskStore() as store:
        assert store.db_path == Path.home().resolve() / "elsewhere" / DATABASE_FILENAME


def test_default_location_is_uniqc_cache_under_home() -> None:
    with TaskStore() as store:
        store.save(make_task())
        assert store.db_path == store_module.DEFAULT_CACHE_DIR.resolve() / DATABASE_FILENAME
    assert Path.home() / ".uniqc" / "cache" == store_module.DEFAULT_CACHE_DIR
    assert (store_module.DEFAULT_CACHE_DIR / DATABASE_FILENAME).is_file()


def _uniqc_entries_in_temp() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if "uniqc" in p.name.lower()}


@pytest.mark.parametrize("below", ["sub", "."], ids=["directory-under-a-file", "a-file"])
def test_unusable_location_is_refused_without_any_fallback(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a directory should be")
    cache_dir = blocker / below if below != "." else blocker
    temp_before = _uniqc_entries_in_temp()

    with pytest.raises(StoreLocationError) as caught:
        TaskStore(cache_dir=cache_dir)

    message = str(caught.value)
    assert str(cache_dir) in message
    assert "UNIQC_CACHE_DIR" in message
    assert _uniqc_entries_in_temp() == temp_before
    assert not store_module.DEFAULT_CACHE_DIR.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert blocker.read_text() == "a regular file where a directory should be"


def test_legacy_cache_with_loose_modes_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    legacy = build_legacy_file(directory, 5)
    path = directory / DATABASE_FILENAME
    with umask(0o022):
        crash_leaving_wal(path, "SELECT count(*) FROM tasks")
        directory.chmod(0o755)
        for name in directory.iterdir():
            name.chmod(0o644)
        assert {p.name for p in directory.iterdir()} >= {DATABASE_FILENAME + "-wal"}

        with TaskStore(cache_dir=directory) as store:
            assert store.count() == len(legacy.live)
            store.save(make_task())
            assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # not created by us
            for suffix in ("", "-wal", "-shm"):
                sidecar = directory / (DATABASE_FILENAME + suffix)
                assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar


def test_a_directory_the_store_creates_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "cache"
    with umask(0o022), TaskStore(cache_dir=directory) as store:
        store.save(make_task())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / DATABASE_FILENAME).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o755], ids=lambda m: f"{m:o}")
def test_an_existing_directory_keeps_its_mode_on_every_open(tmp_path: Path, mode: int) -> None:
    # A shared directory like /tmp (1777, root's own when the store runs as root):
    # tightening it would lock every other program out. Not on a writing open, not on
    # a read-only command, not when the open fails on a file that is not ours.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    url = f"sqlite:///{shared / 'x.sqlite'}"
    with umask(0o022), TaskStore.from_url(url) as store:
        store.save(make_task())
    assert stat.S_IMODE(shared.stat().st_mode) == mode
    assert stat.S_IMODE((shared / "x.sqlite").stat().st_mode) == 0o600

    assert main(["list", "--cache-dir", str(shared)]) != 0  # no store there: refused
    assert main(["list", "--url", url]) == 0
    assert stat.S_IMODE(shared.stat().st_mode) == mode

    foreign = shared / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("PRAGMA application_id = 7")
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    foreign.chmod(0o644)
    with pytest.raises(ForeignDatabaseError):
        TaskStore.from_url(f"sqlite:///{foreign}")
    assert stat.S_IMODE(shared.stat().st_mode) == mode
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o644


ANOTHER_USER = 4242


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_another_users_directory_writable_by_anyone_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    os.chown(directory, ANOTHER_USER, -1)

    with pytest.raises(StoreLocationError, match="chmod o-w") as caught:
        TaskStore(cache_dir=directory)

    assert str(directory) in str(caught.value)
    assert list(directory.iterdir()) == []
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_another_users_readable_file_is_used_with_a_warning_naming_it(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path) as store:
        store.save(make_task())
    path = tmp_path / DATABASE_FILENAME
    path.chmod(0o644)
    os.chown(path, ANOTHER_USER, -1)

    with (
        pytest.warns(UserWarning, match=re.escape(str(path))),
        TaskStore(cache_dir=tmp_path) as store,
    ):
        assert store.count() == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_dangling_symlink_is_refused_and_never_followed(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    target = tmp_path / "elsewhere" / "planted.sqlite"
    target.parent.mkdir()
    (directory / DATABASE_FILENAME).symlink_to(target)

    with pytest.raises(StoreLocationError, match="symlink") as caught:
        TaskStore(cache_dir=directory)

    assert str(target) in str(caught.value)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    assert sorted(p.name for p in directory.iterdir()) == [DATABASE_FILENAME]


def test_symlink_to_an_existing_store_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    with TaskStore(cache_dir=real) as store:
        task = make_task()
        store.save(task)
    linked = tmp_path / "linked"
    linked.mkdir(mode=0o700)
    (linked / DATABASE_FILENAME).symlink_to(real / DATABASE_FILENAME)
    with TaskStore(cache_dir=linked) as store:
        assert store.get(task.task_id) == task


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores file permissions, so a read-only directory is writable"
)
def test_read_only_directory_is_refused_with_a_location_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreLocationError, match="UNIQC_CACHE_DIR"):
            TaskStore(cache_dir=locked)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


# -- a warm store opens nothing and sets nothing per call ----------------------------------------


@contextmanager
def watched(store: TaskStore) -> Iterator[dict[str, list[str]]]:
    """Record new DBAPI connections and every statement sent while the block runs."""
    engine = store._db.engine
    seen: dict[str, list[str]] = {"connects": [], "statements": []}

    def on_connect(_dbapi_conn: Any, _record: Any) -> None:
        seen["connects"].append("connect")

    def on_statement(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        seen["statements"].append(statement)

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "connect", on_connect)
        event.remove(engine, "before_cursor_execute", on_statement)


def test_warm_store_opens_no_connection_and_runs_no_pragma(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path) as store:
        parent = make_task()
        store.save(parent, [TaskShard(parent.task_id, 0, "job-0", parent.backend)])
        store.get(parent.task_id)

        with watched(store) as seen:
            for call in range(50):
                step = call % 7
                if step == 0:
                    store.save(make_task(shots=call))
                elif step == 1:
                    assert store.get(parent.task_id) is not None
                elif step == 2:
                    store.list(limit=5)
                elif step == 3:
                    store.count(status=TaskStatus.PENDING)
                elif step == 4:
                    store.save_shard(TaskShard(parent.task_id, 0, f"job-{call}", parent.backend))
                elif step == 5:
                    store.update_shard(parent.task_id, 0, status=TaskStatus.RUNNING)
                else:
                    assert store.get_shard_by_platform_id(f"job-{call - 2}") is not None

        assert seen["connects"] == []
        assert seen["statements"], "the calls did run statements"
        pragmas = [s for s in seen["statements"] if s.lstrip().upper().startswith("PRAGMA")]
        assert pragmas == []


def test_constructing_stores_on_a_warm_location_opens_nothing(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path) as store:
        store.save(make_task())
        with watched(store) as seen:
            for _ in range(100):
                with TaskStore(cache_dir=tmp_path) as again:
                    assert again._db is store._db
        assert seen == {"connects": [], "statements": []}
        assert store.count() == 1


def test_opening_without_create_refuses_a_missing_store_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere" / "cache"
    with pytest.raises(StoreNotFoundError, match=f"no task store at {missing}"):
        TaskStore(missing, create=False)
    assert not missing.parent.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / DATABASE_FILENAME).touch()
    with pytest.raises(StoreNotFoundError):
        TaskStore.from_url(f"sqlite:///{empty / DATABASE_FILENAME}", create=False)
    assert (empty / DATABASE_FILENAME).stat().st_size == 0
    with TaskStore(empty):
        pass
    with TaskStore(empty, create=False) as opened:
        assert opened.count() == 0
