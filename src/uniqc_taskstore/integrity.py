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

from sqlalchemy import Connection, Table, select

from .errors import CorruptRowError
from .schema import archived_task_shards, archived_tasks, task_shards, tasks
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
