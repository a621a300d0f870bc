"""What differs between databases, as one small interface.

The repository (:mod:`uniqc_taskstore.store`) is written once against the
tables; a :class:`Backend` supplies only how to connect, how to upsert, where
the application id and schema version live, how migrations are serialised
across processes, which driver errors mean "busy, try again", and, on servers,
how to send several statements of a transaction in one round trip
(:class:`DriverBatch`, used by :mod:`uniqc_taskstore.server_writes`).
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, Table, delete, event, insert, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from ..errors import ForeignDatabaseError, InvalidInputError
from ..schema import change_marks, changes, metadata, schema_stamp, task_counts
from .changefeed import feed_for, forget_all

log = logging.getLogger(__name__)

APPLICATION_ID = 0x554E4943
"""``PRAGMA application_id`` of our SQLite files: ASCII ``UNIC``."""

Incoming = ReadOnlyColumnCollection[str, Any]
"""The row an upsert tried to insert (``excluded`` / ``VALUES()``), by column name."""

Assignments = Callable[[Incoming], list[tuple[str, ColumnElement[Any]]]]
"""Builds the ``SET`` list of an upsert from the incoming row.

MySQL applies assignments left to right and later ones see earlier results, so
columns that other assignments' conditions read must come last."""


BUSY_TIMEOUT_ENV = "UNIQC_BUSY_TIMEOUT"
BUSY_ATTEMPTS_ENV = "UNIQC_BUSY_ATTEMPTS"

Listener = tuple[str, Callable[..., None]]
"""An engine event name and the function that handles it."""


@dataclass(frozen=True)
class BusyPolicy:
    """How long one attempt waits for another writer's lock, and how many attempts a
    call makes before it raises :class:`DatabaseBusyError`.

    ``timeout`` is SQLite's busy wait, PostgreSQL's ``lock_timeout`` and MariaDB's
    ``innodb_lock_wait_timeout`` (whole seconds, at least 1), set on every connection.
    """

    timeout: float = 10.0
    attempts: int = 6

    @classmethod
    def from_environment(cls) -> BusyPolicy:
        """The policy set by ``UNIQC_BUSY_TIMEOUT`` (seconds) and ``UNIQC_BUSY_ATTEMPTS``,
        each defaulting to the class default when unset."""
        timeout = _env_number(BUSY_TIMEOUT_ENV, float, cls.timeout, minimum=0.0)
        attempts = int(_env_number(BUSY_ATTEMPTS_ENV, int, cls.attempts, minimum=1))
        return cls(timeout, attempts)

    @property
    def timeout_ms(self) -> int:
        return int(self.timeout * 1000)

    @property
    def timeout_whole_seconds(self) -> int:
        return max(1, math.ceil(self.timeout))


