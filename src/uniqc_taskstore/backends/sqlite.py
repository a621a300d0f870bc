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
import glob
import os
import re
import sqlite3
import stat
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, StaticPool

from ..errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseError,
    StoreLocationError,
    StoreNotFoundError,
)
from .base import (
    APPLICATION_ID,
    BUSY_TIMEOUT_ENV,
    Assignments,
    Backend,
    Listener,
    foreign_tables,
    refuse_foreign,
)

DATABASE_FILENAME = "tasks.sqlite"
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
WRITE_OPTION = "uniqc_write"
"""Execution option that makes the next ``BEGIN`` on a connection ``BEGIN IMMEDIATE``."""
SINGLE_OPTION = "uniqc_single_statement"
"""Execution option for a connection that runs one SELECT: no ``BEGIN`` is sent, and
the statement runs in SQLite's autocommit mode (it is atomic on its own)."""

MIGRATION_BACKUPS_KEPT = 3
"""Copies written before migrations that are kept beside the file (the newest ones)."""
_MIGRATION_BACKUP = re.compile(r"\.v(\d+)-(\d{8}T\d{6}Z)(?:-(\d+))?\.bak")
_HEADER_MAGIC = b"SQLite format 3\x00"
_LEGACY_VERSIONS = range(1, 6)
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNIQUE_CODES = {sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE}
_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


