"""Engines, connections and transactions: set up once, shared, retried when busy.

Every :class:`~uniqc_taskstore.store.TaskStore` pointed at the same file or URL in
one process shares one :class:`Database`: one pooled engine, one schema check.
Constructing a store again is free once the database is warm; connections are
reused from the pool and their settings were applied when they were opened.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Executable, RootTransaction, Select, event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InvalidRequestError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from .backends import Backend, backend_for_url
from .backends.base import (
    BUSY_ATTEMPTS_ENV,
    BUSY_TIMEOUT_ENV,
    CHANGES_RECORDED,
    DriverBatch,
    Listener,
    as_dbapi_error,
)
from .backends.changefeed import feed_key
from .backends.sqlite import WRITE_OPTION
from .errors import DatabaseBusyError, DatabaseError, TaskStoreError
from .migrator import MIGRATIONS, Migration, MigrationReport, migrate
from .retries import mark_commit_sent, raise_interruption, with_retries

T = TypeVar("T")
log = logging.getLogger(__name__)

SLOW_CALL_ENV = "UNIQC_SLOW_CALL_MS"
SLOW_CALL_MS = 500.0
"""A call (one transaction, all its attempts) taking longer is logged at DEBUG with
its name, never its values; ``UNIQC_SLOW_CALL_MS`` changes the threshold."""


class Database:
    """One database: its backend, its engine, and whether its schema is up to date.

    Lock waits and attempts (:class:`BusyPolicy`) are read from ``UNIQC_BUSY_TIMEOUT``
    and ``UNIQC_BUSY_ATTEMPTS`` here, when the first store on the location is opened
    in this process."""

    def __init__(
        self,
        backend: Backend,
        engine: Engine | None = None,
        *,
        migrations: Sequence[tuple[int, Migration]] = MIGRATIONS,
    ) -> None:
        self.backend = backend
        self.busy = backend.busy = backend.busy_policy()
        self.owns_engine = engine is None
        self._engine = engine
        self._migrations = migrations
        self._ready = False
        self._lock = threading.RLock()
        self.users = 0
        self.last_migration: MigrationReport | None = None
        self._caller_listeners: list[Listener] = []
        self._prepared: dict[Any, _Prepared] = {}
        if engine is not None:
            self._caller_listeners = backend.configure_engine(engine)
            engine.dispose()  # connections pooled before now lack our settings
        # A private in-memory SQLite database is one connection: every call, clear_all
        # included, takes this lock, so no call can run inside another's transaction.
        self._serial = threading.RLock() if getattr(backend, "path", True) is None else None

    @property
    def engine(self) -> Engine:
        """The engine, connected and migrated."""
        self.ensure_ready()
        assert self._engine is not None
        return self._engine

    def ensure_ready(self, *, create: bool = True) -> None:
        """Create, check and migrate the database once per process.

        With ``create=False`` a location that holds no store raises
        :class:`StoreNotFoundError` and nothing is created."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self.backend.prepare(create=create)
            if self._engine is None:
                self._engine = self.backend.create_engine()
            engine = self._engine
            try:
                self.last_migration = with_retries(
                    self.backend,
                    self.busy,
                    lambda: migrate(self.backend, engine, self._migrations, create=create),
                    budget=0.0,
                    idempotent=False,
                )
            except DBAPIError as exc:
                raise self._translate(exc) from exc
            self._ready = True

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a read-only transaction whose statements all see one snapshot
        of the database (:meth:`Backend.begin_snapshot`): a write committed meanwhile
        is seen by all of them or by none. Retried whole while the database is busy."""
        return self._transaction(work, write=False)

    def read_after_dirty(self, dirty: str, work: Callable[[Connection, list[int]], T]) -> T:
        """:meth:`read`, preceded on the same connection by ``dirty`` (a SELECT of one
        integer column, SQL text of the backend's own) read uncommitted in a transaction
        of its own (:meth:`Backend.dirty_read_then_snapshot`): ``work`` gets its values
        and then reads a snapshot taken after it. MariaDB's change feed only."""
        backend = self.backend
        seen: list[list[int]] = []

        def begin(conn: Connection) -> None:
            seen.append(backend.dirty_read_then_snapshot(conn, dirty))

        return self._transaction(
            lambda conn: work(conn, seen[-1]), write=False, begin=begin, name=_name_of(work)
        )

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection in a read-only snapshot transaction (as :meth:`read`) held open
        for a long read made of many statements (an export, a copy's source): every
        statement run on it sees the database as it was when the first one ran, however
        long the read takes. Not retried, since what was read may already be written
        out; an error raises as any call's does. On SQLite the snapshot holds back the
        WAL checkpoint until it ends (writers are never blocked)."""
        engine = self.engine
        backend = self.backend

        def begin() -> tuple[Connection, RootTransaction]:
            conn = engine.connect()
            try:
                if backend.snapshot_options:
                    conn.execution_options(**backend.snapshot_options)
                transaction = conn.begin()
                backend.begin_snapshot(conn)
            except BaseException:
                conn.close()
                raise
            return conn, transaction

        serial: AbstractContextManager[Any] = self._serial or nullcontext()
        with serial:
            # Opening it is retried as any read is (busy, a lost connection).
            conn, transaction = self._attempts(begin, idempotent=True, name="snapshot")
            try:
                try:
                    yield conn
                    transaction.commit()
                except DBAPIError as exc:
                    raise self._translate(exc) from exc
                backend.after_commit(conn)
            finally:
                conn.close()  # rolls back what is still open

    def read_one(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, which executes exactly one SELECT: a single statement is atomic,
        so where the backend allows it no transaction is opened around it (SQLite sends
        no BEGIN/COMMIT, PostgreSQL runs it in autocommit), saving those statements and,
        on a server, their round trips."""
        return self._transaction(work, write=False, single=True)

    def select(self, stmt: Select[Any], params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows (by column name, values converted by the column types) of one
        SELECT built once by the caller (a module-level or cached statement).

        For the hot point reads: the statement is compiled once for this database, and
        each call runs it on a pooled driver connection, outside SQLAlchemy's per-call
        execution machinery and outside any transaction (:meth:`read_one`), with the
        same busy retries and error translation as every other call."""
        prepared = self.prepared(stmt)
        return prepared.rows(self.select_raw(prepared, params))

    def select_raw(self, prepared: _Prepared, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        """:meth:`select`, the rows as the driver returns them (no column type has
        converted anything yet): for readers that map them in one pass. While anything
        listens to the engine's statement events (tracing, tests that watch or interrupt
        statements) it runs through SQLAlchemy, so that they see it."""
        engine = self.engine
        backend = self.backend
        pool = engine.pool
        direct = backend.plain_read_checkout and _plain_queue_pool(pool)
        watched = _statements_watched(engine)

        def attempt() -> list[Sequence[Any]]:
            text, args = prepared.statement(params)
            if watched:
                with engine.connect() as conn:
                    conn.execution_options(**backend.single_statement_options)
                    return list(conn.exec_driver_sql(text, args).fetchall())
            if direct:
                return _select_on_record(pool, backend, prepared, text, args)
            raw = _checkout(engine)
            try:
                try:
                    return backend.lone_select(raw.dbapi_connection, text, args)
                except prepared.dbapi_error as exc:
                    raise prepared.wrap(exc, text, args) from exc
            finally:
                raw.close()

        return self._attempts(attempt, idempotent=True, name=prepared.name)

    def batch_write(self, work: Callable[[DriverBatch], T], *, idempotent: bool = False) -> T:
        """Run ``work`` in a write transaction sent in batches on a pooled driver
        connection (:meth:`Backend.driver_batch`: one round trip per batch), with the
        same retries and error translation as :meth:`write`. Only for backends
        whose :meth:`Backend.batched_writes` is true."""
        engine = self.engine
        backend = self.backend
        dialect = engine.dialect
        dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

        def attempt() -> T:
            raw = _checkout(engine)
            batch: DriverBatch | None = None
            try:
                batch = backend.driver_batch(raw.dbapi_connection)
                try:
                    result = work(batch)
                except BaseException:
                    try:
                        batch.end()
                    except Exception:  # the first error says why; this connection goes
                        _discard(raw)
                    raise
                batch.end()
                if batch.discard:
                    _discard(raw)
                else:
                    backend.after_finished_batch(raw.info)
                return result
            except dbapi_error as exc:
                gone = not raw.is_valid or bool(
                    dialect.is_disconnect(exc, raw.dbapi_connection, None)  # type: ignore[arg-type]
                )
                error = DBAPIError.instance(
                    _BATCH, None, exc, dbapi_error, connection_invalidated=gone, dialect=dialect
                )
                if gone or (isinstance(error, DBAPIError) and backend.is_stale_session(error)):
                    _discard(raw, exc)
                if batch is not None and batch.commit_sent:
                    mark_commit_sent(error)
                raise error from exc
            finally:
                raw.close()

        return self._attempts(attempt, idempotent=idempotent, name=_name_of(work))

    def write(
        self,
        work: Callable[[Connection], T],
        *,
        idempotent: bool = False,
        rerun_on_conflict: bool = False,
    ) -> T:
        """Run ``work`` in a write transaction: on SQLite it holds the write lock from
        BEGIN; on servers (READ COMMITTED), rows read ``FOR UPDATE`` stay locked until
        commit. Retried whole when the database is busy, or when the connection is lost
        before the commit was sent; after it, only if ``idempotent`` (see
        :mod:`.retries`).

        ``rerun_on_conflict``: for a write that checks which keys are there and inserts
        the others (restore, import, copy). On a server another writer can insert one
        of those keys after the check (no lock covers a row that does not exist yet);
        the insert then fails with a unique-key violation. The transaction is rolled
        back and run again, and its check sees that row now: the call ends as if it had
        run after the other writer, never with the violation (up to
        :data:`_CONFLICT_RERUNS` times)."""
        return self._transaction(
            work, write=True, idempotent=idempotent, rerun_on_conflict=rerun_on_conflict
        )

    def write_statements(self, work: Callable[[Statements], T], *, idempotent: bool = False) -> T:
        """:meth:`write` for the hot write paths (``save``, shard writes), whose
        statements are built once (module-level or cached builders): ``work`` runs them
        through a :class:`Statements`.

        Where the backend allows it (:attr:`Backend.writes_on_driver`: SQLite), each
        statement is compiled once for this database and run on a pooled driver
        connection inside our own ``BEGIN IMMEDIATE … COMMIT``, outside SQLAlchemy's
        per-statement machinery, which costs more than SQLite spends running it. The
        busy retries and error translation are :meth:`write`'s. Elsewhere ``work``
        runs inside :meth:`write` through the SQLAlchemy connection, as it does while
        anything listens to the engine's statement events (tracing, tests that watch
        or interrupt statements): they see every statement."""
        engine = self.engine
        if not self.backend.writes_on_driver or _statements_watched(engine):
            exclusive = self.backend.write_lock_at_begin
            return self._transaction(
                lambda conn: work(_ConnectionStatements(conn, exclusive)),
                write=True,
                idempotent=idempotent,
                name=_name_of(work),
            )
        backend = self.backend
        dialect = engine.dialect

        def attempt() -> T:
            raw = _checkout(engine)
            try:
                statements = _DriverStatements(
                    self.prepared, raw.driver_connection, dialect, backend.write_lock_at_begin
                )
                try:
                    statements.run_text(backend.begin_write_sql)
                    result = work(statements)
                    try:
                        statements.run_text("COMMIT")
                    except DBAPIError as exc:
                        raise mark_commit_sent(exc)  # noqa: B904 - the same error, marked
                except BaseException:
                    try:
                        raw.driver_connection.rollback()  # type: ignore[union-attr]
                    except Exception:  # the connection is broken: never reuse it
                        raw.invalidate()
                    raise
                finally:
                    statements.close()
            finally:
                raw.close()
            return result

        return self._attempts(attempt, idempotent=idempotent, name=_name_of(work))

    def prepared(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> _Prepared:
        """``stmt`` compiled for this database, once (see :class:`_Prepared`). An
        ``INSERT`` is compiled, as SQLAlchemy does, for the columns named by ``params``
        (a row): a column a row leaves out keeps its server default. Other statements,
        and an ``INSERT ... SELECT`` (whose ``WITH`` may hold an ``UPDATE``, which would
        take a parameter named like a column as a value to set), name their values
        with bound parameters of their own."""
        key: Any = stmt
        if params is not None and _inserts_values(stmt):
            key = (stmt, tuple(params))
        prepared = self._prepared.get(key)
        if prepared is None:
            if len(self._prepared) >= _PREPARED_KEPT:
                self._prepared.clear()  # only if a caller passed statements built per call
            columns = list(key[1]) if isinstance(key, tuple) else None
            prepared = self._prepared[key] = _Prepared(stmt, self.engine.dialect, columns)
        return prepared

    def prepared_as(self, key: Any, build: Callable[[], Executable]) -> _Prepared:
        """:meth:`prepared` for a statement known by ``key`` (any hashable naming what
        it selects), built by ``build`` only the first time: for statements that would
        otherwise be built anew for every call (a filtered page)."""
        prepared = self._prepared.get(key)
        if prepared is None:
            if len(self._prepared) >= _PREPARED_KEPT:
                self._prepared.clear()
            prepared = self._prepared[key] = _Prepared(build(), self.engine.dialect)
        return prepared

    def _transaction(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        single: bool = False,
        idempotent: bool = False,
        name: str | None = None,
        rerun_on_conflict: bool = False,
        begin: Callable[[Connection], None] | None = None,
    ) -> T:
        engine = self.engine
        backend = self.backend
        single_options = backend.single_statement_options if single else None
        snapshot = not write and not single
        snapshot_options = backend.snapshot_options

        def attempt() -> T:
            with engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                elif single_options:
                    conn.execution_options(**single_options)
                elif snapshot_options:
                    conn.execution_options(**snapshot_options)
                committing = False
                conn.info.pop(CHANGES_RECORDED, None)  # left by a transaction that failed
                try:
                    with conn.begin():
                        if snapshot:
                            (begin or backend.begin_snapshot)(conn)
                        result = work(conn)
                        committing = True  # what remains is the COMMIT
                except DBAPIError as exc:
                    if committing:
                        mark_commit_sent(exc)
                    raise
                backend.after_commit(conn)
                return result

        def rerun_on_conflicts() -> T:
            for run in range(_CONFLICT_RERUNS):
                try:
                    return attempt()
                except IntegrityError as exc:
                    if not backend.is_conflict(exc) or run == _CONFLICT_RERUNS - 1:
                        raise
            raise AssertionError("unreachable")

        try:
            # A read repeated changes nothing: always retried.
            return self._attempts(
                rerun_on_conflicts if rerun_on_conflict else attempt,
                idempotent=idempotent or not write,
                name=name or _name_of(work),
            )
        except StatementError as exc:
            # A value our column types refused while binding (e.g. a result JSON
            # cannot hold): surface our own error, the transaction rolled back.
            if isinstance(exc.orig, TaskStoreError):
                raise exc.orig from None
            raise

    def _attempts(self, attempt: Callable[[], T], *, idempotent: bool, name: str) -> T:
        """``attempt``, retried while the database is busy or the connection failed
        (:func:`~uniqc_taskstore.retries.with_retries`), under the in-memory
        database's lock where there is one; driver errors become ours, and a pool that
        stayed exhausted :class:`DatabaseBusyError`. A slow call is logged (DEBUG)."""
        backend = self.backend
        started = time.perf_counter()
        budget = backend.retry_budget if self._ready else 0.0
        try:
            if self._serial is not None:
                with self._serial:
                    return with_retries(
                        backend, self.busy, attempt, budget=budget, idempotent=idempotent
                    )
            return with_retries(backend, self.busy, attempt, budget=budget, idempotent=idempotent)
        except DBAPIError as exc:
            raise self._translate(exc) from exc
        except PoolTimeoutError:  # every pooled connection stayed checked out
            raise DatabaseBusyError(f"{backend.describe()}: {_POOL_BUSY}") from None
        finally:
            elapsed = time.perf_counter() - started
            if elapsed * 1000 > _slow_call_ms() and log.isEnabledFor(logging.DEBUG):
                log.debug("slow call: %s took %.0f ms on %s", name, elapsed * 1000, backend.name)

    def clear_all(self) -> None:
        """Empty every table in one write transaction (retried while busy: all or
        nothing), then reclaim the space where that is safe. The file or database stays
        the same one, so every connection, in every process, keeps seeing it."""
        self.write(self.backend.clear_tables)
        if self._serial is not None:
            with self._serial:
                self.backend.reclaim_space(self.engine)
        else:
            self.backend.reclaim_space(self.engine)

    def dispose(self) -> None:
        """Close pooled connections (the engine opens new ones if used again)."""
        if self._engine is not None:
            self._engine.dispose()

    def hand_back(self) -> None:
        """Leave a caller's engine as it was before: our event listeners removed, and
        the pooled connections that carry our settings closed (checked-out ones are
        closed when returned)."""
        engine = self._engine
        if engine is None:
            return
        for name, function in self._caller_listeners:
            if event.contains(engine, name, function):
                event.remove(engine, name, function)
        self._caller_listeners = []
        engine.dispose()

    def forget_connections(self) -> None:
        """After fork: drop the parent's pooled connections without closing them."""
        if self._engine is not None:
            self._engine.dispose(close=False)

    def _translate(self, exc: DBAPIError) -> TaskStoreError:
        # A driver error that replaced a Ctrl-C (or SystemExit) is not ours to
        # translate: the interruption goes on (see retries.interruption_behind).
        raise_interruption(exc)
        if self.backend.is_busy(exc):
            return DatabaseBusyError(
                f"{self.backend.describe()} stayed locked by other writers through "
                f"{self.busy.attempts} attempts of up to {self.busy.timeout:g} s each; "
                "nothing was written. Try again, or allow longer waits with "
                f"{BUSY_TIMEOUT_ENV} (seconds) and {BUSY_ATTEMPTS_ENV}."
            )
        translated = self.backend.translate(exc)
        if isinstance(translated, TaskStoreError):
            return translated
        return DatabaseError(f"{self.backend.describe()}: {exc.orig!r}")


class Statements(ABC):
    """Runs statements built once (module-level or cached builders) in the current
    write transaction of :meth:`Database.write_statements`. Driver errors come out as
    SQLAlchemy's :class:`DBAPIError` subclasses (e.g. ``IntegrityError``) either way."""

    returning: bool
    """Whether an ``UPDATE … RETURNING`` can return its rows here."""
    exclusive: bool
    """Whether the transaction holds the database's write lock from its start (SQLite's
    ``BEGIN IMMEDIATE``): then no other writer runs meanwhile, and row locks add nothing."""
    dialect: str
    """Which change-log statements to run: the SQLAlchemy dialect's name, or on
    MariaDB the change feed's design (:func:`~uniqc_taskstore.backends.changefeed.feed_key`)."""

    @abstractmethod
    def rows(self, stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows a SELECT (or a statement with RETURNING) gives, by column key, values
        converted by the column types."""

    @abstractmethod
    def run(self, stmt: Executable, params: Mapping[str, Any]) -> int:
        """Execute a statement that returns no rows; how many rows it matched."""

    @abstractmethod
    def run_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement once per parameter set in ``rows`` (executemany)."""

    def note_changes(self) -> None:
        """The transaction wrote to the change log (see :data:`CHANGES_RECORDED`)."""


class _DriverStatements(Statements):
    """On a driver connection, each statement compiled once per database (see
    :class:`_Prepared`); one cursor for the whole transaction."""

    def __init__(
        self,
        prepared: Callable[[Executable, Mapping[str, Any]], _Prepared],
        dbapi_connection: Any,
        dialect: Dialect,
        exclusive: bool,
    ) -> None:
        self._prepared = prepared
        self._dialect = dialect
        self._cursor = dbapi_connection.cursor()
        self.returning = bool(dialect.update_returning)
        self.exclusive = exclusive
        self.dialect = feed_key(dialect)

    def run_text(self, text: str) -> None:
        """A statement of the backend's own (``BEGIN IMMEDIATE``, ``COMMIT``)."""
        try:
            self._cursor.execute(text)
        except self._dialect.loaded_dbapi.Error as exc:
            raise as_dbapi_error(self._dialect, exc, text, ()) from exc

    def rows(self, stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        prepared = self._prepared(stmt, params)
        text, args = prepared.statement(params)
        try:
            self._cursor.execute(text, args)
            found = self._cursor.fetchall()
        except prepared.dbapi_error as exc:
            raise prepared.wrap(exc, text, args) from exc
        return prepared.rows(found)

    def run(self, stmt: Executable, params: Mapping[str, Any]) -> int:
        prepared = self._prepared(stmt, params)
        text, args = prepared.statement(params)
        try:
            self._cursor.execute(text, args)
        except prepared.dbapi_error as exc:
            raise prepared.wrap(exc, text, args) from exc
        return int(self._cursor.rowcount)

    def run_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        prepared = self._prepared(stmt, rows[0])
        text, args = prepared.statements(rows)
        try:
            self._cursor.executemany(text, args)
        except prepared.dbapi_error as exc:
            raise prepared.wrap(exc, text, args[0]) from exc

    def close(self) -> None:
        self._cursor.close()


class _ConnectionStatements(Statements):
    """Through a SQLAlchemy connection (servers: its events, pool pings and resets)."""

    def __init__(self, conn: Connection, exclusive: bool) -> None:
        self._conn = conn
        self.returning = bool(conn.dialect.update_returning)
        self.exclusive = exclusive
        self.dialect = feed_key(conn.dialect)

    def rows(self, stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in self._conn.execute(stmt, dict(params)).mappings()]

    def run(self, stmt: Executable, params: Mapping[str, Any]) -> int:
        return int(self._conn.execute(stmt, dict(params)).rowcount)

    def run_many(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._conn.execute(stmt, [dict(row) for row in rows])

    def note_changes(self) -> None:
        self._conn.info[CHANGES_RECORDED] = True


class _Slot:
    """Stands for item ``index`` of the expanding parameter ``name`` while a statement's
    text is worked out for one size of its list."""

    __slots__ = ("index", "name")

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index


_UNSET = object()

_Position = tuple[str | None, int, Any, Any]
"""Where one parameter of a statement's text comes from: (parameter name, item of its
list or -1, bind processor, the processed constant when the name is None)."""


class _Prepared:
    """One statement compiled for one dialect: its SQL text (for each size of each
    expanding ``IN`` list it takes), how to bind its parameters (the column types'
    bind processing, positional or named; constants processed once) and how to convert
    the columns it returns (the types' result processing), all worked out once."""

    _FORMS_KEPT = 1024

    def __init__(
        self, stmt: Executable, dialect: Dialect, column_keys: list[str] | None = None
    ) -> None:
        element = cast(ClauseElement, stmt)
        compiled = cast(SQLCompiler, element.compile(dialect=dialect, column_keys=column_keys))
        self._compiled = compiled
        self._dialect = dialect
        self._positional = bool(compiled.positional)
        binds = compiled.bind_names
        self._required = {name for bind, name in binds.items() if bind.required}
        self._expanding = tuple(
            name for bind, name in binds.items() if bind.expanding and name in self._required
        )
        self._processors = {
            name: bind.type._cached_bind_processor(dialect) for bind, name in binds.items()
        }
        constants = compiled.construct_params(_check=False)
        # An IN list given with the statement (a filter's statuses): one fixed size.
        self._constant_lists = {
            name: constants[name]
            for bind, name in binds.items()
            if bind.expanding and name not in self._required
        }
        self._constants = {
            name: _processed(self._processors[name], value)
            for name, value in constants.items()
            if name not in self._required and name not in self._constant_lists
        }
        self._forms: dict[tuple[int, ...], tuple[str, list[str], list[_Position]]] = {}
        columns: list[Any] = list(getattr(stmt, "exported_columns", ()))
        self.keys = [str(c.key) for c in columns]
        self.types = [c.type for c in columns]
        self.reader: Any = None
        """What a caller maps this statement's rows with, kept with it (``pages``)."""
        self.results = [c.type._cached_result_processor(dialect, None) for c in columns]
        self._converted = [
            (i, process) for i, process in enumerate(self.results) if process is not None
        ]
        # Values of a Python type the column's conversion returns as it is (declared by
        # our column types for SQLite, whose TEXT the driver hands over untouched) are
        # not passed through it: most values, in rows as the store writes them.
        self._kept: list[tuple[int, Any, tuple[type, ...]]] | None = None
        if dialect.name == "sqlite":
            kept = [
                (i, process, _unchanged_on_read(columns[i].type, dialect))
                for i, process in self._converted
            ]
            if any(unchanged for _, _, unchanged in kept):
                self._kept = kept
        self._many: tuple[Callable[[Mapping[str, Any]], Any], list[tuple[int, Any]]] | None = None
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    @functools.cached_property
    def name(self) -> str:
        """What the statement is, for the slow-call log (the tables a SELECT reads):
        worked out once, as finding a SELECT's tables compiles it again."""
        return _name_of(self._compiled.statement)

    def statement(self, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL text and driver arguments for one execution with ``params``."""
        sizes = tuple(len(params[n]) for n in self._expanding) if self._expanding else ()
        text, names, positions = self._form(sizes)
        values = _values(positions, params)
        return text, (tuple(values) if self._positional else dict(zip(names, values, strict=True)))

    def statements(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
        """The SQL text and one argument set per row, for an executemany."""
        text, names, positions = self._form(())
        if not self._positional:
            return text, [dict(zip(names, _values(positions, row), strict=True)) for row in rows]
        if self._many is None:
            if any(name is None or index >= 0 for name, index, _, _ in positions):
                return text, [tuple(_values(positions, row)) for row in rows]
            # Every value is a column of the row (an INSERT): taken in one C call per
            # row, then only the columns whose type converts values are converted.
            self._many = (
                itemgetter(*names) if len(names) != 1 else lambda row: (row[names[0]],),
                [(i, process) for i, (_, _, process, _) in enumerate(positions) if process],
            )
        take, convert = self._many
        if not convert:
            return text, [take(row) for row in rows]
        # Rows of one write share values (its timestamp, a None result): a column's
        # value that is the same object as the row before's is not converted again.
        last: list[list[Any]] = [[i, process, _UNSET, None] for i, process in convert]
        args = []
        for row in rows:
            values = list(take(row))
            for seen in last:
                value = values[seen[0]]
                if value is not seen[2]:
                    seen[2], seen[3] = value, seen[1](value)
                values[seen[0]] = seen[3]
            args.append(values)
        return text, args

    def rows(self, found: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        keys, converted = self.keys, self._converted
        if not converted:
            return [dict(zip(keys, row, strict=True)) for row in found]
        rows = []
        if self._kept is not None:
            for row in found:
                values = list(row)
                for i, process, unchanged in self._kept:
                    value = values[i]
                    if type(value) not in unchanged:
                        values[i] = process(value)
                rows.append(dict(zip(keys, values, strict=True)))
            return rows
        for row in found:
            values = list(row)
            for i, process in converted:
                values[i] = process(values[i])
            rows.append(dict(zip(keys, values, strict=True)))
        return rows

    def tuple_converter(self) -> Callable[[Sequence[Any]], tuple[Any, ...]] | None:
        """What turns one returned row into a tuple of converted values (positions as
        selected), or None where the column types convert nothing."""
        converted = self._converted
        if not converted:
            return None

        def convert(row: Sequence[Any]) -> tuple[Any, ...]:
            values = list(row)
            for i, process in converted:
                values[i] = process(values[i])
            return tuple(values)

        return convert

    def wrap(self, exc: Exception, text: str, args: Any) -> Exception:
        """A driver error as SQLAlchemy would have raised it (e.g. ``IntegrityError``)."""
        return as_dbapi_error(self._dialect, exc, text, args)

    def _form(self, sizes: tuple[int, ...]) -> tuple[str, list[str], list[_Position]]:
        form = self._forms.get(sizes)
        if form is not None:
            return form
        params: dict[str, Any] = dict.fromkeys(self._required) | self._constant_lists
        for name, size in zip(self._expanding, sizes, strict=True):
            params[name] = [_Slot(name, index) for index in range(size)]
        state = self._compiled.construct_expanded_state(params)
        names = list(state.positiontup or ()) if self._positional else list(state.parameters)
        positions: list[_Position] = []
        for name in names:
            value = state.parameters[name]
            if isinstance(value, _Slot):
                positions.append((value.name, value.index, state.processors.get(name), None))
            elif name in self._required:
                positions.append((name, -1, self._processors[name], None))
            elif name in self._constants:
                positions.append((None, -1, None, self._constants[name]))
            else:  # an item of a constant IN list
                positions.append((None, -1, None, _processed(state.processors.get(name), value)))
        if len(self._forms) >= self._FORMS_KEPT:
            self._forms.clear()
        form = self._forms[sizes] = (state.statement, names, positions)
        return form


def _unchanged_on_read(type_: Any, dialect: Dialect) -> tuple[type, ...]:
    """The Python types of values a column of ``type_`` reads as they are on SQLite
    (``unchanged_on_sqlite`` of our column types), where the type stores through a
    dialect type that converts nothing itself; else none."""
    unchanged: tuple[type, ...] = getattr(type_, "unchanged_on_sqlite", ())
    load = getattr(type_, "load_dialect_impl", None)
    if not unchanged or load is None:
        return ()
    if load(dialect)._cached_result_processor(dialect, None) is not None:
        return ()
    return unchanged


def _inserts_values(stmt: Executable) -> bool:
    """Whether ``stmt`` is an ``INSERT`` of the rows given with it (not of a SELECT)."""
    return bool(getattr(stmt, "is_insert", False)) and getattr(stmt, "select", None) is None


def _processed(process: Any, value: Any) -> Any:
    return value if process is None else process(value)


def _values(positions: list[_Position], params: Mapping[str, Any]) -> list[Any]:
    values = []
    for name, index, process, constant in positions:
        if name is None:
            values.append(constant)
            continue
        value = params[name] if index < 0 else params[name][index]
        values.append(value if process is None else process(value))
    return values


def _plain_queue_pool(pool: Pool) -> bool:
    """Whether ``pool`` is SQLAlchemy's QueuePool with nothing listening to its
    checkouts, returns or resets, and no pings: taking one of its connections and
    putting it back then needs none of the per-checkout wrapper's work
    (:func:`_select_on_record`)."""
    dispatch = pool.dispatch
    return (
        type(pool) is QueuePool
        and not getattr(pool, "_pre_ping", True)
        and not (dispatch.checkout or dispatch.checkin or dispatch.reset)
    )


def _select_on_record(
    pool: Any, backend: Backend, prepared: _Prepared, text: str, args: Any
) -> list[Any]:
    """:meth:`Backend.lone_select` on a connection taken straight from a plain
    QueuePool (:func:`_plain_queue_pool`) and put straight back: what a checkout
    through :meth:`Engine.raw_connection` does, without the wrapper object, its
    weak-reference finaliser and the reset on return, which is a ROLLBACK the driver
    skips anyway when no transaction is open. A connection the SELECT somehow left
    in a transaction is rolled back (or, failing that, discarded) as the reset would."""
    try:
        record = pool._do_get()
    except _driver_error(pool) as exc:
        raise _connect_error(pool._dialect, exc) from exc
    try:
        dbapi_connection = record.get_connection()  # reconnects one invalidated
        try:
            return backend.lone_select(dbapi_connection, text, args)
        except prepared.dbapi_error as exc:
            raise prepared.wrap(exc, text, args) from exc
    finally:
        connection = record.dbapi_connection
        if connection is not None and not backend.idle_after_select(connection):
            try:
                connection.rollback()
            except Exception:  # a connection that cannot roll back is not reused
                record.invalidate()
        pool._do_return_conn(record)


def _driver_error(pool: Any) -> type[Exception]:
    """The driver's base error class, for a pool's dialect."""
    error: type[Exception] = pool._dialect.loaded_dbapi.Error
    return error


def _statements_watched(engine: Engine) -> bool:
    """Whether a listener is registered for an event of SQLAlchemy's statement execution."""
    dispatch = engine.dispatch
    return bool(
        any(getattr(dispatch, name) for name in _STATEMENT_EVENTS)
        or engine.dialect.dispatch.handle_error
    )


_STATEMENT_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)

_CONFLICT_RERUNS = 5
"""Runs of a :meth:`Database.write` with ``rerun_on_conflict`` before a unique-key
violation is raised: each rerun sees the rows of the writers it collided with."""

_PREPARED_KEPT = 512
"""Statements kept compiled per database: far more than the fixed ones there are."""

_BATCH = "(a batch of write statements)"
"""What a driver error raised by :meth:`Database.batch_write` names as its statement."""

_POOL_BUSY = (
    "every connection in this process's pool stayed in use (other threads waiting on "
    "the database) past the pool timeout; nothing was written, try again."
)


def _checkout(engine: Engine) -> PoolProxiedConnection:
    """A pooled driver connection, as :meth:`Engine.raw_connection` gives it, with a
    failure to open one raised as SQLAlchemy's :class:`DBAPIError` (statement None, as
    :meth:`Engine.connect` raises it), so that retries and translation see it: the raw
    driver error never reaches the caller."""
    dialect = engine.dialect
    try:
        return engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:
        raise _connect_error(dialect, exc) from exc
    except (DisconnectionError, InvalidRequestError) as exc:  # the pool's reconnects failed
        raise DBAPIError(None, None, exc, connection_invalidated=True) from exc


def _connect_error(dialect: Dialect, exc: Exception) -> DBAPIError:
    gone = bool(dialect.is_disconnect(exc, None, None))  # type: ignore[arg-type]
    error = DBAPIError.instance(
        None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
    )
    assert isinstance(error, DBAPIError)  # a driver error always becomes one
    return error


def _discard(raw: PoolProxiedConnection, exc: BaseException | None = None) -> None:
    """Invalidate ``raw`` once: a second invalidation of a closed connection only
    warns ("Can't invalidate an already-closed connection")."""
    if raw.is_valid:
        raw.invalidate(exc)


def _name_of(thing: Any) -> str:
    """A call's name for the slow-call log: the function that does the work
    (``TaskStore.save_many``), or, for a lone SELECT, the tables it reads."""
    qualname = getattr(thing, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname.replace(".<locals>", "").removesuffix(".work").removesuffix(".<lambda>")
    froms = getattr(thing, "get_final_froms", None)
    if froms is not None:
        names = [str(getattr(f, "name", "")) for f in froms()]
        return "select from " + ", ".join(name for name in names if name)
    return type(thing).__name__


def _slow_call_ms() -> float:
    raw = os.environ.get(SLOW_CALL_ENV, "").strip()
    try:
        return float(raw) if raw else SLOW_CALL_MS
    except ValueError:
        return SLOW_CALL_MS


_caller_engines: dict[tuple[int, str | None], Database] = {}
_caller_engines_lock = threading.Lock()


def caller_engine_database(engine: Engine, schema: str | None = None) -> Database:
    """The one :class:`Database` for an engine the caller built: every store on that
    engine shares it, so the engine is configured once however many stores use it."""
    key = (id(engine), schema)
    with _caller_engines_lock:
        database = _caller_engines.get(key)
        if database is None or database._engine is not engine:
            database = Database(
                backend_for_url(engine.url, schema=schema, source="engine.url"), engine
            )
            _caller_engines[key] = database
        database.users += 1
        return database


def release_caller_engine_database(database: Database, schema: str | None = None) -> None:
    """One store fewer on a caller's engine; the last one hands the engine back as it
    found it (:meth:`Database.hand_back`)."""
    with _caller_engines_lock:
        database.users -= 1
        if database.users > 0:
            return
        key = (id(database._engine), schema)
        if _caller_engines.get(key) is database:
            del _caller_engines[key]
    database.hand_back()


_registry: dict[str, Database] = {}
_registry_lock = threading.Lock()


def shared_database(key: str, make_backend: Callable[[], Backend]) -> Database:
    """The process-wide :class:`Database` for ``key``, made on first use."""
    with _registry_lock:
        database = _registry.get(key)
        if database is None:
            database = _registry[key] = Database(make_backend())
        database.users += 1
        return database


def release_database(key: str, database: Database) -> None:
    """One user fewer; the last one closes the engine's connections."""
    with _registry_lock:
        database.users -= 1
        if database.users <= 0 and _registry.get(key) is database:
            del _registry[key]
            database.dispose()


def database_for_url(
    url: str | URL, schema: str | None = None, *, source: str = "url"
) -> tuple[str, Database]:
    """The shared database for a SQLAlchemy URL, and its registry key: the whole URL,
    credentials included, so that two logins never share an engine (servers key on a
    digest of it, never on the password itself). Errors name ``source``."""
    backend = backend_for_url(url, schema=schema, source=source)
    key = backend.registry_key()
    return key, shared_database(key, lambda: backend)


def _after_fork_in_child() -> None:
    for database in _registry.values():
        database.forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)
