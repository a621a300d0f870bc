"""PostgreSQL: native upsert, an advisory lock for migrations, optional schema.

The migration lock is waited for with ``lock_timeout`` set for that one statement, so
a stuck migrator ends the wait with a typed error naming it (from ``pg_locks`` and
``pg_stat_activity``) instead of blocking every process that opens the store."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Table,
    cast,
    column,
    create_engine,
    func,
    select,
    table,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateSchema

from .base import (
    CHANGES_RECORDED,
    Assignments,
    ChangeListener,
    DriverBatch,
    Listener,
    Outcome,
    Step,
    driver_errors,
)
from .server import MIGRATION_LOCK_NAME, ServerBackend

# serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
_LOCK_NOT_AVAILABLE = "55P03"
_UNIQUE_VIOLATION = "23505"
_QUERY_CANCELED = "57014"
_NO_SUCH_PREPARED_STATEMENT = "26000"  # invalid_sql_statement_name
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections; class 08:
# connection exceptions.
_CONNECTION_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
# invalid_authorization_specification, invalid_password
_LOGIN_SQLSTATES = {"28000", "28P01"}

_pg_locks = table(
    "pg_locks",
    column("locktype"),
    column("classid"),
    column("objid"),
    column("objsubid"),
    column("pid"),
    column("granted"),
)
_pg_stat_activity = table(
    "pg_stat_activity",
    column("pid"),
    column("datname"),
    column("usename"),
    column("application_name"),
    column("client_addr"),
)


class PostgresBackend(ServerBackend):
    """PostgreSQL through psycopg 3; ``schema`` puts the tables in their own schema."""

    name = "postgresql"
    # psycopg sends BEGIN before the first statement and COMMIT after: two round trips
    # a lone SELECT does not need. Autocommit is a client-side flag, set without one.
    single_statement_options: ClassVar[dict[str, Any]] = {"isolation_level": "AUTOCOMMIT"}
    lateral_tags = True
    # A snapshot read: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY, in the same
    # round trip as plain BEGIN (both are client-side flags of the driver). A read-only
    # REPEATABLE READ transaction never fails with a serialization error.
    snapshot_options: ClassVar[dict[str, Any]] = {
        "isolation_level": "REPEATABLE READ",
        "postgresql_readonly": True,
    }

    def __init__(self, url: str | URL, *, schema: str | None = None) -> None:
        super().__init__(url)
        self.schema = schema
        self._pipelines: bool | None = None
        self._followed = True
        self._followed_until = 0.0

    def describe(self) -> str:
        where = super().describe()
        return f"{where} (schema {self.schema})" if self.schema else where

    def change_listener(self, engine: Engine) -> ChangeListener | None:
        """``LISTEN`` on a pooled connection for the ``NOTIFY`` that every writer sends
        right after a commit that wrote changes (:func:`notify_followers`)."""
        return _NotifyListener(engine)

    def after_commit(self, conn: Connection) -> None:
        if not conn.info.pop(CHANGES_RECORDED, False):
            return
        dbapi_conn = conn.connection.driver_connection
        if self.followed(dbapi_conn) and not notify_followers(dbapi_conn):
            conn.invalidate()

    def followed(self, dbapi_conn: Any) -> bool:
        """Whether a follower listens (:data:`FOLLOWER_LOCK`), asked of the server on
        ``dbapi_conn`` (idle, in autocommit or not) at most once per
        :data:`FOLLOWERS_CHECKED_EVERY` seconds. A writer that does not know says yes."""
        now = time.monotonic()
        if now < self._followed_until:
            return self._followed
        try:
            followed = bool(_run_alone(dbapi_conn, _FOLLOWED_SQL))
        except Exception:  # the write that follows meets the same trouble, and says so
            return True
        self._followed, self._followed_until = followed, now + FOLLOWERS_CHECKED_EVERY
        return followed

    def create_engine(self) -> Engine:
        connect_args = {}
        if self.url.get_driver_name() == "psycopg" and "connect_timeout" not in self.url.query:
            # libpq's connect_timeout bounds the whole handshake, not just the TCP connect.
            connect_args["connect_timeout"] = int(self.connect_timeout)
        engine = create_engine(self.url, connect_args=connect_args, **self.engine_options())
        self.configure_engine(engine)
        return engine

    def connection_listeners(self) -> list[Listener]:
        schema = self.schema
        quoted = None if schema is None else '"' + schema.replace('"', '""') + '"'
        lock_timeout_ms = self.busy.timeout_ms
        statement_timeout_ms = round(self.statement_timeout * 1000)

        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_conn.cursor()
            try:
                if quoted is not None:
                    # search_path rather than schema-qualified tables, so every statement
                    # (migrations' DDL included) lands in the group's schema.
                    cursor.execute(f"SET search_path TO {quoted}")
                # A held row lock becomes a retryable busy error, not an endless wait.
                cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
                # A statement running past it is cancelled: StatementTimeoutError.
                cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
            finally:
                cursor.close()
            dbapi_conn.commit()

        return [*super().connection_listeners(), ("connect", _on_connect)]

    def after_open(self, engine: Engine) -> None:
        if self.schema is not None:
            with engine.begin() as conn:
                conn.execute(CreateSchema(self.schema, if_not_exists=True))

    def acquire_migration_lock(self, conn: Connection) -> None:
        milliseconds = max(1, round(self.migration_lock_timeout * 1000))
        try:
            with conn.begin():
                # is_local: the timeout ends with this transaction; the (session-level)
                # advisory lock does not.
                conn.execute(select(func.set_config("lock_timeout", str(milliseconds), True)))
                conn.execute(select(func.pg_advisory_lock(self._lock_key())))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            raise self.lock_wait_error(self._lock_holder(conn)) from None

    def _lock_holder(self, conn: Connection) -> str | None:
        """Who holds the migration lock, as far as ``pg_stat_activity`` shows."""
        key = self._lock_key() & 0xFFFFFFFFFFFFFFFF
        # A bigint advisory key is stored as classid (high half), objid (low half).
        query = (
            select(
                _pg_stat_activity.c.pid,
                _pg_stat_activity.c.usename,
                _pg_stat_activity.c.application_name,
                _pg_stat_activity.c.client_addr,
            )
            .join_from(_pg_locks, _pg_stat_activity, _pg_locks.c.pid == _pg_stat_activity.c.pid)
            .where(
                _pg_locks.c.locktype == "advisory",
                _pg_locks.c.granted.is_(True),
                cast(_pg_locks.c.classid, BigInteger) == key >> 32,
                cast(_pg_locks.c.objid, BigInteger) == key & 0xFFFFFFFF,
                _pg_locks.c.objsubid == 1,
                _pg_stat_activity.c.datname == func.current_database(),
            )
        )
        try:
            row = conn.execute(query).first()
        finally:
            conn.rollback()
        if row is None:
            return None
        details = [f"user {row.usename}"] if row.usename else []
        if row.application_name:
            details.append(f"application {row.application_name!r}")
        if row.client_addr:
            details.append(f"client {row.client_addr}")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"PostgreSQL session pid {row.pid}{suffix}"

    def release_migration_lock(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_unlock(self._lock_key())))
        conn.commit()

    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"{MIGRATION_LOCK_NAME}:{self.schema or ''}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        stmt = postgresql.insert(table)
        return stmt.on_conflict_do_update(index_elements=list(key), set_=dict(set_(stmt.excluded)))

    def ping(self, do_ping: Any, dbapi_conn: Any) -> bool:
        """In autocommit, so the ``SELECT 1`` leaves no transaction open."""
        if self.url.get_driver_name() != "psycopg":
            return super().ping(do_ping, dbapi_conn)
        dbapi_conn.autocommit = True
        try:
            return super().ping(do_ping, dbapi_conn)
        finally:
            dbapi_conn.autocommit = False

    def lone_select(self, dbapi_conn: Any, sql: str, args: Any) -> list[Any]:
        """In autocommit, so psycopg sends no BEGIN before the SELECT (and the pool's
        reset then has no transaction to roll back): one round trip."""
        if self.url.get_driver_name() != "psycopg":
            return super().lone_select(dbapi_conn, sql, args)
        dbapi_conn.autocommit = True
        try:
            return super().lone_select(dbapi_conn, sql, args)
        finally:
            dbapi_conn.autocommit = False

    def batched_writes(self) -> bool:
        """With psycopg 3 and a libpq that has pipeline mode (14 or later)."""
        if self._pipelines is None:
            supported = False
            if self.url.get_driver_name() == "psycopg":
                import psycopg

                supported = bool(psycopg.Pipeline.is_supported())
            self._pipelines = supported
        return self._pipelines

    def driver_batch(self, dbapi_conn: Any) -> DriverBatch:
        return _Pipeline(dbapi_conn, self.followed)

    def bulk_insert(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """``COPY ... FROM STDIN`` through psycopg 3 (one stream, no per-row statement);
        other drivers get the plain executemany. Values go through each column's own
        bind processing first, so they are stored exactly as an INSERT would store them.
        """
        if not rows:
            return
        raw = conn.connection.driver_connection
        if self.url.get_driver_name() != "psycopg" or raw is None:
            super().bulk_insert(conn, table, rows)
            return
        dialect = conn.dialect
        columns = [c for c in table.columns if c.name in rows[0]]
        processors = [c.type._cached_bind_processor(dialect) for c in columns]
        # COPY has no Core construct; the names come from the Table, quoted by the dialect.
        quote = dialect.identifier_preparer
        names = ", ".join(quote.quote(c.name) for c in columns)
        statement = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for process, value in zip(
                            processors, (row[c.name] for c in columns), strict=True
                        )
                    ]
                )

    def bulk_insert_bound(
        self, conn: Connection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> None:
        """``COPY ... FROM STDIN`` of rows already bound (psycopg 3; other drivers get
        the executemany). A driver error is raised as SQLAlchemy's, so busy retries and
        error messages work as for any statement."""
        raw = conn.connection.driver_connection
        if not rows or self.url.get_driver_name() != "psycopg" or raw is None:
            super().bulk_insert_bound(conn, table, rows)
            return
        dialect = conn.dialect
        quote = dialect.identifier_preparer
        names = ", ".join(quote.quote(column.name) for column in table.columns)
        statement = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
        with (
            driver_errors(dialect, statement),
            raw.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def is_busy(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES

    def is_conflict(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == _UNIQUE_VIOLATION

    def is_connection_failure(self, error: DBAPIError) -> bool:
        state = getattr(error.orig, "sqlstate", None) or ""
        return state in _CONNECTION_SQLSTATES or state.startswith("08")

    def is_stale_session(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == _NO_SUCH_PREPARED_STATEMENT

    def is_login_refused(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) in _LOGIN_SQLSTATES

    def is_statement_timeout(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == _QUERY_CANCELED


class _Pipeline(DriverBatch):
    """A transaction sent through psycopg's pipeline mode: each :meth:`send` queues its
    statements (and ``BEGIN`` / ``COMMIT``) and ends with one ``Sync``, the only point
    where the client waits. The connection runs in autocommit meanwhile, so that the
    ``BEGIN`` is ours and travels with the first statements (psycopg's own ``BEGIN``
    in a pipeline is answered before anything else is sent: a round trip of its own).
    """

    _BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"

    def __init__(self, conn: Any, followed: Callable[[Any], bool]) -> None:
        self._conn = conn
        self._begun = False
        self._changes = False
        # Asked first: whatever ends it (a Ctrl-C), it leaves autocommit as it was.
        self._notify = followed(conn)
        self._autocommit = conn.autocommit  # a caller's engine may keep it on
        conn.autocommit = True

    def send(self, steps: Sequence[Step], *, commit: bool = False) -> list[Outcome]:
        import psycopg

        conn = self._conn
        cursors = []
        committed: Any = None
        self.commit_sent = self.commit_sent or commit
        failed: psycopg.Error | None = None
        try:
            with conn.pipeline():
                # A driver error here (the connection lost while queueing) is raised
                # after the pipeline ends: raised inside it, psycopg would log the end's
                # own failure as "error ignored terminating Pipeline".
                try:
                    if not self._begun:
                        conn.execute(self._BEGIN)
                        self._begun = True
                    for step in steps:
                        self._changes = self._changes or step.records_changes
                        cursor = conn.cursor()
                        if step.many:
                            cursor.executemany(step.sql, step.params)
                        else:
                            cursor.execute(step.sql, step.params)
                        cursors.append(cursor)
                    if commit:
                        committed = conn.execute("COMMIT")
                        if self._changes and self._notify:  # see notify_followers
                            conn.execute(NOTIFY_SQL)
                except psycopg.Error as exc:
                    failed = exc
        except psycopg.Error as exc:
            if failed is None:
                failed = exc
        if failed is not None:
            if committed is None or committed.statusmessage != "COMMIT":
                raise failed
            # The COMMIT was answered: the write is done, only its wake-up failed (or
            # the connection was lost after it). Followers read the log on their own
            # at a short interval; a lost connection is not handed back.
            self.discard = conn.broken
        if commit:
            self.finished = True
        outcomes = []
        for step, cursor in zip(steps, cursors, strict=True):
            rows = cursor.fetchall() if cursor.description is not None else []
            outcomes.append(step.outcome(rows, cursor.rowcount))
            cursor.close()
        return outcomes

    def end(self) -> None:
        import psycopg

        conn = self._conn
        if self.discard:
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        self.finished = True
        conn.autocommit = self._autocommit


CHANGES_CHANNEL = "uniqc_changes"
"""What writers notify right after each commit that wrote changes (migration v16)."""

NOTIFY_SQL = f"SELECT pg_notify('{CHANGES_CHANNEL}', '')"

FOLLOWER_LOCK = (0x75716374, 0x66656564)
"""The advisory lock (two int4 keys) that every listening connection holds shared while
it listens: how writers know that somebody follows. Held by the session, so a follower
that dies releases it with its connection."""
FOLLOWERS_CHECKED_EVERY = 1.0
"""Seconds a writer (a store) keeps its answer to "does anybody follow?". A follower
that starts listening is notified by every writer within this; until then its own
reads find the changes (``follow`` reads at least once a second, a wait every 0.25 s)."""
# True if a follower holds the lock shared: the exclusive one cannot be had. When it
# can, it is the statement's own transaction's and goes with it.
_FOLLOWED_SQL = f"SELECT NOT pg_try_advisory_xact_lock({FOLLOWER_LOCK[0]}, {FOLLOWER_LOCK[1]})"


def notify_followers(dbapi_conn: Any) -> bool:
    """Wake every follower (``LISTEN uniqc_changes``): a ``NOTIFY`` of its own, sent on
    the DBAPI connection ``dbapi_conn`` right after a commit that wrote changes, if
    anybody follows (:meth:`PostgresBackend.followed`).

    Never inside the writing transaction: PostgreSQL queues a transaction's
    notifications under one database-wide lock held until its commit record is
    flushed, so a notifying write would serialise every writer's commit. This one
    writes nothing and holds that lock for microseconds. It is a wake-up only: the
    write is done whatever happens here, so no error leaves (a follower also reads the
    log at a short interval). False if the connection was lost meanwhile (it is then
    unfit for reuse); a refusal (a role that may not notify) leaves it usable."""
    try:
        _run_alone(dbapi_conn, NOTIFY_SQL)
    except Exception:  # the driver's error: the wake-up is lost, the write is not
        return not (getattr(dbapi_conn, "broken", False) or getattr(dbapi_conn, "closed", False))
    return True


def _run_alone(dbapi_conn: Any, sql: str) -> Any:
    """The first value of the one-row ``SELECT`` ``sql``, run on the idle DBAPI
    connection in autocommit (no BEGIN / COMMIT round trips around it), which is left
    as it was, whatever ends the call. The driver's errors are raised."""
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetchone()[0]
        finally:
            cursor.close()
    finally:
        dbapi_conn.autocommit = autocommit


