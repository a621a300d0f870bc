"""PostgreSQL: native upsert, an advisory lock for migrations, optional schema."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateSchema

from .base import Assignments, Listener
from .server import MIGRATION_LOCK_NAME, MIGRATION_LOCK_TIMEOUT_SECONDS, ServerBackend

# serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}


class PostgresBackend(ServerBackend):
    """PostgreSQL through psycopg 3; ``schema`` puts the tables in their own schema."""

    name = "postgresql"

    def __init__(self, url: str | URL, *, schema: str | None = None) -> None:
        super().__init__(url)
        self.schema = schema

    def describe(self) -> str:
        where = super().describe()
        return f"{where} (schema {self.schema})" if self.schema else where

    def create_engine(self) -> Engine:
        engine = create_engine(self.url, pool_pre_ping=True, isolation_level="READ COMMITTED")
        self.configure_engine(engine)
        return engine

    def connection_listeners(self) -> list[Listener]:
        schema = self.schema
        quoted = None if schema is None else '"' + schema.replace('"', '""') + '"'
        lock_timeout_ms = self.busy.timeout_ms

        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_conn.cursor()
            try:
                if quoted is not None:
                    # search_path rather than schema-qualified tables, so every statement
                    # (migrations' DDL included) lands in the group's schema.
                    cursor.execute(f"SET search_path TO {quoted}")
                # A held row lock becomes a retryable busy error, not an endless wait.
                cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            finally:
                cursor.close()
            dbapi_conn.commit()

        return [("connect", _on_connect)]

    def after_open(self, engine: Engine) -> None:
        if self.schema is not None:
            with engine.begin() as conn:
                conn.execute(CreateSchema(self.schema, if_not_exists=True))

    def acquire_migration_lock(self, conn: Connection) -> None:
        # Waiting for another process's migration is not a busy row: its own limit.
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT_SECONDS}s'")
        conn.execute(select(func.pg_advisory_lock(self._lock_key())))
        conn.commit()

    def release_migration_lock(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_unlock(self._lock_key())))
        conn.commit()

    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"{MIGRATION_LOCK_NAME}:{self.schema or ''}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        stmt = postgresql.insert(table)
        return stmt.on_conflict_do_update(index_elements=list(key), set_=dict(set_(stmt.excluded)))

    def is_busy(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
