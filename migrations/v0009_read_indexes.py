"""Version 9: composite indexes that match each filter and its sort, so that reads cost
the same at a million tasks as at ten thousand.

Each list filter gets an index that starts with the filtered column and continues with
the sort key ``(submit_time, task_id)``: the first page, and a keyset page at any
depth, is then a range read of ``limit`` index entries with no sort. The
single-column indexes they extend are dropped (each is a prefix of its replacement,
so no query loses its index, and every write maintains one index fewer). A platform
job id is found newest first by ``(platform_task_id, submit_time, uniqc_task_id,
shard_index)``. ``checkfirst`` on every step: MariaDB cannot roll DDL back, so a step
that stopped halfway is finished by running it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Index, Integer, MetaData, Table

from uniqc_taskstore.column_types import IdText, StatusText, Timestamp

_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade(conn: Connection) -> None:
    """Adds (status|backend, submit_time, task_id) and (submit_time, task_id) on live
    and archived tasks, and (platform_task_id, submit_time, uniqc_task_id, shard_index)
    on live and archived shards; drops the single-column indexes these extend."""
    meta = MetaData()
    frozen = {
        name: Table(
            name,
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("backend", IdText, nullable=False),
            Column("status", StatusText, nullable=False),
            Column("submit_time", Timestamp, nullable=False),
            **_MYSQL_TABLE,
        )
        for name in ("tasks", "archived_tasks")
    }
    shards = {
        name: Table(
            name,
            meta,
            Column("uniqc_task_id", IdText, nullable=False),
            Column("shard_index", Integer, nullable=False),
            Column("platform_task_id", IdText, nullable=False),
            Column("submit_time", Timestamp, nullable=False),
            **_MYSQL_TABLE,
        )
        for name in ("task_shards", "archived_task_shards")
    }
    for prefix, name in (("tasks", "tasks"), ("archived", "archived_tasks")):
        t = frozen[name]
        new = [
            Index(f"{prefix}_status_submit_idx", t.c.status, t.c.submit_time, t.c.task_id),
            Index(f"{prefix}_backend_submit_idx", t.c.backend, t.c.submit_time, t.c.task_id),
            Index(f"{prefix}_submit_task_idx", t.c.submit_time, t.c.task_id),
        ]
        old = [
            Index(f"{prefix}_status_idx", t.c.status),
            Index(f"{prefix}_backend_idx", t.c.backend),
            Index(f"{prefix}_submit_time_idx", t.c.submit_time),
        ]
        _replace(conn, new, old)
    for name in shards:
        s = shards[name]
        _replace(
            conn,
            [
                Index(
                    f"{name}_platform_submit_idx",
                    s.c.platform_task_id,
                    s.c.submit_time,
                    s.c.uniqc_task_id,
                    s.c.shard_index,
                )
            ],
            [Index(f"{name}_platform_idx", s.c.platform_task_id)],
        )


def _replace(conn: Connection, new: list[Index], old: list[Index]) -> None:
    # New ones first: a query never goes without its index, even between two steps.
    for index in new:
        index.create(conn, checkfirst=True)
    for index in old:
        index.drop(conn, checkfirst=True)
