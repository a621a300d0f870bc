"""Version 2: the ``archived_tasks`` table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Index, Integer, MetaData, Table, text

from uniqc_taskstore.column_types import IdText, JsonDocument, StatusText, Timestamp
from uniqc_taskstore.migrator import create_missing

MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade(conn: Connection) -> None:
    """Adds archived_tasks: the task columns plus archived_at."""
    meta = MetaData()
    archived = Table(
        "archived_tasks",
        meta,
        Column("task_id", IdText, primary_key=True),
        Column("backend", IdText, nullable=False),
        Column("status", StatusText, nullable=False),
        Column("shots", Integer, nullable=False, server_default=text("0")),
        Column("submit_time", Timestamp, nullable=False),
        Column("update_time", Timestamp, nullable=False),
        Column("result_json", JsonDocument),
        Column("metadata_json", JsonDocument, nullable=False, server_default=text("'{}'")),
        Column("archived_at", Timestamp, nullable=False),
        **MYSQL_TABLE,
    )
    Index("archived_backend_idx", archived.c.backend)
    Index("archived_status_idx", archived.c.status)
    Index("archived_submit_time_idx", archived.c.submit_time)
    create_missing(conn, list(meta.tables.values()))
