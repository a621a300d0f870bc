"""Everything SQLite-specific: the file, its pragmas, real transactions, upserts.

The sqlite3 driver's legacy transaction mode commits before DDL and never says
``BEGIN`` for a read; we switch it off (``isolation_level = None``) and emit our own
``BEGIN`` so DDL rolls back with its migration. A transaction that may write begins
with ``BEGIN IMMEDIATE``: it takes the write lock at once, so a read followed by a
write cannot be overtaken by another process, and lock waits happen in the busy
handler at BEGIN rather than as an unretryable upgrade failure mid-transaction.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from ..errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseError,
    StoreLocationError,
    StoreNotFoundError,
)
from .base import APPLICATION_ID, Assignments, Backend, foreign_tables, refuse_foreign

DATABASE_FILENAME = "tasks.sqlite"
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
BUSY_TIMEOUT_SECONDS = 10.0
WRITE_OPTION = "uniqc_write"
"""Execution option that makes the next ``BEGIN`` on a connection ``BEGIN IMMEDIATE``."""

_HEADER_MAGIC = b"SQLite format 3\x00"
_LEGACY_VERSIONS = range(1, 6)
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class SqliteBackend(Backend):
    """One SQLite file (WAL journal), or a private in-memory database when ``path`` is None."""

    name = "sqlite"

    def __init__(self, path: Path | None, *, env_hint: str = "UNIQC_CACHE_DIR") -> None:
        self.path = path
        self.env_hint = env_hint

    def describe(self) -> str:
        return f"SQLite file {self.path}" if self.path else "in-memory SQLite database"

    # -- the file -----------------------------------------------------------------

    def prepare(self, *, create: bool = True) -> None:
        """Create the directory (0700) and file (0600) if missing; refuse foreign files."""
        if self.path is None:
            return
        if not create:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                raise StoreNotFoundError(
                    f"no task store at {self.path}; check the directory (--cache-dir, "
                    f"{self.env_hint}), or run a command that writes to create one."
                )
            check_header(self.path)
            return
        directory = self.path.parent
        try:
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise self._location_error(exc) from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._location_error(exc) from exc
        try:
            check_header(self.path)
        except StoreLocationError as exc:
            raise self._location_error(exc.__cause__ or exc) from exc

    def _location_error(self, exc: BaseException) -> StoreLocationError:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return StoreLocationError(
            f"cannot use {self.path} for the task store ({reason}). Make that location "
            f"writable, or choose another directory with the {self.env_hint} environment "
            "variable or TaskStore(cache_dir=...)."
        )

    def after_open(self, engine: Engine) -> None:
        """Switch the file to WAL once; refuse to go on where WAL cannot work."""
        if self.path is None:
            return
        # Outside any transaction (SQLAlchemy would begin one): the raw connection.
        raw = None
        try:
            raw = engine.raw_connection()
            cursor = raw.cursor()
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode != "wal":
                (mode,) = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
            cursor.close()
        except sqlite3.Error as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES:
                raise DatabaseBusyError(
                    f"{self.describe()} stayed locked while switching it to WAL; try again."
                ) from exc
            raise self._explain(exc) or DatabaseError(f"{self.describe()}: {exc}") from exc
        finally:
            if raw is not None:
                raw.close()
        if str(mode).lower() != "wal":
            raise DatabaseError(
                f"{self.describe()} cannot use a WAL journal (journal_mode stays {mode!r}); "
                "WAL needs shared memory, which network file systems often lack. Use a "
                f"local directory ({self.env_hint}) or a server database (UNIQC_TASKSTORE_URL)."
            )

    def clear_all(self, engine: Engine) -> bool:
        if self.path is None:
            return super().clear_all(engine)
        engine.dispose()
        for candidate in (self.path, *(_sidecar(self.path, s) for s in SIDECAR_SUFFIXES)):
            candidate.unlink(missing_ok=True)
        return True

    # -- connections ---------------------------------------------------------------

    def create_engine(self) -> Engine:
        if self.path is None:
            engine = create_engine(
                "sqlite+pysqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
        else:
            engine = create_engine(
                URL.create("sqlite+pysqlite", database=str(self.path)),
                connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS},
                pool_size=5,
                max_overflow=10,
            )
        self.configure_engine(engine)
        return engine

    def configure_engine(self, engine: Engine) -> None:
        durable = self.path is not None
        busy_ms = int(BUSY_TIMEOUT_SECONDS * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves; see module docstring
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                if durable:
                    # FULL: a commit that returned survives power loss, not only a crash.
                    cursor.execute("PRAGMA synchronous = FULL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def migration_connection(self, engine: Engine) -> Any:
        # Each migration step runs in BEGIN IMMEDIATE and re-reads user_version, so
        # processes racing to migrate one file serialise on SQLite's own write lock.
        return _write_connection(engine)

    # -- schema stamp -----------------------------------------------------------------

    def claim(self, conn: Connection, *, stamp: bool = True) -> int:
        app_id = int(conn.exec_driver_sql("PRAGMA application_id").scalar() or 0)
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        if app_id == APPLICATION_ID:
            return version
        where = self.describe()
        if app_id != 0:
            raise refuse_foreign(where, f"has application_id {app_id:#010x}")
        tables = set(
            conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars()
        )
        legacy = version in _LEGACY_VERSIONS and "tasks" in tables and not foreign_tables(conn)
        if tables and not legacy:
            raise refuse_foreign(where, f"holds other tables ({', '.join(sorted(tables))})")
        if stamp:
            conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
        return version

    def write_version(self, conn: Connection, version: int) -> None:
        conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")

    # -- statements --------------------------------------------------------------------

    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(index_elements=list(key), set_=dict(set_(stmt.excluded)))

    def is_busy(self, error: DBAPIError) -> bool:
        orig = error.orig
        if isinstance(orig, sqlite3.Error) and getattr(orig, "sqlite_errorcode", None) is not None:
            return (orig.sqlite_errorcode & 0xFF) in _BUSY_CODES
        message = str(orig).lower()
        return "database is locked" in message or "database is busy" in message

    def translate(self, error: DBAPIError) -> DatabaseError | None:
        """A clear error for driver failures that mean the file itself is unusable."""
        return self._explain(error.orig or error)

    def _explain(self, error: BaseException) -> DatabaseError | None:
        message = str(error).lower()
        if "file is not a database" in message or "malformed" in message:
            return CorruptDatabaseError(
                f"{self.describe()} is damaged or not a SQLite database ({error}); it was "
                "left untouched. Move it aside to start afresh, or restore it from a backup."
            )
        if "readonly" in message or "unable to open" in message:
            return self._location_error(error)
        return None


def check_header(path: Path) -> None:
    """Refuse, without opening it through SQLite, a file that is not a SQLite database
    or carries another application's id. An empty file is a fresh database."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise StoreLocationError(f"cannot read {path} ({exc.strerror})") from exc
    if not header:
        return
    if len(header) < 100 or not header.startswith(_HEADER_MAGIC):
        raise CorruptDatabaseError(
            f"{path} is not a SQLite database (truncated or overwritten); it was left "
            "untouched. Move it aside to start afresh, or restore it from a backup."
        )
    (app_id,) = struct.unpack(">I", header[68:72])
    if app_id not in (0, APPLICATION_ID):
        raise refuse_foreign(str(path), f"has application_id {app_id:#010x}")


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


@contextmanager
def _write_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        yield conn
