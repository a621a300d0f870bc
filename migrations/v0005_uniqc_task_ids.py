"""Version 5 (data): tasks keyed by a platform id get a ``uqt_`` parent and one shard."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    table,
    update,
)

from uniqc_taskstore.column_types import IdText, JsonDocument
from uniqc_taskstore.model import UNIQC_TASK_ID_PREFIX, generate_uniqc_task_id

_TASK_COLUMNS = (
    "task_id",
    "backend",
    "status",
    "shots",
    "submit_time",
    "update_time",
    "result_json",
    "metadata_json",
    "error_message",
)
_ID_COLUMNS = {"task_id", "uniqc_task_id", "platform_task_id"}
_SHARD_COLUMNS = (
    "uniqc_task_id",
    "shard_index",
    "platform_task_id",
    "backend",
    "circuit_count",
    "sub_index_offset",
    "status",
    "result_json",
    "error_message",
    "submit_time",
    "update_time",
)


def upgrade(conn: Connection) -> None:
    """Re-keys every task whose id lacks the uqt_ prefix (live and archived): a new uqt_
    parent with all its columns and metadata.legacy_platform_id, and a shard 0 that
    mirrors it with the old id as platform_task_id."""
    _rekey(conn, "tasks", "task_shards", archived=False)
    _rekey(conn, "archived_tasks", "archived_task_shards", archived=True)


def _rekey(conn: Connection, task_table: str, shard_table: str, *, archived: bool) -> None:
    extra = ("archived_at",) if archived else ()
    tasks = table(task_table, *(_column(name) for name in (*_TASK_COLUMNS, *extra)))
    shards = table(shard_table, *(_column(name) for name in (*_SHARD_COLUMNS, *extra)))
    legacy = conn.execute(
        select(tasks.c.task_id, tasks.c.metadata_json).where(
            func.substr(tasks.c.task_id, 1, len(UNIQC_TASK_ID_PREFIX)) != UNIQC_TASK_ID_PREFIX
        )
    ).all()
    if not legacy:
        return
    # Set-based: the old -> new id map (with each row's rewritten metadata) goes into a
    # scratch table, then a handful of INSERT ... SELECT / UPDATE / DELETE statements
    # move every row at once. Row by row took ~2 ms a task.
    ids = Table(
        "uniqc_v5_id_map",
        MetaData(),
        Column("old_id", IdText, primary_key=True),
        Column("new_id", IdText, nullable=False),
        Column("metadata_json", JsonDocument, nullable=False),
    )
    ids.create(conn, checkfirst=True)
    conn.execute(delete(ids))  # MariaDB keeps a table a failed run left behind
    conn.execute(
        insert(ids),
        [
            {
                "old_id": old_id,
                "new_id": generate_uniqc_task_id(),
                "metadata_json": _legacy_metadata(raw) | {"legacy_platform_id": old_id},
            }
            for old_id, raw in legacy
        ],
    )
    joined = tasks.join(ids, tasks.c.task_id == ids.c.old_id)
    parent = [
        ids.c.new_id if name == "task_id" else tasks.c[name] for name in (*_TASK_COLUMNS, *extra)
    ]
    parent[_TASK_COLUMNS.index("metadata_json")] = ids.c.metadata_json
    conn.execute(
        insert(tasks).from_select([*_TASK_COLUMNS, *extra], select(*parent).select_from(joined))
    )
    # Shards already keyed by the old id (written between v4 and v5) follow their task.
    conn.execute(
        update(shards)
        .where(shards.c.uniqc_task_id.in_(select(ids.c.old_id)))
        .values(
            uniqc_task_id=select(ids.c.new_id)
            .where(ids.c.old_id == shards.c.uniqc_task_id)
            .scalar_subquery()
        )
    )
    mirror = (
        select(
            ids.c.new_id,
            literal(0),
            tasks.c.task_id,
            tasks.c.backend,
            literal(1),
            literal(0),
            tasks.c.status,
            tasks.c.result_json,
            tasks.c.error_message,
            tasks.c.submit_time,
            tasks.c.update_time,
            *(tasks.c[name] for name in extra),
        )
        .select_from(joined)
        .where(~exists().where(shards.c.uniqc_task_id == ids.c.new_id))
    )
    conn.execute(insert(shards).from_select([*_SHARD_COLUMNS, *extra], mirror))
    conn.execute(delete(tasks).where(tasks.c.task_id.in_(select(ids.c.old_id))))
    ids.drop(conn)


def _column(name: str) -> Any:
    # Ids typed so that servers storing them as bytes (MySQL) hand back text; the
    # other columns are copied as the database holds them.
    return column(name, IdText()) if name in _ID_COLUMNS else column(name)


def _legacy_metadata(raw: Any) -> dict[str, Any]:
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if isinstance(raw, dict):
        return raw
    return {} if raw is None else {"legacy_metadata_raw": raw}