class SqliteBackend(Backend):
    """One SQLite file (WAL journal), or a private in-memory database when ``path`` is None."""

    name = "sqlite"
    single_statement_options: ClassVar[dict[str, Any]] = {SINGLE_OPTION: True}
    writes_on_driver = True
    begin_write_sql = "BEGIN IMMEDIATE"  # the write lock at once: see the module docstring
    write_lock_at_begin = True

    def __init__(self, path: Path | None, *, env_hint: str = "UNIQC_CACHE_DIR") -> None:
        self.path = path
        self.env_hint = env_hint
        self._tighten_files = False
        problem = None if path is None else path_too_long(path)
        if problem is not None:
            shown = str(path) if len(str(path)) <= 120 else str(path)[:100] + "..."
            raise StoreLocationError(
                f"cannot use {shown} for the task store: {problem}. Choose a shorter "
                f"path ({env_hint}, --cache-dir or TaskStore(cache_dir=...))."
            )

    def describe(self) -> str:
        return f"SQLite file {self.path}" if self.path else "in-memory SQLite database"

    # -- the file -----------------------------------------------------------------

    def prepare(self, *, create: bool = True) -> None:
        """Create the directory (0700) and file (0600) if missing, never through a
        symlink; refuse another user's directory that others may write to, and a file
        that is not a SQLite database. An existing directory's mode is never changed
        (it may be shared, like ``/tmp``); the store's own file is made private only
        once it is known to be ours (:meth:`after_open`)."""
        if self.path is None:
            return
        directory = self.path.parent
        if not create:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                raise StoreNotFoundError(
                    f"no task store at {self.path}; check the directory (--cache-dir, "
                    f"{self.env_hint}), or run a command that writes to create one."
                )
        else:
            try:
                if not directory.is_dir():
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise self._location_error(exc) from exc
        self._check_directory(directory)
        self._tighten_files = create
        if create:
            try:
                # O_NOFOLLOW | O_EXCL: a symlink (dangling or not) is never followed to
                # create a file; an existing one is judged below.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
                os.close(fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._location_error(exc) from exc
        if self.path.is_symlink() and not self.path.exists():
            raise StoreLocationError(
                f"{self.path} is a symlink to {os.readlink(self.path)}, which does not "
                "exist; the store never creates a file through a symlink. Remove the link, "
                f"or point it at an existing task store, or choose another directory "
                f"({self.env_hint} or TaskStore(cache_dir=...))."
            )
        try:
            check_header(self.path)
        except StoreLocationError as exc:
            raise self._location_error(exc.__cause__ or exc) from exc

    def _check_directory(self, directory: Path) -> None:
        """Not ours and writable by others: refuse, since anyone could replace the file
        there or plant its -wal/-shm. Its mode is left as it is either way: tightening
        a directory the store did not create (a shared ``/tmp`` as root) would lock
        every other program out of it."""
        try:
            info = directory.stat()
        except OSError as exc:
            raise self._location_error(exc) from exc
        if _owned_by_me(info):
            return
        if info.st_mode & stat.S_IWOTH:
            raise StoreLocationError(
                f"{directory} (mode {stat.S_IMODE(info.st_mode):o}) belongs to another user "
                "and any user may write to it, so they could replace or read the task store "
                f"there; choose a private directory ({self.env_hint} or "
                "TaskStore(cache_dir=...)), or have its owner run chmod o-w on it."
            )

    def _secure_files(self) -> None:
        """The file and its -wal/-shm/-journal, once the file is known to be a task
        store and the open may write: ours become 0600; another user's that others can
        read stay as they are, with a warning (we cannot change them)."""
        assert self.path is not None
        for candidate in (self.path, *(_sidecar(self.path, s) for s in SIDECAR_SUFFIXES)):
            try:
                info = candidate.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._location_error(exc) from exc
            mode = stat.S_IMODE(info.st_mode)
            if not mode & 0o077:
                continue
            if _owned_by_me(info):
                try:
                    candidate.chmod(0o600)
                except OSError as exc:
                    raise self._location_error(exc) from exc
            else:
                warnings.warn(
                    f"{candidate} belongs to another user and has mode {mode:o}, so other "
                    "users may read the tasks in it; ask its owner to run chmod 600 on it.",
                    UserWarning,
                    stacklevel=2,
                )

    def _location_error(self, exc: BaseException) -> StoreLocationError:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return StoreLocationError(
            f"cannot use {self.path} for the task store ({reason}). Make that location "
            f"writable, or choose another directory with the {self.env_hint} environment "
            "variable or TaskStore(cache_dir=...)."
        )

    def inspection_connection(self, engine: Engine) -> Any:
        if self.path is None:
            return engine.connect()
        return _read_only_connection(self.path, self.busy.timeout)

    def check_before_first_write(self, conn: Connection) -> None:
        """A quick_check of the whole file: a damaged legacy file is refused before it
        is switched to WAL or stamped, not halfway through its upgrade."""
        problems = [str(row) for row in conn.exec_driver_sql("PRAGMA quick_check").scalars()]
        if problems != ["ok"]:
            raise CorruptDatabaseError(
                f"{self.describe()} is damaged ({'; '.join(problems[:3])}); it was left "
                "untouched. Move it aside to start afresh, or restore it from a backup."
            )

    def after_open(self, engine: Engine) -> None:
        """Switch the file to WAL once; refuse to go on where WAL cannot work. Called
        once the file is known to be ours: an open that may write makes it private."""
        if self.path is None:
            return
        if self._tighten_files:
            self._secure_files()
        # Outside any transaction (SQLAlchemy would begin one): the raw connection.
        raw = None
        try:
            raw = engine.raw_connection()
            mode = _switch_to_wal(raw, self.busy.timeout)
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise DatabaseBusyError(
                    f"{self.describe()} stayed locked by another process while switching it "
                    f"to WAL ({self.busy.timeout:g} s, {BUSY_TIMEOUT_ENV}); nothing was "
                    "written, try again once that process has finished."
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

    def backup_before_migration(self, version: int) -> Path | None:
        """Write ``tasks.sqlite.v<version>-<UTC time>.bak`` beside the file (0600), a
        consistent copy made with SQLite's online backup, and keep only the newest
        :data:`MIGRATION_BACKUPS_KEPT` of them."""
        if self.path is None:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{self.path.name}.v{version}-{stamp}"
        for attempt in range(100):
            name = f"{base}.bak" if attempt == 0 else f"{base}-{attempt}.bak"
            target = self.path.with_name(name)
            try:
                copy_database(self.path, target, timeout=self.busy.timeout)
            except FileExistsError:
                continue  # another process upgrading the same file in the same second
            except OSError as exc:
                raise StoreLocationError(
                    f"cannot write {target}, the copy of {self.path} kept before upgrading "
                    f"it from schema version {version} ({exc.strerror or exc}); nothing was "
                    "changed. Make the directory writable and open the store again."
                ) from exc
            break
        else:  # pragma: no cover - a hundred upgrades of one file in one second
            raise StoreLocationError(f"cannot find a free name for {base}.bak")
        for old in migration_backups(self.path)[:-MIGRATION_BACKUPS_KEPT]:
            old.unlink(missing_ok=True)
        return target

    def reclaim_space(self, engine: Engine) -> None:
        """VACUUM, then truncate the WAL, on a connection of its own that waits for no
        lock: deleted results leave the file, and a busy database just keeps its free
        pages for reuse. The file is never replaced, so every process keeps it."""
        if self.path is None:
            return
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # busy or interrupted: the rows are gone already; space is reused later
        finally:
            conn.close()

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
                connect_args={"check_same_thread": False, "timeout": self.busy.timeout},
                pool_size=5,
                max_overflow=10,
            )
        self.configure_engine(engine)
        return engine

    def connection_listeners(self) -> list[Listener]:
        durable = self.path is not None
        busy_ms = self.busy.timeout_ms

        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves; see module docstring
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                # Statement journals in memory: the v13 triggers make every INSERT keep
                # one, which in a temporary file cost ~30 us of CPU a row (~1.6x on
                # save_many); in memory ~1.1x (benchmarks/trigger_cost.py). Our reads
                # follow indexes and build no large temporary tables; VACUUM runs on a
                # connection of its own (reclaim_space) with the default.
                cursor.execute("PRAGMA temp_store = MEMORY")
                if durable:
                    # FULL: a commit that returned survives power loss, not only a crash.
                    cursor.execute("PRAGMA synchronous = FULL")
            finally:
                cursor.close()

        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if options.get(SINGLE_OPTION, False):
                return  # COMMIT is then a no-op in the driver: no transaction is open
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")

        return [("connect", _on_connect), ("begin", _on_begin)]

    @property
    def plain_read_checkout(self) -> bool:
        """For a file: its connections are in autocommit (``isolation_level = None``),
        so a lone SELECT whose rows were all fetched leaves no transaction (and no
        lock) behind. A private in-memory database has a pool of its own kind."""
        return self.path is not None

    def idle_after_select(self, dbapi_conn: Any) -> bool:
        return not dbapi_conn.in_transaction

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
        return isinstance(error.orig, sqlite3.Error) and _is_busy(error.orig)

    def is_conflict(self, error: DBAPIError) -> bool:
        """(A write here holds the whole file's lock from BEGIN, so no other writer
        can insert between its check and its insert: for completeness only.)"""
        code = getattr(error.orig, "sqlite_errorcode", None)
        return code in _UNIQUE_CODES

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


def path_too_long(path: Path) -> str | None:
    """Why the file system cannot take ``path`` or the ``-journal``/``-wal`` beside it
    (a name longer than it allows, or the whole path), or None. Asked before anything
    looks at the path: every system call on it would fail with ``ENAMETOOLONG``."""
    raw = os.fsencode(path)
    existing = path.parent
    while True:
        try:
            if existing.is_dir():
                break
        except OSError:
            pass
        if existing.parent == existing:
            break
        existing = existing.parent
    name_max, path_max = _limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096)
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > name_max:
        return f"a name in it is {longest} bytes long; the file system allows {name_max}"
    journal = len(os.fsencode(path.name)) + len("-journal")
    if journal > name_max:
        return (
            f"{path.name}-journal would be {journal} bytes long; the file system allows {name_max}"
        )
    if len(raw) + len("-journal") >= path_max:
        return f"it is {len(raw)} bytes long, longer than the file system allows ({path_max - 9})"
    return None


