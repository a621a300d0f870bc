"""Copying every task from one store to another, e.g. a laptop's file to a team's server.

Tasks are read in ``task_id`` order, a batch at a time, and each batch (tasks with
all their shards) is written to the destination in one transaction. What the
destination already holds is left alone, so running the copy again copies
nothing twice, and a copy that was interrupted is finished by running it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Connection, Table, func, select

from .engine import Database
from .errors import InvalidInputError
from .schema import (
    archived_task_shards,
    archived_task_tags,
    archived_tasks,
    task_shards,
    task_tags,
    tasks,
)
from .statements import readable_row
from .store import TaskStore

Progress = Callable[[int, int], None]
"""Called after each batch with (tasks done, tasks in all) across live and archive."""


@dataclass
class TableCounts:
    """Rows in each table of one store."""

    tasks: int = 0
    shards: int = 0
    archived_tasks: int = 0
    archived_shards: int = 0
    tags: int = 0
    archived_tags: int = 0


@dataclass
class CopyReport:
    """What :func:`copy_tasks` copied, and the counts on both sides afterwards."""

    copied: TableCounts = field(default_factory=TableCounts)
    source: TableCounts = field(default_factory=TableCounts)
    destination: TableCounts = field(default_factory=TableCounts)
    seconds: float = 0.0


_PAIRS = (
    (tasks, task_shards, "tasks", "shards"),
    (archived_tasks, archived_task_shards, "archived_tasks", "archived_shards"),
)
_TAGS = {"tasks": (task_tags, "tags"), "archived_tasks": (archived_task_tags, "archived_tags")}


def copy_tasks(
    source: TaskStore,
    destination: TaskStore,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy live and archived tasks with their shards from ``source`` to ``destination``.

    Tasks (and shards) whose keys the destination already has are skipped; the
    source is only read. Returns the rows copied and each side's counts.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be a positive integer")
    if source.location == destination.location:
        raise InvalidInputError("destination", destination.location, "is the source itself")
    started = time.perf_counter()
    report = CopyReport(source=count_rows(source))
    total = report.source.tasks + report.source.archived_tasks
    done = 0
    for task_table, shard_table, task_name, shard_name in _PAIRS:
        last: str | None = None
        while True:
            tag_table, tag_name = _TAGS[task_name]
            tables = (task_table, shard_table, tag_table)
            batch, shards, tag_rows = source._db.read(
                partial(_read_batch, tables=tables, after=last, size=batch_size)
            )
            if not batch:
                break
            new_tasks, new_shards, new_tags = destination._db.write(
                partial(
                    _write_batch,
                    destination=destination._db,
                    tables=tables,
                    batch=batch,
                    shards=shards,
                    tags=tag_rows,
                )
            )
            setattr(report.copied, tag_name, getattr(report.copied, tag_name) + new_tags)
            setattr(report.copied, task_name, getattr(report.copied, task_name) + new_tasks)
            setattr(report.copied, shard_name, getattr(report.copied, shard_name) + new_shards)
            last = batch[-1]["task_id"]
            done += len(batch)
            if progress is not None:
                progress(done, total)
    report.destination = count_rows(destination)
    report.seconds = time.perf_counter() - started
    return report


def count_rows(store: TaskStore) -> TableCounts:
    """How many rows each table of ``store`` holds."""

    def work(conn: Connection) -> TableCounts:
        def n(table: Table) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        return TableCounts(
            n(tasks),
            n(task_shards),
            n(archived_tasks),
            n(archived_task_shards),
            n(task_tags),
            n(archived_task_tags),
        )

    return store._db.read(work)


def _read_batch(
    conn: Connection, *, tables: tuple[Table, Table, Table], after: str | None, size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    task_table, shard_table, tag_table = tables
    stmt = select(task_table).order_by(task_table.c.task_id).limit(size)
    if after is not None:
        stmt = stmt.where(task_table.c.task_id > after)
    # readable_row: the rows go out as get() reads them (legacy timestamp text repaired,
    # an unreadable value a CorruptRowError naming its row).
    batch = [readable_row(task_table.name, row) for row in conn.execute(stmt).mappings()]
    if not batch:
        return [], [], []
    ids = [row["task_id"] for row in batch]
    shards = [
        readable_row(shard_table.name, row)
        for row in conn.execute(
            select(shard_table).where(shard_table.c.uniqc_task_id.in_(ids))
        ).mappings()
    ]
    # A tag carries its task's submit_time as the destination will store it (repaired).
    times = {row["task_id"]: row["submit_time"] for row in batch}
    tag_rows = [
        dict(row) | {"submit_time": times[row["task_id"]]}
        for row in conn.execute(select(tag_table).where(tag_table.c.task_id.in_(ids))).mappings()
    ]
    return batch, shards, tag_rows


def _write_batch(
    conn: Connection,
    *,
    destination: Database,
    tables: tuple[Table, Table, Table],
    batch: Sequence[dict[str, Any]],
    shards: Sequence[dict[str, Any]],
    tags: Sequence[dict[str, Any]],
) -> tuple[int, int, int]:
    task_table, shard_table, tag_table = tables
    bulk_insert = destination.backend.bulk_insert
    ids = [row["task_id"] for row in batch]
    present = set(
        conn.execute(select(task_table.c.task_id).where(task_table.c.task_id.in_(ids))).scalars()
    )
    new_tasks = [row for row in batch if row["task_id"] not in present]
    if new_tasks:
        bulk_insert(conn, task_table, new_tasks)
    present_shards = {
        (row.uniqc_task_id, row.shard_index)
        for row in conn.execute(
            select(shard_table.c.uniqc_task_id, shard_table.c.shard_index).where(
                shard_table.c.uniqc_task_id.in_(ids)
            )
        )
    }
    new_shards = [
        row for row in shards if (row["uniqc_task_id"], row["shard_index"]) not in present_shards
    ]
    if new_shards:
        bulk_insert(conn, shard_table, new_shards)
    # Tags go only with tasks this copy adds: a task the destination had is left alone.
    added = {row["task_id"] for row in new_tasks}
    new_tags = [row for row in tags if row["task_id"] in added]
    if new_tags:
        bulk_insert(conn, tag_table, new_tags)
    return len(new_tasks), len(new_shards), len(new_tags)
