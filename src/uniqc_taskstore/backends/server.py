"""What PostgreSQL and MariaDB/MySQL share: the schema stamp lives in a table.

Servers have no ``PRAGMA``, so the application id and schema version sit in the
one-row table ``uniqc_schema``. A database that already has a table named like
ours but no stamp is somebody else's and is refused.

Connections: a server that accepts the connection and never answers is given up
after ``connect_timeout`` seconds (default :data:`CONNECT_TIMEOUT_SECONDS`, or
``?connect_timeout=N`` in the URL). Each process keeps a pool of
:data:`POOL_SIZE` connections and opens up to :data:`POOL_MAX_OVERFLOW` more under
load; a thread that finds them all busy waits :data:`POOL_TIMEOUT_SECONDS`, then
gets :class:`DatabaseBusyError`. Pass ``engine=`` for other pool settings.

Timeouts and retries, per store, as query parameters of the URL (seconds; taken out
of the URL before it reaches the driver):

- ``statement_timeout``: a statement running longer is cancelled (PostgreSQL
  ``statement_timeout``, MariaDB ``max_statement_time``, set on every connection) and
  the call raises :class:`StatementTimeoutError`; default 0, no limit;
- ``lock_timeout``: how long one attempt waits for a lock another session holds
  (PostgreSQL ``lock_timeout``, MariaDB ``innodb_lock_wait_timeout`` and
  ``lock_wait_timeout``) before it is retried as busy; default ``UNIQC_BUSY_TIMEOUT``
  or 10;
- ``retry_budget``: how long a call keeps retrying a lost or refused connection once
  the store has opened the database (:mod:`uniqc_taskstore.retries`); default
  :data:`RETRY_BUDGET_SECONDS`.

Health checks cost no round trip on a busy connection: a pooled connection is pinged
(``SELECT 1``) before it is handed out only when it sat idle longer than
:data:`IDLE_PING_SECONDS` or when its socket has something to read (a server that
closed it, restarted or killed the session, sends that before closing). A dead one
is replaced by a fresh connection, as ``pool_pre_ping`` would, without that ping's
round trip on every call.
"""

from __future__ import annotations

import math
import select as io_select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Engine, insert, inspect, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from ..errors import (
    DatabaseBusyError,
    DatabaseConnectionError,
    DatabaseError,
    InvalidInputError,
    StatementTimeoutError,
)
from ..schema import metadata, schema_stamp
from .base import APPLICATION_ID, Backend, BusyPolicy, Listener, refuse_foreign
from .fork import guard_after_fork
from .urls import parse_url, safe_url, scrub, url_digest

MIGRATION_LOCK_NAME = "uniqc_taskstore.migrate"
MIGRATION_LOCK_TIMEOUT_SECONDS = 300
"""How long opening a store waits for another process's migration, on every server."""
CONNECT_TIMEOUT_SECONDS = 10
"""How long to wait for a server to accept and answer a new connection."""
POOL_SIZE = 5
"""Connections each process keeps open per server database."""
POOL_MAX_OVERFLOW = 15
"""Connections each process opens beyond :data:`POOL_SIZE` while threads need them."""
POOL_TIMEOUT_SECONDS = 30
"""How long a thread waits for a free connection before :class:`DatabaseBusyError`."""
IDLE_PING_SECONDS = 30.0
"""A pooled connection idle longer than this is pinged before it is handed out."""
RETRY_BUDGET_SECONDS = 30.0
"""How long, by default, a call keeps retrying a lost or refused connection: longer
than a server's restart takes."""
STORE_OPTIONS = ("statement_timeout", "lock_timeout", "retry_budget")
"""The URL query parameters read by the store itself (seconds), never sent to the driver."""
_RETURNED_AT = "uniqc_taskstore_returned_at"


