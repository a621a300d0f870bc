"""What PostgreSQL and MariaDB/MySQL share: the schema stamp lives in a table.

Servers have no ``PRAGMA``, so the application id and schema version sit in the
one-row table ``uniqc_schema``. A database that already has a table named like
ours but no stamp is somebody else's and is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, insert, inspect, select, update
from sqlalchemy.engine import URL, make_url

from ..schema import metadata, schema_stamp
from .base import APPLICATION_ID, Backend, refuse_foreign

MIGRATION_LOCK_NAME = "uniqc_taskstore.migrate"
MIGRATION_LOCK_TIMEOUT_SECONDS = 300


class ServerBackend(Backend):
    """A database server reached through a SQLAlchemy URL."""

    def __init__(self, url: str | URL) -> None:
        self.url = make_url(url)

    def describe(self) -> str:
        return f"database {self.url.render_as_string(hide_password=True)}"

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
