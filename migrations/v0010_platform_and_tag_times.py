"""Version 10: a platform column on tasks and the task's submit_time on its tags, so
that a platform page and a tag page are index ranges already in sort order.

A platform filter (``backend="ibm"``) matched a range of device labels and a tag filter
a set of task ids; neither came out of an index in ``(submit_time, task_id)`` order, so
every matching task was sorted for each page. ``platform`` (the backend up to its
first ``:``, all of it without one) gets ``(platform, submit_time, task_id)``; the tag
tables get ``submit_time`` (a task's never changes once stored) and ``(key, value,
submit_time, task_id)``, which replaces ``(key, value, task_id)`` (its prefix serves
every query the old one did). Both are filled set-based, one ``UPDATE`` per table.
Every step skips what is already done: MariaDB cannot roll DDL back, so a step that
stopped halfway is finished by running it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    MetaData,
    Table,
    case,
    func,
    select,
    update,
)

from uniqc_taskstore.column_types import IdText, Timestamp
from uniqc_taskstore.migrator import add_column

_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade(conn: Connection) -> None:
    """Adds platform (filled from backend) to tasks and archived_tasks with (platform,
    submit_time, task_id), and submit_time (filled from the task) to task_tags and
    archived_task_tags with (key, value, submit_time, task_id) in place of (key, value,
    task_id)."""
    meta = MetaData()
    task_tables = {
        name: Table(
            name,
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("backend", IdText, nullable=False),
            Column("submit_time", Timestamp, nullable=False),
            Column("platform", IdText),
            **_MYSQL_TABLE,
        )
        for name in ("tasks", "archived_tasks")
    }
    tag_tables = {
        name: Table(
            name,
            meta,
            Column("task_id", IdText, nullable=False),
            Column("key", IdText, nullable=False),
            Column("value", IdText, nullable=False),
            Column("submit_time", Timestamp),
            **_MYSQL_TABLE,
        )
        for name in ("task_tags", "archived_task_tags")
    }
    for prefix, name in (("tasks", "tasks"), ("archived", "archived_tasks")):
        t = task_tables[name]
        add_column(conn, name, Column("platform", IdText))
        conn.execute(
            update(t).where(t.c.platform.is_(None)).values(platform=platform_of(conn, t.c.backend))
        )
        Index(f"{prefix}_platform_submit_idx", t.c.platform, t.c.submit_time, t.c.task_id).create(
            conn, checkfirst=True
        )
    for tag_name, task_name in (("task_tags", "tasks"), ("archived_task_tags", "archived_tasks")):
        g, t = tag_tables[tag_name], task_tables[task_name]
        add_column(conn, tag_name, Column("submit_time", Timestamp))
        stored = select(t.c.submit_time).where(t.c.task_id == g.c.task_id).scalar_subquery()
        conn.execute(update(g).where(g.c.submit_time.is_(None)).values(submit_time=stored))
        Index(
            f"{tag_name}_key_value_submit_idx", g.c.key, g.c.value, g.c.submit_time, g.c.task_id
        ).create(conn, checkfirst=True)
        Index(f"{tag_name}_key_value_idx", g.c.key, g.c.value, g.c.task_id).drop(
            conn, checkfirst=True
        )


def platform_of(conn: Connection, backend: ColumnElement[str]) -> ColumnElement[Any]:
    """The backend up to its first ``:`` (all of it without one), in this database's SQL:
    the same as ``backend.split(":", 1)[0]``."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return func.split_part(backend, ":", 1)
    if dialect in ("mysql", "mariadb"):
        return func.substring_index(backend, ":", 1)
    colon = func.instr(backend, ":")
    return case((colon > 0, func.substr(backend, 1, colon - 1)), else_=backend)
