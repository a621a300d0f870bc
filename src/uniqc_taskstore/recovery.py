"""Putting a SQLite store back from a backup, and giving its free pages back to the
file system.

:func:`restore_backup` checks the backup (``PRAGMA integrity_check``, our application
id) before anything is touched, refuses while another process has the store open
(it takes SQLite's exclusive lock, so nobody can open it meanwhile), keeps the current
file beside it as ``tasks.sqlite.<UTC time>.bak`` and puts a copy of the backup in its
place. :func:`vacuum` runs ``VACUUM`` and reports the bytes before and after. Both are
for SQLite files; a server has its own tools (``pg_restore``, ``VACUUM FULL``,
``OPTIMIZE TABLE``)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .backends.base import APPLICATION_ID
from .errors import DatabaseBusyError, InvalidInputError


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore_backup` did."""

    path: Path
    """The store file, now a copy of the backup."""
    kept: Path | None
    """Where the file it replaced was kept (None: there was none)."""
    bytes: int


@dataclass(frozen=True)
class VacuumReport:
    """Bytes of the store file (with its WAL) before and after :func:`vacuum`."""

    before: int
    after: int
    seconds: float


def check_backup(backup: Path) -> None:
    """Refuse (:class:`InvalidInputError` naming the file) anything but a readable,
    intact SQLite task store."""
    if not backup.is_file():
        raise InvalidInputError("backup", str(backup), "no such file")
    try:
        conn = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            verdict = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInputError("backup", str(backup), f"not a SQLite database ({exc})") from None
    if app_id != APPLICATION_ID or "tasks" not in tables:
        raise InvalidInputError("backup", str(backup), "not a uniqc task store")
    if verdict != ["ok"]:
        raise InvalidInputError(
            "backup", str(backup), f"damaged: integrity_check says {verdict[0]}"
        )


def restore_backup(path: Path, backup: Path) -> RestoreReport:
    """Make the SQLite store at ``path`` a copy of ``backup`` (see the module text).
    :class:`DatabaseBusyError` while another process has the store open: nothing is
    changed then."""
    check_backup(backup)
    if backup.resolve() == path.resolve():
        raise InvalidInputError("backup", str(backup), "is the store itself")
    staged = path.with_name(path.name + ".restoring")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as target, backup.open("rb") as source:
        shutil.copyfileobj(source, target)
        target.flush()
        os.fsync(target.fileno())
    if not path.exists():
        os.replace(staged, path)
        return RestoreReport(path, None, path.stat().st_size)
    lock = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        try:
            lock.execute("PRAGMA locking_mode=EXCLUSIVE")
            lock.execute("BEGIN EXCLUSIVE")
            lock.execute("SELECT count(*) FROM sqlite_master").fetchall()
            lock.execute("COMMIT")
            lock.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            staged.unlink(missing_ok=True)
            raise DatabaseBusyError(
                f"{path} is open in another process; stop it (workers, notebooks, "
                "uniqc-tasks watch) and run restore-backup again; nothing was changed"
            ) from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = path.with_name(f"{path.name}.{stamp}.bak")
        shutil.copy2(path, kept)
        os.chmod(kept, 0o600)
        os.replace(staged, path)  # while the lock is held: nobody opens the old file
    finally:
        lock.close()
    return RestoreReport(path, kept, path.stat().st_size)


def vacuum(path: Path) -> VacuumReport:
    """``VACUUM`` the SQLite store at ``path`` (it rewrites the file without its free
    pages); the bytes of file and WAL before and after. Other processes may keep it
    open; a writer holding the lock for more than 30 s is a :class:`DatabaseBusyError`."""
    started = time.perf_counter()
    before = _bytes(path)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as exc:
        raise DatabaseBusyError(
            f"{path} stayed locked by another writer ({exc}); run it again"
        ) from None
    finally:
        conn.close()
    return VacuumReport(before, _bytes(path), time.perf_counter() - started)


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
