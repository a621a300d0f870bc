"""Engines, connections and transactions: set up once, shared, retried when busy.

Every :class:`~uniqc_taskstore.store.TaskStore` pointed at the same file or URL in
one process shares one :class:`Database`: one pooled engine, one schema check.
Constructing a store again is free once the database is warm; connections are
reused from the pool and their settings were applied when they were opened.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from .backends import Backend, backend_for_url
from .backends.base import BUSY_ATTEMPTS_ENV, BUSY_TIMEOUT_ENV, BusyPolicy, DriverBatch, Listener
from .backends.sqlite import WRITE_OPTION
from .errors import DatabaseBusyError, DatabaseError, TaskStoreError
from .migrator import MIGRATIONS, Migration, MigrationReport, migrate

T = TypeVar("T")


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
        self.busy = backend.busy = BusyPolicy.from_environment()
        self.owns_engine = engine is None
        self._engine = engine
        self._migrations = migrations
        self._ready = False
        self._lock = threading.RLock()
        self.users = 0
        self.last_migration: MigrationReport | None = None
        self._caller_listeners: list[Listener] = []
        self._prepared: dict[Select[Any], _Prepared] = {}
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
                self.last_migration = _with_busy_retry(
                    self.backend,
                    self.busy,
                    lambda: migrate(self.backend, engine, self._migrations, create=create),
                )
            except DBAPIError as exc:
                raise self._translate(exc) from exc
            self._ready = True

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a read transaction (a consistent snapshot)."""
        return self._transaction(work, write=False)

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
        prepared = self._prepared.get(stmt)
        if prepared is None:
            prepared = self._prepared[stmt] = _Prepared(stmt, self.engine.dialect)
        engine = self.engine
        backend = self.backend

        def attempt() -> list[dict[str, Any]]:
            args = prepared.arguments(params)
            raw = engine.raw_connection()
            try:
                try:
                    found = backend.lone_select(raw.dbapi_connection, prepared.sql, args)
                except prepared.dbapi_error as exc:
                    raise DBAPIError.instance(
                        prepared.sql, args, exc, prepared.dbapi_error, dialect=engine.dialect
                    ) from exc
            finally:
                raw.close()
            return prepared.rows(found)

        try:
            if self._serial is not None:
                with self._serial:
                    return _with_busy_retry(backend, self.busy, attempt)
            return _with_busy_retry(backend, self.busy, attempt)
        except DBAPIError as exc:
            raise self._translate(exc) from exc
        except PoolTimeoutError:
            raise DatabaseBusyError(f"{backend.describe()}: {_POOL_BUSY}") from None

    def batch_write(self, work: Callable[[DriverBatch], T]) -> T:
        """Run ``work`` in a write transaction sent in batches on a pooled driver
        connection (:meth:`Backend.driver_batch`: one round trip per batch), with the
        same busy retries and error translation as :meth:`write`. Only for backends
        whose :meth:`Backend.batched_writes` is true."""
        engine = self.engine
        backend = self.backend
        dialect = engine.dialect
        dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

        def attempt() -> T:
            raw = engine.raw_connection()
            try:
                batch = backend.driver_batch(raw.dbapi_connection)
                try:
                    result = work(batch)
                except BaseException:
                    try:
                        batch.end()
                    except Exception:  # the first error says why; this connection goes
                        raw.invalidate()
                    raise
                batch.end()
                backend.after_finished_batch(raw.info)
                return result
            except dbapi_error as exc:
                gone = dialect.is_disconnect(exc, raw.dbapi_connection, None)  # type: ignore[arg-type]
                if gone:
                    raw.invalidate(exc)
                raise DBAPIError.instance(
                    _BATCH, None, exc, dbapi_error, connection_invalidated=gone, dialect=dialect
                ) from exc
            finally:
                raw.close()

        try:
            return _with_busy_retry(backend, self.busy, attempt)
        except DBAPIError as exc:
            raise self._translate(exc) from exc
        except PoolTimeoutError:
            raise DatabaseBusyError(f"{backend.describe()}: {_POOL_BUSY}") from None

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction: on SQLite it holds the write lock from
        BEGIN; on servers, rows read ``FOR UPDATE`` stay locked until commit. Retried
        whole when the database is busy."""
        return self._transaction(work, write=True)

    def _transaction(
        self, work: Callable[[Connection], T], *, write: bool, single: bool = False
    ) -> T:
        engine = self.engine
        backend = self.backend
        single_options = backend.single_statement_options if single else None

        def attempt() -> T:
            with engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                elif single_options:
                    conn.execution_options(**single_options)
                with conn.begin():
                    result = work(conn)
                backend.after_commit(conn)
                return result

        try:
            if self._serial is not None:
                with self._serial:
                    return _with_busy_retry(self.backend, self.busy, attempt)
            return _with_busy_retry(self.backend, self.busy, attempt)
        except DBAPIError as exc:
            raise self._translate(exc) from exc
        except PoolTimeoutError:  # every pooled connection stayed checked out
            raise DatabaseBusyError(f"{self.backend.describe()}: {_POOL_BUSY}") from None
        except StatementError as exc:
            # A value our column types refused while binding (e.g. a result JSON
            # cannot hold): surface our own error, the transaction rolled back.
            if isinstance(exc.orig, TaskStoreError):
                raise exc.orig from None
            raise

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


class _Prepared:
    """One SELECT compiled for one dialect: its SQL text, how to bind its parameters
    (column types' bind processing, positional or named) and how to convert its
    result columns (the types' result processing), done once."""

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.defaults: dict[str, Any] = dict(compiled.construct_params(_check=False))
        self.order = list(compiled.positiontup or ()) if compiled.positional else None
        self.binds = {
            name: bind.type._cached_bind_processor(dialect)
            for bind, name in compiled.bind_names.items()
        }
        self.keys = [str(c.key) for c in stmt.selected_columns]
        self.results = [
            c.type._cached_result_processor(dialect, None) for c in stmt.selected_columns
        ]
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def arguments(self, params: Mapping[str, Any]) -> Any:
        values = self.defaults | dict(params)
        for name, process in self.binds.items():
            if process is not None:
                values[name] = process(values[name])
        return values if self.order is None else tuple(values[n] for n in self.order)

    def rows(self, found: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        pairs = list(zip(self.keys, self.results, strict=True))
        return [
            {
                key: value if process is None else process(value)
                for (key, process), value in zip(pairs, row, strict=True)
            }
            for row in found
        ]


_BATCH = "(a batch of write statements)"
"""What a driver error raised by :meth:`Database.batch_write` names as its statement."""

_POOL_BUSY = (
    "every connection in this process's pool stayed in use (other threads waiting on "
    "the database) past the pool timeout; nothing was written, try again."
)


def _with_busy_retry(backend: Backend, busy: BusyPolicy, attempt: Callable[[], T]) -> T:
    """Call ``attempt`` again, after a jittered, growing pause, while the database is busy."""
    for tries in range(busy.attempts):
        try:
            return attempt()
        except DBAPIError as exc:
            if not backend.is_busy(exc) or tries == busy.attempts - 1:
                raise
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**tries)))
    raise AssertionError("unreachable")


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
