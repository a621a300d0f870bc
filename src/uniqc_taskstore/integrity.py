"""Finding stored rows the store cannot read back, for ``doctor``-style health checks.

A row written by this library always reads back; a bad one comes from elsewhere (a
hand edit, another program, a damaged file): malformed or too deeply nested JSON,
a 5,000-digit number, a BLOB where a timestamp belongs, an unknown status. Reading
such a row raises :class:`~uniqc_taskstore.errors.CorruptRowError`; listings skip
and report them with ``on_corrupt=``; :func:`find_corrupt_rows` finds them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, case, func, or_, select

from .errors import CorruptRowError
from .schema import (
    archived_task_shards,
    archived_task_tags,
    archived_tasks,
    task_shards,
    task_tags,
    tasks,
)
from .statements import shard_from_row, task_from_row
from .store import TaskStore

_READERS: tuple[tuple[Table, Callable[[Mapping[Any, Any]], object]], ...] = (
    (tasks, task_from_row),
    (task_shards, shard_from_row),
    (archived_tasks, task_from_row),
    (archived_task_shards, shard_from_row),
)
_FETCH_ROWS = 500


def find_corrupt_rows(store: TaskStore) -> Iterator[CorruptRowError]:
    """Every row of ``store`` (live and archived tasks and shards) that cannot be read,
    as the :class:`CorruptRowError` reading it raises, table by table in key order.
    Only reads; each table is scanned in one read transaction, a batch at a time."""
    for table, read in _READERS:
        yield from store._db.read(partial(_scan, table=table, read=read))


def corrupt_rows_on(conn: Connection) -> Iterator[CorruptRowError]:
    """:func:`find_corrupt_rows` on a connection already open (``doctor`` uses its
    read-only one)."""
    for table, read in _READERS:
        yield from _scan(conn, table=table, read=read)


def _scan(
    conn: Connection, *, table: Table, read: Callable[[Mapping[Any, Any]], object]
) -> list[CorruptRowError]:
    found: list[CorruptRowError] = []
    stmt = select(table).order_by(*table.primary_key.columns)
    for row in conn.execution_options(yield_per=_FETCH_ROWS).execute(stmt).mappings():
        try:
            read(row)
        except CorruptRowError as exc:
            found.append(exc)
    return found


def stale_copies(conn: Connection) -> dict[str, int]:
    """Rows whose v10 copies do not match their source, by table: a task whose
    ``platform`` is not its backend's, a tag whose ``submit_time`` is not its task's;
    and tasks or shards without their v11 ``search_key``.
    Every writer of this library keeps them; another program writing the tables may
    not, and then platform, tag and search filters miss those tasks."""
    found: dict[str, int] = {}
    for table in (tasks, archived_tasks):
        wrong = or_(
            table.c.platform.is_(None), table.c.platform != platform_sql(conn, table.c.backend)
        )
        found[table.name] = conn.execute(
            select(func.count()).select_from(table).where(wrong)
        ).scalar_one()
    for tags, owner in ((task_tags, tasks), (archived_task_tags, archived_tasks)):
        wrong = or_(tags.c.submit_time.is_(None), tags.c.submit_time != owner.c.submit_time)
        found[tags.name] = conn.execute(
            select(func.count())
            .select_from(tags.join(owner, owner.c.task_id == tags.c.task_id))
            .where(wrong)
        ).scalar_one()
    # The folded search text (v11) cannot be recomputed in SQL: a missing one is found.
    for table in (tasks, archived_tasks, task_shards, archived_task_shards):
        found[f"{table.name} without search text"] = conn.execute(
            select(func.count()).select_from(table).where(table.c.search_key.is_(None))
        ).scalar_one()
    return {name: int(n) for name, n in found.items() if n}


def platform_sql(conn: Connection, backend: ColumnElement[str]) -> ColumnElement[str]:
    """``backend.split(":", 1)[0]`` in this database's SQL (migration v10 keeps its own
    copy of the rule, as migrations do)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return func.split_part(backend, ":", 1)
    if dialect in ("mysql", "mariadb"):
        return func.substring_index(backend, ":", 1)
    colon = func.instr(backend, ":")
    return case((colon > 0, func.substr(backend, 1, colon - 1)), else_=backend)
