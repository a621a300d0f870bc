"""Version 7: an index on (uniqc_task_id, status) of ``task_shards``."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Index, Integer, MetaData, Table

from uniqc_taskstore.column_types import IdText, StatusText


def upgrade(conn: Connection) -> None:
    """Adds task_shards_task_status_idx, so a task's aggregate status is found by a few
    index probes whatever its number of shards."""
    shards = Table(
        "task_shards",
        MetaData(),
        Column("uniqc_task_id", IdText, nullable=False),
        Column("shard_index", Integer, nullable=False),
        Column("status", StatusText, nullable=False),
    )
    Index("task_shards_task_status_idx", shards.c.uniqc_task_id, shards.c.status).create(
        conn, checkfirst=True
    )
