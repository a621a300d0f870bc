"""Version 11: the case-folded text ``search`` looks in (``search_key``), on live and
archived tasks and shards, so that SQLite, PostgreSQL and MariaDB answer a search alike.

Each database folded case its own way (``lower()`` of ASCII only on SQLite, of the
locale's letters on PostgreSQL, accent-insensitive collations on MariaDB); the store now
folds in Python (``str.casefold``, :mod:`uniqc_taskstore.search`) and writes the result
beside the originals. Old rows are filled here from the stored id, backend, name and
platform job id: their keys computed in key order, a thousand at a time, into a
temporary table, then copied over by one ``UPDATE`` per table. A row whose id cannot be
read is left without a key (search never finds it). Every step skips what is done:
MariaDB cannot roll DDL back, so a step that stopped halfway is finished by
running it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    and_,
    insert,
    select,
    tuple_,
    update,
)

from uniqc_taskstore.column_types import IdText, SearchText
from uniqc_taskstore.migrator import add_column
from uniqc_taskstore.search import shard_search_key, task_search_key

_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
_BATCH = 1000


def upgrade(conn: Connection) -> None:
    """Adds search_key to tasks, archived_tasks, task_shards and archived_task_shards,
    filled with the case-folded id, backend and name (tasks) or platform job id (shards)."""
    meta = MetaData()
    for name in ("tasks", "archived_tasks"):
        t = Table(
            name,
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("backend", IdText, nullable=False),
            Column("name", IdText),
            Column("search_key", SearchText),
            **_MYSQL_TABLE,
        )
        add_column(conn, name, Column("search_key", SearchText))
        _fill(
            conn,
            t,
            (t.c.task_id,),
            (t.c.backend, t.c.name),
            lambda row: task_search_key(row[0], _text(row[1]), _text(row[2]) or None),
        )
    for name in ("task_shards", "archived_task_shards"):
        s = Table(
            name,
            meta,
            Column("uniqc_task_id", IdText, nullable=False),
            Column("shard_index", Integer, nullable=False),
            Column("platform_task_id", IdText, nullable=False),
            Column("search_key", SearchText),
            **_MYSQL_TABLE,
        )
        add_column(conn, name, Column("search_key", SearchText))
        _fill(
            conn,
            s,
            (s.c.uniqc_task_id, s.c.shard_index),
            (s.c.platform_task_id,),
            lambda row: shard_search_key(_text(row[2])),
        )


def _fill(
    conn: Connection,
    table: Table,
    key: tuple[Any, ...],
    sources: tuple[Any, ...],
    make: Callable[[Any], str],
) -> None:
    """Write ``make(row)`` (row: the key columns, then ``sources``) into ``search_key``
    of every row that has none. The keys are computed walking the table in ``key``
    order and inserted into a temporary table (an executemany per batch: one multi-row
    statement on MariaDB, a pipeline on PostgreSQL), then copied over by one ``UPDATE``
    (an ``UPDATE`` per row would be a round trip per row on the servers)."""
    keys = Table(
        f"uniqc_v11_{table.name}",
        MetaData(),
        *(Column(c.name, c.type, primary_key=True) for c in key),
        Column("search_key", SearchText, nullable=False),
        prefixes=["TEMPORARY"],
        **_MYSQL_TABLE,
    )
    keys.drop(conn, checkfirst=True)  # one left by a failed run on this connection
    keys.create(conn)
    after: tuple[Any, ...] | None = None
    while True:
        query = select(*key, *sources).where(table.c.search_key.is_(None))
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        rows = conn.execute(query.order_by(*key).limit(_BATCH)).all()
        readable = [row for row in rows if isinstance(row[0], str)]
        if readable:
            conn.execute(
                insert(keys),
                [
                    {**{c.name: row[i] for i, c in enumerate(key)}, "search_key": make(row)}
                    for row in readable
                ],
            )
        if len(rows) < _BATCH or not readable:
            break
        after = tuple(readable[-1][: len(key)])
    match = and_(*(keys.c[c.name] == c for c in key))
    conn.execute(
        update(table)
        .where(table.c.search_key.is_(None))
        .values(search_key=select(keys.c.search_key).where(match).scalar_subquery())
    )
    keys.drop(conn)


def _text(value: Any) -> str:
    """A stored text value, or empty for one that cannot be read."""
    return value if isinstance(value, str) else ""