def _limit(directory: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(directory, name))
    except (OSError, ValueError):
        return default


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
    _check_whole_pages(path, header)


def _check_whole_pages(path: Path, header: bytes) -> None:
    """A SQLite file is a whole number of pages; one that is not was cut short (a copy
    that ran out of space, a backup one byte short), and SQLite would read the missing
    bytes as zeros without a word. Looked at twice, a moment apart, so a file another
    process is growing page by page is not mistaken for a cut one."""
    (size_field,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if size_field == 1 else size_field
    if page_size < 512 or page_size & (page_size - 1):
        return  # not a valid page size: SQLite itself says the file is not a database
    for attempt in range(2):
        try:
            size = path.stat().st_size
        except OSError:
            return
        if size % page_size == 0:
            return
        if attempt == 0:
            time.sleep(0.05)
    raise CorruptDatabaseError(
        f"{path} is damaged: {size:,} bytes is not a whole number of {page_size:,}-byte "
        "pages, so it was cut short (an incomplete copy?); it was left untouched. Restore "
        "it from a backup that uniqc-tasks doctor finds intact, or move it aside to start "
        "afresh."
    )


def copy_database(source: Path, target: Path, *, timeout: float = 10.0) -> None:
    """Copy the SQLite database ``source`` to a new file ``target`` (mode 0600) with
    SQLite's online backup API: one read transaction, so the copy is a consistent
    snapshot while other connections go on writing. The copy is written under a name of
    its own beside ``target`` (``.<target name>.<random>.partial``, so neither a
    leftover of a crashed copy nor a copy running beside it is in the way), checked
    with ``integrity_check``, synced, then linked to ``target`` only if that name is
    still free; it uses a rollback journal, so it is one self-contained file.
    ``FileExistsError`` if ``target`` exists; nothing is left behind on failure."""
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, "file exists", str(target))
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)  # mkstemp: O_EXCL, mode 0600
    partial = Path(name)
    try:
        src = sqlite3.connect(source, timeout=timeout, isolation_level=None)
        try:
            dst = sqlite3.connect(partial, isolation_level=None)
            try:
                src.backup(dst)  # pages=-1: the whole file in one step, one snapshot
                dst.execute("PRAGMA journal_mode = DELETE")
                problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            finally:
                dst.close()
        finally:
            src.close()
        if problems != ["ok"]:
            raise CorruptDatabaseError(
                f"the copy of {source} failed its check ({'; '.join(problems[:3])}); "
                "nothing was kept. Run uniqc-tasks doctor on the store."
            )
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename_without_replacing(partial, target)
    finally:
        for leftover in (partial, *(_sidecar(partial, s) for s in SIDECAR_SUFFIXES)):
            leftover.unlink(missing_ok=True)


