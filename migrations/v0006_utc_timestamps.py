"""Version 6 (data, SQLite): every stored timestamp in canonical UTC text."""

from __future__ import annotations

from sqlalchemy import Connection, and_, bindparam, column, select, table, update

from uniqc_taskstore.errors import InvalidInputError
from uniqc_taskstore.timestamps import normalize_timestamp

_TABLES = {
    "tasks": (("task_id",), ("submit_time", "update_time")),
    "archived_tasks": (("task_id",), ("submit_time", "update_time", "archived_at")),
    "task_shards": (("uniqc_task_id", "shard_index"), ("submit_time", "update_time")),
    "archived_task_shards": (
        ("uniqc_task_id", "shard_index"),
        ("submit_time", "update_time", "archived_at"),
    ),
}


def upgrade(conn: Connection) -> None:
    """Rewrites naive (local time) and non-UTC timestamps as aware UTC ISO-8601 text with
    microseconds, so that text order is instant order; unreadable ones are kept as they are."""
    if conn.dialect.name != "sqlite":
        return  # server columns are native timestamp types
    for name, (key, times) in _TABLES.items():
        rows = table(name, *(column(c) for c in (*key, *times)))
        changes = []
        for row in conn.execute(select(rows)).mappings():
            fixed = {t: _canonical(row[t]) for t in times}
            if any(fixed[t] != row[t] for t in times):
                changes.append(
                    {**{f"k_{k}": row[k] for k in key}, **{f"v_{t}": v for t, v in fixed.items()}}
                )
        if changes:
            stmt = (
                update(rows)
                .where(and_(*(rows.c[k] == bindparam(f"k_{k}") for k in key)))
                .values({t: bindparam(f"v_{t}") for t in times})
            )
            conn.execute(stmt, changes)


def _canonical(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return normalize_timestamp(value)
    except InvalidInputError:
        return value