def _env_number(name: str, kind: type[float] | type[int], default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        raise InvalidInputError(
            name,
            raw,
            f"must be a {'number of seconds' if kind is float else 'whole number'} "
            f">= {kind(minimum)}; fix or unset the environment variable",
        )
    return value


@dataclass(frozen=True)
class Step:
    """One statement of a batch, as the driver takes it: SQL text in the driver's
    parameter style and its parameters (a list of parameter sets when ``many``);
    ``convert`` turns each row the driver returns into the caller's (the column
    types' result processing)."""

    sql: str
    params: Any
    many: bool = False
    convert: Callable[[Sequence[Any]], Any] | None = None
    records_changes: bool = False
    """It writes to the change log (followers are woken once the batch commits)."""

    def outcome(self, rows: Sequence[Any], rowcount: int) -> Outcome:
        """What this statement returned, its rows converted."""
        convert = self.convert
        return Outcome([convert(row) for row in rows] if convert else list(rows), rowcount)


@dataclass(frozen=True)
class Outcome:
    """What one statement of a batch returned: its rows and its row count."""

    rows: list[Any]
    rowcount: int


CHANGES_RECORDED = "uniqc_changes_recorded"
"""Key in a pooled connection's ``info``: the open transaction wrote to the change log
(:meth:`Backend.after_commit` then wakes followers where the backend pushes)."""


class DriverBatch(ABC):
    """One write transaction on a driver connection, sent in batches: the statements
    of one :meth:`send` go to the server together and are answered together, one
    round trip. The server still runs them one after the other, in order, each (under
    READ COMMITTED) with a snapshot taken when it starts, so a statement after a lock
    sees what was committed before the lock was granted."""

    finished = False
    """The transaction was committed or rolled back: nothing is left open."""
    commit_sent = False
    """A ``send(..., commit=True)`` began: if the connection is lost from here on, the
    transaction's outcome is unknown (:mod:`uniqc_taskstore.retries`)."""
    discard = False
    """The transaction committed, then the connection was lost (while sending what
    follows the commit): it is not handed back to the pool."""

    @abstractmethod
    def send(self, steps: Sequence[Step], *, commit: bool = False) -> list[Outcome]:
        """Run ``steps`` in the transaction (begun by the first send), then commit it
        if ``commit``; return each step's outcome. A failing statement raises the
        driver's error, and the statements after it do not run."""

    @abstractmethod
    def end(self) -> None:
        """Roll back whatever is left open and hand the connection back as the pool
        expects it. Called once, after the last send, also after a failure."""


class ChangeListener(ABC):
    """Woken when a write commits (see :meth:`Backend.change_listener`)."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Return when a write committed since the last call, or after ``timeout``
        seconds; True if woken by a write."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening and give the connection back."""


class Backend(ABC):
    """One kind of database: SQLite, PostgreSQL or MariaDB/MySQL."""

    name: ClassVar[str]
    busy: BusyPolicy = BusyPolicy()
    single_statement_options: ClassVar[dict[str, Any]] = {}
    """Execution options for a connection that runs one SELECT and nothing else
    (:meth:`Database.read_one`): how to skip an explicit transaction around it, where
    that saves work. None here: MariaDB begins implicitly with the statement anyway,
    and switching autocommit on and off would cost two round trips."""
    """Lock waits and attempts; :class:`~uniqc_taskstore.engine.Database` sets it from
    the environment before the engine is made."""
    snapshot_options: ClassVar[dict[str, Any]] = {}
    """Execution options for a connection whose next transaction is a snapshot read
    (:meth:`Database.read`), applied before it begins. None here."""
    writes_on_driver: ClassVar[bool] = False
    """Whether the hot write paths may run on the driver connection, in a transaction
    begun with :attr:`begin_write_sql` and ended by ``COMMIT``
    (:meth:`Database.write_statements`). Not on servers: their drivers begin
    implicitly, and the pool's pings and resets are SQLAlchemy events there."""
    lateral_tags: ClassVar[bool] = False
    """Whether a list page joins each task's tags as a ``LATERAL`` subquery (an index
    probe per task) rather than a plain join, which PostgreSQL may answer by hashing
    the whole tag table (``queries._page_statement``)."""
    begin_write_sql: ClassVar[str] = "BEGIN"
    write_lock_at_begin: ClassVar[bool] = False
    """Whether a write transaction holds the whole database's write lock from its
    ``BEGIN`` (SQLite), so that row locks (``FOR UPDATE``) add nothing."""

    retry_budget: float = 0.0
    """Seconds a call keeps retrying a lost or refused connection (servers: the URL's
    ``retry_budget``); see :mod:`uniqc_taskstore.retries`."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for messages (a path or a URL without password)."""

    def busy_policy(self) -> BusyPolicy:
        """Lock waits and attempts: from the environment (servers: the URL's
        ``lock_timeout`` first)."""
        return BusyPolicy.from_environment()

    def registry_key(self) -> str:
        """What identifies this database and login within one process (never shown)."""
        return self.describe()

    @abstractmethod
    def create_engine(self) -> Engine:
        """A pooled engine with this backend's connection settings applied."""

    def connection_listeners(self) -> list[Listener]:
        """Engine events that apply this backend's settings to each new connection (and,
        on SQLite, emit our own ``BEGIN``). A fresh list of fresh functions each call,
        so whoever registers them can remove exactly those."""
        return []

    def configure_engine(self, engine: Engine) -> list[Listener]:
        """Register :meth:`connection_listeners` on ``engine``; return them for removal."""
        listeners = self.connection_listeners()
        for name, function in listeners:
            event.listen(engine, name, function)
        return listeners

    def change_listener(self, engine: Engine) -> ChangeListener | None:
        """Something to wait on for the next committed change (PostgreSQL: ``LISTEN``),
        or None where waiting means probing at an interval."""
        return None

    def begin_snapshot(self, conn: Connection) -> None:
        """Make the read transaction just begun on ``conn`` (with
        :attr:`snapshot_options`) read one snapshot: every statement of it sees the
        same committed state. Here nothing is needed: SQLite's ``BEGIN`` (deferred)
        takes its snapshot at the first read and keeps it until the transaction ends
        (WAL readers never wait for writers)."""

    def dirty_read_then_snapshot(self, conn: Connection, text: str) -> list[int]:
        """Run ``text`` (a SELECT of one integer column) at READ UNCOMMITTED as a
        transaction of its own, then begin the snapshot read as :meth:`begin_snapshot`;
        the values it read. Only MariaDB's change feed needs it."""
        raise NotImplementedError

    def after_commit(self, conn: Connection) -> None:
        """Called after a transaction of ours on ``conn`` committed, just before the
        connection goes back to the pool (MariaDB: its reset can skip the ROLLBACK)."""

    def inspection_connection(self, engine: Engine) -> AbstractContextManager[Connection]:
        """A connection for looking at a database that may not be ours yet: nothing
        done through it, or by closing it, may change the database."""
        return engine.connect()

    def check_before_first_write(self, conn: Connection) -> None:
        """Raise if the database, known to be ours and older than this code, cannot be
        migrated safely (SQLite: a damaged file). Called before anything is written."""

    @abstractmethod
    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        """``INSERT`` into ``table``; on a ``key`` conflict apply ``set_`` to the existing
        row. Executed with a list of rows (executemany), so it compiles once."""

    def batched_writes(self) -> bool:
        """Whether :meth:`driver_batch` sends a batch of statements in one round trip
        (the hot server writes then use ``server_writes``)."""
        return False

    def driver_batch(self, dbapi_conn: Any) -> DriverBatch:
        """A :class:`DriverBatch` on a pooled driver connection (see
        :meth:`batched_writes`)."""
        raise NotImplementedError(f"{self.name} sends no batches")

    def after_finished_batch(self, record_info: dict[Any, Any]) -> None:
        """Called when a :class:`DriverBatch` left nothing open on a pooled connection
        whose pool record holds ``record_info`` (MariaDB: its reset can skip the
        ROLLBACK)."""

    def lone_select(self, dbapi_conn: Any, sql: str, args: Any) -> list[Any]:
        """Run one SELECT on a pooled driver connection outside any transaction of
        ours and return its rows (:meth:`Database.select`). SQLite's connections are in
        autocommit (we send BEGIN ourselves), and MariaDB's statement ends with the
        pool's reset (which rolls back only an open transaction), so here the SELECT
        is simply run."""
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    @property
    def plain_read_checkout(self) -> bool:
        """Whether :meth:`Database.select` may take its driver connection straight from
        a plain pool and put it straight back, without the reset on return where
        :meth:`idle_after_select` says no transaction is open. Not on servers: their
        pooled connections are pinged before use and reset on return."""
        return False

    def idle_after_select(self, dbapi_conn: Any) -> bool:
        """Whether ``dbapi_conn`` has no transaction open after :meth:`lone_select`."""
        return False

    def bulk_insert(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (new keys only: a duplicate fails the transaction) as fast as
        the database allows, in the current transaction. Here: one executemany, which
        SQLite runs as one prepared statement and PyMySQL rewrites into multi-row
        ``INSERT ... VALUES`` statements."""
        if rows:
            conn.execute(insert(table), list(rows))

    def bulk_insert_bound(
        self, conn: Connection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> None:
        """:meth:`bulk_insert` for rows already as the driver takes them: a value for
        every column of ``table``, in the table's order, each through its column type's
        bind processing. Here: the compiled ``INSERT`` as one executemany on the driver,
        without SQLAlchemy's per-row parameter processing."""
        if not rows:
            return
        compiled = insert(table).compile(dialect=conn.dialect)
        names = [column.key for column in table.columns]
        if compiled.positional:
            order = [names.index(name) for name in compiled.positiontup or ()]
            if order != list(range(len(names))):
                rows = [tuple(row[i] for i in order) for row in rows]
            conn.exec_driver_sql(str(compiled), list(rows))
        else:
            named = [dict(zip(names, row, strict=True)) for row in rows]
            conn.exec_driver_sql(str(compiled), named)

    @abstractmethod
    def migration_connection(self, engine: Engine) -> AbstractContextManager[Connection]:
        """A connection holding the database-wide migration lock while open."""

    @abstractmethod
    def claim(self, conn: Connection, *, stamp: bool = True) -> int:
        """Check the database is ours and return its schema version; with ``stamp``,
        mark a fresh database as ours (without, nothing is written).

        Raises :class:`ForeignDatabaseError` for somebody else's database.
        """

    @abstractmethod
    def write_version(self, conn: Connection, version: int) -> None:
        """Record ``version`` as the schema version, inside the current transaction."""

    @abstractmethod
    def is_busy(self, error: DBAPIError) -> bool:
        """True when ``error`` means another writer holds a lock: retrying may succeed."""

    @abstractmethod
    def is_conflict(self, error: DBAPIError) -> bool:
        """True when ``error`` is a unique-key violation: a row with the key was
        inserted (by a concurrent writer, for the writes that check first)."""

    def is_connection_failure(self, error: DBAPIError) -> bool:
        """True when ``error`` means the connection, not the statement, failed: the
        server went away, killed the session, or refuses new connections for now."""
        return False

    def is_stale_session(self, error: DBAPIError) -> bool:
        """True when ``error`` says the connection's own state went wrong (PostgreSQL:
        psycopg's cache of prepared statements out of step with the server after an
        aborted pipeline): the statement failed, nothing was written, and that
        connection must not be used again."""
        return False

    def is_login_refused(self, error: DBAPIError) -> bool:
        """True when the server refused the login itself: no retry helps."""
        return False

    def is_statement_timeout(self, error: DBAPIError) -> bool:
        """True when ``error`` is a statement cancelled by the store's statement timeout."""
        return False

    def translate(self, error: DBAPIError) -> Exception | None:
        """A clearer error for a driver failure, or None to keep the driver's."""
        return None

    def prepare(self, *, create: bool = True) -> None:
        """Make the location usable before the first connection (SQLite: the file).

        With ``create=False`` nothing is created: a missing store raises
        :class:`StoreNotFoundError`."""

    def after_open(self, engine: Engine) -> None:
        """Settings that need an open database but no transaction (SQLite: WAL)."""

    def backup_before_migration(self, version: int) -> Path | None:
        """Keep a consistent copy of the database as it is at ``version``, before a
        migration touches it; return where it is (None: this backend keeps none, as on
        servers, whose own dump tools do this)."""
        return None

    def clear_tables(self, conn: Connection) -> None:
        """Delete every row of every table but the schema stamp, in the current (write)
        transaction: other connections see all of it gone or none of it. The status
        counters go last, after the triggers of the task deletes have counted down."""
        for table in reversed(metadata.sorted_tables):
            if table is changes:
                forget_all(conn, feed_for(conn.dialect))  # tokens from before: stale
            elif table not in (schema_stamp, change_marks, task_counts):
                conn.execute(delete(table))
        conn.execute(delete(task_counts))

    def reclaim_space(self, engine: Engine) -> None:
        """After :meth:`clear_tables` committed: give the freed space back where that can
        be done without disturbing other connections; best effort, never raises."""


@contextmanager
def driver_errors(dialect: Dialect, statement: str, params: Any = None) -> Iterator[None]:
    """Raise a driver error from work done on the driver's own connection as
    SQLAlchemy's :class:`DBAPIError`, as if the statement had run through SQLAlchemy:
    busy retries and error translation then treat it like any other."""
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        raise as_dbapi_error(dialect, exc, statement, params) from exc


def as_dbapi_error(dialect: Dialect, exc: Exception, statement: str, params: Any) -> StatementError:
    """A driver error of ``statement`` as SQLAlchemy would have raised it (e.g.
    ``IntegrityError``); for hot paths that catch it themselves rather than use
    :func:`driver_errors`."""
    return DBAPIError.instance(statement, params, exc, dialect.loaded_dbapi.Error, dialect=dialect)


def foreign_tables(conn: Connection) -> set[str]:
    """Tables present that are not ours."""
    return set(inspect(conn).get_table_names()) - set(metadata.tables)


def refuse_foreign(where: str, reason: str) -> ForeignDatabaseError:
    """The error for a database that is not ours (logged: a refusal an operator may
    need to see)."""
    log.warning("refused %s: %s; left untouched", where, reason)
    return ForeignDatabaseError(
        f"{where} {reason}; it does not look like a uniqc-taskstore database and was left "
        "untouched. Point the store at another location (cache_dir=, UNIQC_CACHE_DIR or "
        "UNIQC_TASKSTORE_URL)."
    )