_FOLLOW_SQL = f"SELECT pg_advisory_lock_shared({FOLLOWER_LOCK[0]}, {FOLLOWER_LOCK[1]})"
_UNFOLLOW_SQL = f"SELECT pg_advisory_unlock_shared({FOLLOWER_LOCK[0]}, {FOLLOWER_LOCK[1]})"


class _NotifyListener(ChangeListener):
    """``LISTEN`` on a connection of its own, a wake-up and nothing more: when that
    connection cannot be had or is lost, a wait says "perhaps woken" after a short pause
    (its caller then reads the feed, whose errors are translated and retried like every
    read's) and the next wait listens again. No driver error leaves it."""

    _PAUSE = 0.05
    """How long a wait without a listening connection pauses before its caller reads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._raw: Any = None
        self._conn: Any = None
        self._autocommit = False
        self._listen()

    def _listen(self) -> bool:
        try:
            raw = self._engine.raw_connection()
        except Exception:  # the server is unreachable: the caller's read will say so
            return False
        conn: Any = raw.driver_connection
        autocommit = conn.autocommit
        try:
            conn.autocommit = True
            # Said before listening: a NOTIFY sent in between is missed, and the
            # caller's first read, made after this, finds what it was for.
            conn.execute(_FOLLOW_SQL)
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except BaseException as exc:
            _discard(raw)
            if not isinstance(exc, Exception):
                raise
            return False
        self._raw, self._conn, self._autocommit = raw, conn, autocommit
        return True

    def wait(self, timeout: float) -> bool:
        if self._raw is None:
            if self._listen():
                return True  # listening from now: a commit before it is the read's
            time.sleep(min(timeout, self._PAUSE))
            return True
        woken = False
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                woken = True
            if woken:  # one read answers every commit notified so far
                for _ in self._conn.notifies(timeout=0):
                    pass
        except Exception:  # the connection was lost: read now, listen again next time
            _discard(self._raw)
            self._raw = self._conn = None
            return True
        return woken

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            self._conn.execute(f"UNLISTEN {CHANGES_CHANNEL}")
            self._conn.execute(_UNFOLLOW_SQL)
            self._conn.autocommit = self._autocommit
        except BaseException as exc:
            # A broken connection, or one left half way by a Ctrl-C, still listening or
            # still holding the follower lock: never handed back to the pool, where it
            # would keep every writer notifying though nobody follows.
            _discard(raw)
            self._conn = None
            if not isinstance(exc, Exception):
                raise
            return
        raw.close()
        self._conn = None


def _discard(raw: Any) -> None:
    """Close ``raw`` for good (the pool opens a new connection in its place)."""
    try:
        raw.invalidate()
        raw.close()
    except Exception:  # already closed: nothing to give back
        pass
