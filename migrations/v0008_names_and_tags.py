"""Version 8: task names in their own column, tags one row per pair, update-time indexes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    cast,
    column,
    select,
    table,
    update,
)

from uniqc_taskstore.column_types import IdText, Timestamp
from uniqc_taskstore.migrator import add_column, create_missing

MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
_MAX_NAME = 255
_BATCH = 1000


def upgrade(conn: Connection) -> None:
    """Adds name (filled from metadata["task_name"]) to tasks and archived_tasks, the
    task_tags and archived_task_tags tables, and indexes on name, update_time and
    archived_at."""
    meta = MetaData()
    frozen = {
        name: Table(
            name,
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("update_time", Timestamp, nullable=False),
            Column("name", IdText),
            *([Column("archived_at", Timestamp, nullable=False)] if archived else []),
            **MYSQL_TABLE,
        )
        for name, archived in (("tasks", False), ("archived_tasks", True))
    }
    live, archived = frozen["tasks"], frozen["archived_tasks"]
    for task_table in frozen.values():
        add_column(conn, task_table.name, Column("name", IdText))
    indexes = [
        Index("tasks_update_time_idx", live.c.update_time, live.c.task_id),
        Index("tasks_name_idx", live.c.name),
        Index("archived_update_time_idx", archived.c.update_time, archived.c.task_id),
        Index("archived_name_idx", archived.c.name),
        Index("archived_archived_at_idx", archived.c.archived_at),
    ]
    for index in indexes:
        index.create(conn, checkfirst=True)
    tags = Table(
        "task_tags",
        meta,
        *_tag_columns(),
        ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        **MYSQL_TABLE,
    )
    Index("task_tags_key_value_idx", tags.c.key, tags.c.value, tags.c.task_id)
    archived_tags = Table("archived_task_tags", meta, *_tag_columns(), **MYSQL_TABLE)
    Index(
        "archived_task_tags_key_value_idx",
        archived_tags.c.key,
        archived_tags.c.value,
        archived_tags.c.task_id,
    )
    create_missing(conn, [tags, archived_tags])
    for name in frozen:
        _fill_names(conn, name)


def _tag_columns() -> list[Any]:
    return [
        Column("task_id", IdText, nullable=False),
        Column("key", IdText, nullable=False),
        Column("value", IdText, nullable=False),
        PrimaryKeyConstraint("task_id", "key"),
    ]


def _fill_names(conn: Connection, table_name: str) -> None:
    # Only rows whose metadata text mentions task_name are read; re-running skips rows
    # already named (MariaDB cannot roll a failed step back).
    rows = table(
        table_name, column("task_id", IdText()), column("name", IdText()), column("metadata_json")
    )
    found = conn.execute(
        select(rows.c.task_id, rows.c.metadata_json).where(
            rows.c.name.is_(None), cast(rows.c.metadata_json, Text).like("%task_name%")
        )
    ).all()
    changes = [
        {"k_id": task_id, "v_name": name}
        for task_id, raw in found
        if (name := _task_name(raw)) is not None
    ]
    stmt = (
        update(rows)
        .where(rows.c.task_id == bindparam("k_id", type_=IdText()))
        .values(name=bindparam("v_name", type_=IdText()))
    )
    for start in range(0, len(changes), _BATCH):
        conn.execute(stmt, changes[start : start + _BATCH])


def _task_name(raw: Any) -> str | None:
    """The usable name in a metadata document: a non-empty string of at most 255
    characters without NUL; anything else is left in the metadata only."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    name = raw.get("task_name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME or "\x00" in name:
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name
