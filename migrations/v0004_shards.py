"""Version 4: ``task_shards`` and ``archived_task_shards``, one row per platform job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    text,
)

from uniqc_taskstore.column_types import IdText, JsonDocument, MessageText, StatusText, Timestamp
from uniqc_taskstore.migrator import create_missing

MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _shard_columns() -> list[Column[Any]]:
    return [
        Column("uniqc_task_id", IdText, nullable=False),
        Column("shard_index", Integer, nullable=False),
        Column("platform_task_id", IdText, nullable=False),
        Column("backend", IdText, nullable=False),
        Column("circuit_count", Integer, nullable=False, server_default=text("1")),
        Column("sub_index_offset", Integer, nullable=False, server_default=text("0")),
        Column("status", StatusText, nullable=False),
        Column("result_json", JsonDocument),
        Column("error_message", MessageText),
        Column("submit_time", Timestamp, nullable=False),
        Column("update_time", Timestamp, nullable=False),
    ]


def upgrade(conn: Connection) -> None:
    """Adds the shard tables keyed by (uniqc_task_id, shard_index), live shards cascading
    from their task."""
    meta = MetaData()
    Table("tasks", meta, Column("task_id", IdText, primary_key=True), **MYSQL_TABLE)
    shards = Table(
        "task_shards",
        meta,
        *_shard_columns(),
        PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
        ForeignKeyConstraint(["uniqc_task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        **MYSQL_TABLE,
    )
    Index("task_shards_platform_idx", shards.c.platform_task_id)
    Index("task_shards_status_idx", shards.c.status)
    archived = Table(
        "archived_task_shards",
        meta,
        *_shard_columns(),
        Column("archived_at", Timestamp, nullable=False),
        PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
        **MYSQL_TABLE,
    )
    Index("archived_task_shards_platform_idx", archived.c.platform_task_id)
    create_missing(conn, [shards, archived])