class ServerBackend(Backend):
    """A database server reached through a SQLAlchemy URL."""

    migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT_SECONDS

    def __init__(self, url: str | URL) -> None:
        parsed = parse_url(url)
        self.options = _store_options(parsed)
        self.url = parsed.difference_update_query(STORE_OPTIONS)
        self.statement_timeout = self.options.get("statement_timeout", 0.0)
        self.retry_budget = self.options.get("retry_budget", RETRY_BUDGET_SECONDS)

    def busy_policy(self) -> BusyPolicy:
        policy = super().busy_policy()
        lock_timeout = self.options.get("lock_timeout")
        return policy if lock_timeout is None else replace(policy, timeout=lock_timeout)

    def describe(self) -> str:
        return f"database {safe_url(self.url)}"

    def registry_key(self) -> str:
        # Two logins to one database are two engines: a wrong password must never be
        # served by another caller's authenticated connections. Other timeouts: another.
        options = " ".join(f"{name}={value:g}" for name, value in sorted(self.options.items()))
        return f"{self.describe()} {url_digest(self.url)} {options}".rstrip()

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a new connection: the URL's ``connect_timeout`` or ours."""
        try:
            return float(str(self.url.query["connect_timeout"]))
        except (KeyError, ValueError):
            return CONNECT_TIMEOUT_SECONDS

    def engine_options(self) -> dict[str, Any]:
        """``create_engine`` keywords every server shares: pool size, health checks."""
        return {
            "pool_size": POOL_SIZE,
            "max_overflow": POOL_MAX_OVERFLOW,
            "pool_timeout": POOL_TIMEOUT_SECONDS,
            # Instead of pool_pre_ping's round trip on every checkout: see the module.
            "pool_pre_ping": False,
            "isolation_level": "READ COMMITTED",
        }

    idle_ping_seconds: float = IDLE_PING_SECONDS

    def configure_engine(self, engine: Engine) -> list[Listener]:
        guard_after_fork(engine)
        return super().configure_engine(engine)

    def connection_listeners(self) -> list[Listener]:
        dialect_ping: list[Any] = []

        def _returned(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
            record.info[_RETURNED_AT] = time.monotonic()

        def _check_health(
            dbapi_conn: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
        ) -> None:
            returned = record.info.get(_RETURNED_AT)
            if returned is None:  # a new connection: just made, nothing to check
                return
            idle = time.monotonic() - returned
            if idle <= self.idle_ping_seconds and not _has_input(self.socket_of(dbapi_conn)):
                return
            if not dialect_ping:
                dialect_ping.append(proxy._pool._dialect.do_ping)
            try:
                alive = self.ping(dialect_ping[0], dbapi_conn)
            except Exception as exc:  # the driver's own error for a dead connection
                raise DisconnectionError(f"pooled connection failed its ping: {exc!r}") from exc
            if not alive:
                raise DisconnectionError("pooled connection failed its ping")

        return [("checkin", _returned), ("checkout", _check_health)]

    def ping(self, do_ping: Any, dbapi_conn: Any) -> bool:
        """One ``SELECT 1`` on a pooled connection (a round trip); True if it answered."""
        return bool(do_ping(dbapi_conn))

    def socket_of(self, dbapi_conn: Any) -> int | None:
        """The file descriptor of a driver connection's socket, if known."""
        try:
            return int(dbapi_conn.fileno())
        except Exception:
            return None

    def translate(self, error: DBAPIError) -> Exception | None:
        orig = error.orig if error.orig is not None else error
        detail = scrub(f"{type(orig).__name__}: {orig}".strip(), self.url)
        if self.is_statement_timeout(error):
            return StatementTimeoutError(
                f"{self.describe()}: a statement ran past the statement timeout of "
                f"{self.statement_timeout:g} s and was cancelled; nothing was written. "
                "Try again, or allow longer statements with ?statement_timeout=SECONDS "
                "in the URL (0: no limit)."
            )
        if error.statement is None:  # raised while connecting, before any statement
            return DatabaseConnectionError(
                f"cannot connect to {self.describe()} ({detail}). Check the host, port, "
                "user and password; the wait for a connection is bounded by "
                f"connect_timeout={self.connect_timeout:g} s (set ?connect_timeout= in "
                "the URL to change it)."
            )
        return DatabaseError(f"{self.describe()}: {detail}")

    def lock_wait_error(self, holder: str | None) -> DatabaseBusyError:
        """The error for a migration lock held past :attr:`migration_lock_timeout`."""
        who = holder or "another process (it could not be identified)"
        return DatabaseBusyError(
            f"{self.describe()}: the schema migration lock stayed held by {who} for "
            f"{self.migration_lock_timeout:g} s; nothing was changed. Try again once that "
            "migration has finished, or end that session if it is stuck."
        )

    def claim(self, conn: Connection, *, stamp: bool = True) -> int:
        tables = set(inspect(conn).get_table_names())
        if schema_stamp.name not in tables:
            ours = sorted(tables & set(metadata.tables))
            if ours:
                raise refuse_foreign(self.describe(), f"has tables {ours} without our stamp")
            if not stamp:
                return 0
            schema_stamp.create(conn, checkfirst=True)
        row = conn.execute(select(schema_stamp).where(schema_stamp.c.id == 1)).first()
        if row is None:
            if not stamp:
                return 0
            conn.execute(
                insert(schema_stamp).values(id=1, application_id=APPLICATION_ID, schema_version=0)
            )
            return 0
        if row.application_id != APPLICATION_ID:
            raise refuse_foreign(self.describe(), f"has application id {row.application_id:#010x}")
        return int(row.schema_version)

    def write_version(self, conn: Connection, version: int) -> None:
        conn.execute(
            update(schema_stamp).where(schema_stamp.c.id == 1).values(schema_version=version)
        )

    def migration_connection(self, engine: Engine) -> Any:
        return self._locked(engine)

    @contextmanager
    def _locked(self, engine: Engine) -> Iterator[Connection]:
        with engine.connect() as conn:
            self.acquire_migration_lock(conn)
            try:
                yield conn
            finally:
                if conn.in_transaction():
                    conn.rollback()
                self.release_migration_lock(conn)

    def acquire_migration_lock(self, conn: Connection) -> None:
        """Take the database-wide, session-level migration lock on ``conn``."""
        raise NotImplementedError

    def release_migration_lock(self, conn: Connection) -> None:
        """Give the migration lock back."""
        raise NotImplementedError


def _store_options(url: URL) -> dict[str, float]:
    """The :data:`STORE_OPTIONS` given in ``url``'s query, checked."""
    found: dict[str, float] = {}
    for name in STORE_OPTIONS:
        raw = url.query.get(name)
        if raw is None:
            continue
        text = raw if isinstance(raw, str) else ",".join(raw)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise InvalidInputError(
                name, text, "must be a number of seconds >= 0 (a URL query parameter)"
            )
        found[name] = value
    return found


def _has_input(fd: int | None) -> bool:
    """Whether an idle connection's socket has data or end-of-file waiting (the server
    closed it or said why it will); True when that cannot be told, so it is pinged."""
    if fd is None or fd < 0:
        return True
    try:
        readable, _, _ = io_select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
