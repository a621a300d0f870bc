"""MariaDB / MySQL: ON DUPLICATE KEY UPDATE, GET_LOCK for migrations.

MariaDB commits DDL implicitly, so a migration that fails halfway cannot be
rolled back there. Every migration is therefore written to be re-runnable
(tables and indexes created only if missing, columns added only if absent, data
steps that skip rows already done) and the version is stamped only after the
step completes: a failed step leaves the old version, and the next open simply
runs the step again and finishes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, func, select
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import DatabaseError
from .base import Assignments, Listener
from .server import MIGRATION_LOCK_NAME, MIGRATION_LOCK_TIMEOUT_SECONDS, ServerBackend

# ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_RETRYABLE_ERRORS = {1213, 1205}


class MysqlBackend(ServerBackend):
    """MariaDB or MySQL through PyMySQL, utf8mb4 throughout."""

    name = "mysql"

    def __init__(self, url: str | URL) -> None:
        super().__init__(url)
        if "charset" not in self.url.query:
            self.url = self.url.update_query_dict({"charset": "utf8mb4"})

    def create_engine(self) -> Engine:
        engine = create_engine(
            self.url, pool_pre_ping=True, pool_recycle=3600, isolation_level="READ COMMITTED"
        )
        self.configure_engine(engine)
        return engine

    def connection_listeners(self) -> list[Listener]:
        seconds = self.busy.timeout_whole_seconds

        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # A held row lock becomes a retryable busy error after this many seconds.
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {int(seconds)}")
            finally:
                cursor.close()

        return [("connect", _on_connect)]

    def acquire_migration_lock(self, conn: Connection) -> None:
        name = _lock_name(conn)
        got = conn.execute(select(func.get_lock(name, MIGRATION_LOCK_TIMEOUT_SECONDS))).scalar()
        conn.commit()
        if got != 1:
            raise DatabaseError(
                f"{self.describe()}: another process held the migration lock for "
                f"{MIGRATION_LOCK_TIMEOUT_SECONDS} s; try again once it has finished."
            )

    def release_migration_lock(self, conn: Connection) -> None:
        name = _lock_name(conn)
        conn.execute(select(func.release_lock(name)))
        conn.commit()

    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(set_(stmt.inserted))

    def is_busy(self, error: DBAPIError) -> bool:
        args: tuple[Any, ...] = getattr(error.orig, "args", ())
        return bool(args) and args[0] in _RETRYABLE_ERRORS


def _lock_name(conn: Connection) -> str:
    # GET_LOCK names are server-wide and at most 64 characters: one per database.
    database = conn.engine.url.database or ""
    name = f"{MIGRATION_LOCK_NAME}:{database}"
    if len(name) > 64:
        name = f"{MIGRATION_LOCK_NAME}:{hashlib.sha256(database.encode()).hexdigest()[:32]}"
    return name