def _rename_without_replacing(partial: Path, target: Path) -> None:
    """Give ``partial`` the name ``target`` unless a file took that name meanwhile
    (``FileExistsError``): a hard link is created only where the name is free. Where
    the file system has no hard links, check then rename."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise
    except OSError:
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.replace(partial, target)


def copy_is_intact(path: Path) -> bool:
    """Whether a copy of a store (a backup, or one kept before a migration) is a whole
    SQLite file of ours that passes ``PRAGMA integrity_check``, read without writing.
    ``quick_check`` is not enough: a copy one byte short passes it."""
    try:
        check_header(path)
        with _read_only_connection(path, 1.0) as conn:
            problems = list(conn.exec_driver_sql("PRAGMA integrity_check").scalars())
    except (DatabaseError, DBAPIError, OSError):
        return False
    return problems == ["ok"]


def migration_backups(path: Path) -> list[Path]:
    """The copies :meth:`SqliteBackend.backup_before_migration` kept beside ``path``,
    oldest first."""
    found: list[tuple[str, int, Path]] = []
    try:
        candidates = list(path.parent.glob(f"{glob.escape(path.name)}.v*.bak"))
    except OSError:
        return []
    for candidate in candidates:
        match = _MIGRATION_BACKUP.fullmatch(candidate.name[len(path.name) :])
        if match is not None:
            found.append((match.group(2), int(match.group(3) or 0), candidate))
    return [entry[2] for entry in sorted(found)]


def _owned_by_me(info: os.stat_result) -> bool:
    geteuid = getattr(os, "geteuid", None)  # POSIX only; elsewhere there is no owner to check
    return geteuid is None or bool(info.st_uid == geteuid())


def _switch_to_wal(raw: Any, timeout: float) -> str:
    """The file's journal mode after asking for WAL, waiting up to ``timeout`` seconds.

    Two processes switching one fresh file at once each hold a shared lock and want
    the exclusive one; SQLite answers one of them "database is locked" at once rather
    than call its busy handler (it would deadlock), so the wait is ours: the lock is
    released with the failed statement and the switch is asked again until the other
    process has made it (or the timeout has passed, when the last error is raised).
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    cursor = raw.cursor()
    try:
        while True:
            try:
                (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
                if mode != "wal":
                    (mode,) = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    finally:
        cursor.close()


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    message = str(error).lower()
    return "database is locked" in message or "database is busy" in message


@contextmanager
def _read_only_connection(path: Path, timeout: float) -> Iterator[Connection]:
    """A connection that opens ``path`` read-only (URI ``mode=ro``): it cannot write,
    stamp, switch the journal, or fold a WAL left by another program into the file
    when it closes.

    A WAL file with no ``-wal`` beside it is complete in itself; it is read as
    ``immutable`` so that not even an empty ``-wal``/``-shm`` is created. This look is
    a filter only: the migration re-checks under the write lock before writing."""
    uri = f"file:{quote(str(path))}?mode=ro"
    if _wal_mode_in_header(path) and not _sidecar(path, "-wal").exists():
        uri += "&immutable=1"
    engine = create_engine(
        "sqlite+pysqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False),
        poolclass=NullPool,
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _wal_mode_in_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2  # file format write version 2: WAL


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


@contextmanager
def _write_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        yield conn
