"""Copying every task from one store to another, e.g. a laptop's file to a team's server.

Tasks are read in ``task_id`` order, a batch at a time, all from one snapshot of the
source, and each batch (tasks with all their shards) is written to the destination in
one transaction. What the destination already holds is left alone, so running the
copy again copies nothing twice, and a copy that was interrupted is finished by
running it again.

A batch starts with keys only: the source's next task ids and their shards' keys,
checked against the destination by one read of the batch's key range per table.
Only the rows the destination lacks are then read in full, so a re-run that finds
everything copied reads keys only and writes nothing. The next batch is read and
converted in a worker thread while the current one is written.

Rows are read through the driver as stored and written with each column type's
bind processing, as an ``INSERT`` of the values ``get()`` reads would write them.
Reading them the way ``get()`` does (result processing, legacy repairs, JSON decoded
and encoded again) is skipped for every value it would leave as it is: text already
in its stored form, timestamps the destination's type accepts, and JSON text that
is exactly what saving its value writes (:func:`_stored_json`), which goes over
without being decoded. A row holding anything else (legacy timestamp text, JSON
written by another program, a value that cannot be read) takes the full path, so it
is repaired, or named in a :class:`CorruptRowError`, as ``get()`` would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from queue import Full, Queue
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Select, Table, bindparam, delete, func, select
from sqlalchemy.engine import Dialect

from . import change_log
from .backends.base import driver_errors
from .column_types import IdText, JsonDocument, Timestamp
from .errors import CorruptRowError, InvalidInputError, TaskStoreError
from .jsoncodec import MAX_DEPTH, TAG, JsonReady, decode_json, dump_jsonable, to_jsonable
from .model import Unreadable
from .schema import (
    archived_task_shards,
    archived_task_tags,
    archived_tasks,
    task_shards,
    task_tags,
    tasks,
)
from .statements import in_batches, readable_row
from .store import TaskStore
from .timestamps import canonical_timestamp, utc_now

T = TypeVar("T")

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
    """What :func:`copy_tasks` copied, and the counts on both sides afterwards.

    ``moved``: tasks the source moved between live and archive since they were copied,
    moved in the destination too. ``kept``: ids the source moved but the destination
    changed since (another ``update_time``): left as the destination has them."""

    copied: TableCounts = field(default_factory=TableCounts)
    source: TableCounts = field(default_factory=TableCounts)
    destination: TableCounts = field(default_factory=TableCounts)
    seconds: float = 0.0
    moved: int = 0
    kept: list[str] = field(default_factory=list)


_SIDES = (
    ((tasks, task_shards, task_tags), ("tasks", "shards", "tags")),
    (
        (archived_tasks, archived_task_shards, archived_task_tags),
        ("archived_tasks", "archived_shards", "archived_tags"),
    ),
)


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
    # The source is read from one snapshot: a task moved between its live tables and
    # its archive during the copy is copied once, as it was when the copy began.
    with source._db.snapshot() as snapshot:
        report = CopyReport(source=_counts(snapshot))
        total = report.source.tasks + report.source.archived_tasks
        done = 0
        for (tables, names), (other, _) in zip(_SIDES, reversed(_SIDES), strict=True):
            side = _SideCopy(source, destination, tables, other, batch_size, partial(_on, snapshot))
            with _prefetched(side.batches()) as batches:
                for batch in batches:
                    if batch.rows is not None:
                        copied, moved, kept = destination._db.write(
                            partial(side.write, batch=batch), rerun_on_conflict=True
                        )
                        for name, count in zip(names, copied, strict=True):
                            setattr(report.copied, name, getattr(report.copied, name) + count)
                        report.moved += moved
                        report.kept.extend(kept)
                    done += len(batch.keys.task_ids)
                    if progress is not None:
                        progress(done, total)
    report.destination = count_rows(destination)
    report.seconds = time.perf_counter() - started
    return report


def count_rows(store: TaskStore) -> TableCounts:
    """How many rows each table of ``store`` holds (read from one snapshot)."""
    return store._db.read(_counts)


def _counts(conn: Connection) -> TableCounts:
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


def _on(conn: Connection, work: Callable[[Connection], T]) -> T:
    """``work`` run on ``conn`` (the source's snapshot)."""
    return work(conn)


# -- one batch ------------------------------------------------------------------------

_Tables = tuple[Table, Table, Table]
"""A side's tasks, shards and tags tables."""


@dataclass
class _Keys:
    """The keys of one batch of source tasks: the ids as read (``task_ids``, in order)
    and the first and last as the driver gave them (for the source's range reads)."""

    task_ids: list[str]
    shard_keys: list[tuple[str, Any]]
    first: Any
    last: Any


@dataclass
class _Rows:
    """The stored rows of one batch's key range, as the driver gave them."""

    tasks: list[Sequence[Any]]
    shards: list[Sequence[Any]]
    tags: list[Sequence[Any]]


_Keyed = list[tuple[Any, tuple[Any, ...]]]
"""Rows ready for the destination's driver, each with its key (task id, or (task id,
shard index)) as read."""


@dataclass
class _Batch:
    """One batch: its keys, and the rows the destination lacked when it was read
    (None when it lacked none: nothing to write). ``movable``: of the tasks to add,
    those the source does not hold on the other side, with their ``update_time``: one
    the destination holds on the other side was moved there by the source since it
    was copied (when that copy has the same ``update_time``)."""

    keys: _Keys
    rows: tuple[_Keyed, _Keyed, _Keyed] | None = None
    movable: dict[str, str | None] = field(default_factory=dict)


class _SideCopy:
    """Copies one side (live or archive): :meth:`batches` reads and converts, one
    batch ahead in a worker thread; :meth:`write` writes a batch in the destination's
    transaction."""

    def __init__(
        self,
        source: TaskStore,
        destination: TaskStore,
        tables: _Tables,
        other: _Tables,
        batch_size: int,
        read_source: Callable[[Callable[[Connection], Any]], Any],
    ) -> None:
        self.source, self.destination, self.tables = source._db, destination._db, tables
        self.other = other
        self.read_source = read_source
        from_dialect, to_dialect = self.source.engine.dialect, self.destination.engine.dialect
        self.converters = [_Converter(table, from_dialect, to_dialect) for table in tables]
        self.reads = _SourceReads(tables, from_dialect, batch_size, self.converters[0].read_ids)
        self.present = _DestinationKeys(tables, to_dialect)

    def batches(self) -> Iterator[_Batch]:
        """Every batch of the side, in ``task_id`` order, with the rows the destination
        lacks read and converted; a batch it has whole costs two key reads."""
        after: Any = None
        while True:
            keys = self.read_source(partial(self.reads.keys, after=after))
            if not keys.task_ids:
                return
            after = keys.last
            have, have_shards = self.destination.read(partial(self.present, keys=keys))
            if all(i in have for i in keys.task_ids) and all(
                key in have_shards for key in keys.shard_keys
            ):
                yield _Batch(keys)
                continue
            rows = self.read_source(partial(self.reads.rows, keys=keys))
            task_convert, shard_convert, tag_convert = self.converters
            # The whole key range was read: keep what the destination lacked (shards by
            # their own keys, so one added to the source since the key read goes too).
            ids = task_convert.read_ids(rows.tasks, task_convert.id_at)
            tasks_ = list(zip(ids, rows.tasks, strict=True))
            parents = shard_convert.read_ids(rows.shards, shard_convert.id_at)
            index_at = shard_convert.names.index("shard_index")
            shards = [
                ((parent, row[index_at]), row)
                for parent, row in zip(parents, rows.shards, strict=True)
            ]
            tags = list(
                zip(tag_convert.read_ids(rows.tags, tag_convert.id_at), rows.tags, strict=True)
            )
            new_tasks = _converted(task_convert, [(k, r) for k, r in tasks_ if k not in have])
            new_tags = _converted(tag_convert, [(k, r) for k, r in tags if k not in have])
            yield _Batch(
                keys,
                (
                    new_tasks,
                    _converted(shard_convert, [(k, r) for k, r in shards if k not in have_shards]),
                    _with_task_times(tag_convert, new_tags, task_convert, new_tasks),
                ),
                self._movable([(k, r) for k, r in tasks_ if k not in have]),
            )

    def _movable(self, added: list[tuple[str, Sequence[Any]]]) -> dict[str, str | None]:
        """Of the source's tasks to add, those it does not hold on the other side (a
        twin there is copied as a twin), each with its ``update_time`` as text."""
        if not added:
            return {}
        other_ids = self.other[0].c.task_id
        stmt = select(other_ids).where(other_ids.in_([key for key, _ in added]))
        twins = set(self.read_source(lambda conn: list(conn.execute(stmt).scalars())))
        convert = self.converters[0]
        at = convert.names.index("update_time")
        process = convert.results[at]
        return {
            key: _as_text(row[at] if process is None else process(row[at]))
            for key, row in added
            if key not in twins
        }

    def write(
        self, conn: Connection, *, batch: _Batch
    ) -> tuple[tuple[int, int, int], int, list[str]]:
        """Insert the batch's rows whose keys the destination still lacks (checked
        again in this transaction); tags go only with tasks this write adds (a task
        the destination had is left alone). A task the destination holds on the other
        side, moved there by the source since it was copied, is moved too; one the
        destination changed since is left as it is. Returns tasks, shards and tags
        added, the tasks moved and the ids left as they were."""
        assert batch.rows is not None
        have, have_shards = self.present(conn, keys=batch.keys)
        task_rows, shard_rows, tag_rows = batch.rows
        added = {key for key, _ in task_rows if key not in have}
        moved, kept = self._moves(conn, batch.movable, added)
        added -= set(kept)
        shard_rows = [(key, row) for key, row in shard_rows if key[0] not in kept]
        picked = (
            [row for key, row in task_rows if key in added],
            [row for key, row in shard_rows if key not in have_shards],
            [row for key, row in tag_rows if key in added],
        )
        insert = self.destination.backend.bulk_insert_bound
        for table, rows in zip(self.tables, picked, strict=True):
            if rows:
                insert(conn, table, rows)
        # Last, after every insert (MariaDB's commit tick is then held for the commit).
        archive_side = self.tables[0] is archived_tasks
        now = utc_now()
        back: change_log.Kind = "archived" if archive_side else "restored"
        change_log.record(conn, back, sorted(moved), now)
        kind: change_log.Kind = "archived" if archive_side else "saved"
        change_log.record(conn, kind, sorted(added - set(moved)), now)
        return (len(picked[0]), len(picked[1]), len(picked[2])), len(moved), kept

    def _moves(
        self, conn: Connection, movable: dict[str, str | None], added: set[str]
    ) -> tuple[list[str], list[str]]:
        """Of the tasks being added, the ones the destination holds on the other side:
        those with the source's ``update_time`` are deleted there (they move), the
        others are kept there and not added. Returns (moved, kept) ids."""
        candidates = [key for key in movable if key in added]
        if not candidates:
            return [], []
        other_tasks, other_shards, other_tags = self.other
        found = {
            key: _as_text(stamp)
            for chunk in in_batches(candidates)
            for key, stamp in conn.execute(
                select(other_tasks.c.task_id, other_tasks.c.update_time).where(
                    other_tasks.c.task_id.in_(chunk)
                )
            )
        }
        moved = [key for key in candidates if key in found and found[key] == movable[key]]
        kept = [key for key in candidates if key in found and found[key] != movable[key]]
        for chunk in in_batches(moved):
            for table, owner in (
                (other_tags, other_tags.c.task_id),
                (other_shards, other_shards.c.uniqc_task_id),
                (other_tasks, other_tasks.c.task_id),
            ):
                conn.execute(delete(table).where(owner.in_(chunk)))
        return moved, kept


def _as_text(stamp: Any) -> str | None:
    """A stored ``update_time`` as canonical text when it is one (for comparing the
    source's with the destination's), else as it is."""
    if stamp is None or isinstance(stamp, Unreadable):
        return None
    try:
        return canonical_timestamp(stamp, "update_time")
    except TaskStoreError:
        return str(stamp)


def _converted(converter: _Converter, keyed: list[tuple[Any, Sequence[Any]]]) -> _Keyed:
    rows = converter.rows([row for _, row in keyed])
    return [(key, row) for (key, _), row in zip(keyed, rows, strict=True)]


def _with_task_times(
    tag_convert: _Converter, tags: _Keyed, task_convert: _Converter, new_tasks: _Keyed
) -> _Keyed:
    """Tags carry their task's submit_time as the destination stores it (repaired when
    the task's was unreadable), as a save writes them (v10)."""
    if "submit_time" not in tag_convert.names:
        return tags
    at, task_at = tag_convert.names.index("submit_time"), task_convert.names.index("submit_time")
    times = {key: row[task_at] for key, row in new_tasks}
    return [
        (key, (*row[:at], times[key], *row[at + 1 :]) if key in times else row) for key, row in tags
    ]


class _DestinationKeys:
    """Which task ids and shard keys of a batch the destination has: one read per table
    over the batch's id range (compiled once, so the server can keep it prepared),
    returning at most a few times the batch's rows. A range the destination fills much
    more densely (its own tasks between ours) is asked by ``IN`` lists instead."""

    def __init__(self, tables: _Tables, dialect: Dialect) -> None:
        task_table, shard_table, _ = tables
        self.task_id, self.parent_id = task_table.c.task_id, shard_table.c.uniqc_task_id
        self.shard_index = shard_table.c.shard_index
        id_type = self.task_id.type
        self.bind = id_type._cached_bind_processor(dialect)
        self.result = id_type._cached_result_processor(dialect, None)

        def in_range(*columns: Any) -> _DriverSelect:
            key = columns[0]
            stmt = select(*columns).where(key >= bindparam("first"), key <= bindparam("last"))
            return _DriverSelect(stmt.limit(bindparam("cap")), dialect)

        self._tasks = in_range(self.task_id)
        self._shards = in_range(self.parent_id, self.shard_index)

    def __call__(self, conn: Connection, *, keys: _Keys) -> tuple[set[str], set[Any]]:
        first, last = keys.task_ids[0], keys.task_ids[-1]
        bounds = {
            "first": first if self.bind is None else self.bind(first),
            "last": last if self.bind is None else self.bind(last),
        }
        cap = 2 * len(keys.task_ids) + 16
        found = self._tasks.run(conn, cap=cap, **bounds)
        if len(found) < cap:
            tasks_ = {self._read(row[0]) for row in found}
        else:
            tasks_ = _among(conn, select(self.task_id), self.task_id, keys.task_ids)
        cap = 2 * (len(keys.shard_keys) + len(keys.task_ids)) + 16
        found = self._shards.run(conn, cap=cap, **bounds) if keys.shard_keys else []
        if len(found) < cap:
            shards = {(self._read(row[0]), row[1]) for row in found}
        else:
            parents = list(dict.fromkeys(task_id for task_id, _ in keys.shard_keys))
            shards = _among(conn, select(self.parent_id, self.shard_index), self.parent_id, parents)
        return tasks_, shards

    def _read(self, raw: Any) -> Any:
        return raw if self.result is None or type(raw) is str else self.result(raw)


def _among(conn: Connection, stmt: Select[Any], column: Any, ids: list[str]) -> set[Any]:
    """The rows of ``stmt`` (a key, or a key tuple) whose ``column`` is among ``ids``."""
    found: set[Any] = set()
    for chunk in in_batches(ids):
        result = conn.execute(stmt.where(column.in_(chunk)))
        if len(stmt.selected_columns) == 1:
            found.update(result.scalars())
        else:
            found.update(tuple(row) for row in result)
    return found


@contextmanager
def _prefetched(items: Iterator[T]) -> Iterator[Iterator[T]]:
    """``items`` produced one ahead in a worker thread, so that the next batch is read
    and converted while the current one is written (the destination's server works
    meanwhile). Items, and an exception raised producing them, come out in order;
    leaving the block (done, an error, Ctrl-C) stops the worker before returning."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
            except Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # raised in the caller's thread, by consume()
            put((False, exc))
            return
        put((False, None))

    def consume() -> Iterator[T]:
        while True:
            ok, value = queue.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value

    worker = threading.Thread(target=produce, name="uniqc-copy-reader", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


class _SourceReads:
    """The SELECTs a copy runs on the source for one side (live or archive), compiled
    once for its dialect and run through the driver: rows come back as stored, and
    only the ones the destination lacks are converted."""

    def __init__(
        self,
        tables: _Tables,
        dialect: Dialect,
        batch_size: int,
        read_ids: Callable[[Sequence[Sequence[Any]]], list[str]],
    ) -> None:
        task_table, shard_table, tag_table = tables
        task_id, parent_id = task_table.c.task_id, shard_table.c.uniqc_task_id
        first_ids = select(task_id).order_by(task_id).limit(batch_size)
        self._first_ids = _DriverSelect(first_ids, dialect)
        self._next_ids = _DriverSelect(first_ids.where(task_id > bindparam("after")), dialect)

        def in_range(column: Any, *columns: Any) -> _DriverSelect:
            return _DriverSelect(
                select(*columns).where(column >= bindparam("first"), column <= bindparam("last")),
                dialect,
            )

        self._shard_keys = in_range(parent_id, parent_id, shard_table.c.shard_index)
        self._tasks = in_range(task_id, *task_table.columns)
        self._shards = in_range(parent_id, *shard_table.columns)
        self._tags = in_range(tag_table.c.task_id, *tag_table.columns)
        self._read_ids = read_ids

    def keys(self, conn: Connection, *, after: Any) -> _Keys:
        """The next batch's task ids (after ``after``, a raw id) and its shards' keys."""
        if after is None:
            found = self._first_ids.run(conn)
        else:
            found = self._next_ids.run(conn, after=after)
        if not found:
            return _Keys([], [], None, None)
        first, last = found[0][0], found[-1][0]
        ids = self._read_ids(found)
        batch = set(ids)
        shards = self._shard_keys.run(conn, first=first, last=last)
        shard_keys = [
            (parent, row[1])
            for parent, row in zip(self._read_ids(shards), shards, strict=True)
            if parent in batch
        ]
        return _Keys(ids, shard_keys, first, last)

    def rows(self, conn: Connection, *, keys: _Keys) -> _Rows:
        """Every stored task, shard and tag row in the key range of ``keys``."""
        bounds = {"first": keys.first, "last": keys.last}
        return _Rows(
            self._tasks.run(conn, **bounds),
            self._shards.run(conn, **bounds),
            self._tags.run(conn, **bounds),
        )


class _DriverSelect:
    """One SELECT compiled once and run on the driver's own cursor, with its parameters
    given as the driver takes them (ids as the driver returned them); its rows come
    back as the driver gives them, without SQLAlchemy's per-row work. A driver error
    is raised as SQLAlchemy's, so busy retries and messages work as for any statement."""

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.defaults: dict[str, Any] = dict(compiled.construct_params(_check=False))
        self.order = list(compiled.positiontup or ()) if compiled.positional else None

    def run(self, conn: Connection, **params: Any) -> list[Sequence[Any]]:
        values = self.defaults | params
        args = values if self.order is None else tuple(values[name] for name in self.order)
        cursor = conn.connection.cursor()
        try:
            with driver_errors(conn.dialect, self.sql, args):
                cursor.execute(self.sql, args)
                return list(cursor.fetchall())
        finally:
            cursor.close()


# -- rows as the destination's driver takes them -----------------------------------------

_PLAIN, _TEXT, _JSON, _OTHER = range(4)
"""How a column's stored value is read: as it is (no type processing either side); as
it is when it is text (ids, timestamps: their result processing leaves text alone);
as JSON text (:func:`_stored_json`); or through its type's result processing."""


_SLOW = object()
"""A value the fast path does not take: its row goes the full way (:meth:`_Converter.full_row`)."""


class _Converter:
    """Turns one table's rows as the source's driver gave them into the values the
    destination's driver takes: what an ``INSERT`` of the row ``get()`` reads sends.

    Column by column: each distinct stored value of a batch is converted once."""

    def __init__(self, table: Table, source: Dialect, destination: Dialect) -> None:
        self.table = table
        self.names = [column.name for column in table.columns]
        self.id_at = self.names.index(
            "uniqc_task_id" if "uniqc_task_id" in self.names else "task_id"
        )
        self.results = [c.type._cached_result_processor(source, None) for c in table.columns]
        self.binds = [c.type._cached_bind_processor(destination) for c in table.columns]
        self.kinds = [
            _kind(column.type, result, bind)
            for column, result, bind in zip(table.columns, self.results, self.binds, strict=True)
        ]
        # Columns of one type class convert alike, so they share their conversions.
        groups: dict[type, int] = {}
        self.groups = [groups.setdefault(type(c.type), len(groups)) for c in table.columns]
        # Task rows whose derived columns a writer left empty go the full way, which
        # fills them (statements.readable_row): never copy a NULL platform or name.
        self.derived = (
            (self.names.index("platform"), self.names.index("name"))
            if {"platform", "name", "metadata_json"} <= set(self.names)
            else None
        )
        self.metadata_at = self.names.index("metadata_json") if self.derived else -1
        self.search_at = self.names.index("search_key") if "search_key" in self.names else -1

    def read_ids(self, rows: Sequence[Sequence[Any]], at: int = 0) -> list[str]:
        """The task id (column ``at`` of each stored row) as ``get()`` reads it;
        raises :class:`CorruptRowError` for one that cannot be read."""
        ids = [row[at] for row in rows]
        if all(type(raw) is str for raw in ids):
            return ids
        return [self._read_id(raw) for raw in ids]

    def _read_id(self, raw: Any) -> str:
        process = self.results[self.id_at]
        value = raw if process is None or type(raw) is str else process(raw)
        if isinstance(value, Unreadable):
            raise CorruptRowError(self.table.name, raw, self.names[self.id_at], value.reason)
        return cast(str, value)

    def rows(self, found: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver values of each row in ``found``."""
        if not found:
            return []
        memos: dict[int, dict[Any, Any]] = {}
        converted: list[Sequence[Any]] = []
        slow: set[int] = set()
        columns = zip(*found, strict=True)
        slots = zip(self.kinds, self.groups, self.results, self.binds, strict=True)
        for stored, (kind, group, result, bind) in zip(columns, slots, strict=True):
            if kind == _PLAIN:
                converted.append(stored)
                continue
            memo = memos.setdefault(group, {})
            try:
                for raw in set(stored).difference(memo):
                    memo[raw] = _fast_value(kind, raw, result, bind)
                values = [memo[raw] for raw in stored]
            except TypeError:  # a stored value that cannot key the memo
                values = [_fast_value(kind, raw, result, bind) for raw in stored]
            if _SLOW in values:
                slow.update(i for i, value in enumerate(values) if value is _SLOW)
            converted.append(values)
        rows = list(zip(*converted, strict=True))
        if self.derived is not None or self.search_at >= 0:
            slow.update(i for i, row in enumerate(found) if self._underived(row))
        for i in slow:
            rows[i] = self.full_row(found[i])
        return rows

    def _underived(self, row: Sequence[Any]) -> bool:
        if self.search_at >= 0 and row[self.search_at] is None:
            return True
        if self.derived is None:
            return False
        platform_at, name_at = self.derived
        metadata = row[self.metadata_at]
        return row[platform_at] is None or (
            row[name_at] is None and isinstance(metadata, str) and "task_name" in metadata
        )

    def full_row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """``row`` read as ``get()`` reads it (:func:`readable_row`), then bound."""
        stored = {
            name: raw if process is None else process(raw)
            for name, process, raw in zip(self.names, self.results, row, strict=True)
        }
        fixed = readable_row(self.table.name, stored)
        return tuple(
            fixed[name] if bind is None else bind(fixed[name])
            for name, bind in zip(self.names, self.binds, strict=True)
        )


def _fast_value(
    kind: int, raw: Any, result: Callable[[Any], Any] | None, bind: Callable[[Any], Any] | None
) -> Any:
    """The bound value of one stored value that needs no repair, else :data:`_SLOW`."""
    if raw is None:
        value: Any = None
    elif kind == _JSON:
        tree = _stored_json(raw) if type(raw) is str else None
        if tree is None:
            return _SLOW
        value = JsonReady(tree)
    elif kind == _TEXT:
        value = raw if type(raw) is str or result is None else result(raw)
        if type(value) is not str:
            return _SLOW
    else:
        value = raw if result is None else result(raw)
        if isinstance(value, Unreadable):
            return _SLOW
    try:
        return value if bind is None else bind(value)
    except InvalidInputError:  # e.g. legacy timestamp text: the full path repairs it
        return _SLOW


def _kind(column_type: Any, result: Any, bind: Any) -> int:
    if isinstance(column_type, JsonDocument):
        return _JSON
    if isinstance(column_type, (IdText, Timestamp)):
        return _TEXT
    return _PLAIN if result is None and bind is None else _OTHER


# -- JSON text that can go over as it is ---------------------------------------------------

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_INNERMOST = re.compile(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")


def _stored_json(text: str) -> Any:
    """The plain JSON data of ``text`` when ``text`` is exactly what saving its value
    writes (``encode_json(decode_json(text)) == text``), else None.

    Such text needs no decoding and encoding again: its data is what the encoder
    would produce, so binding it as :class:`JsonReady` stores what a save stores.
    Anything else (``NaN`` literals, spaces, non-ASCII characters, other number forms,
    a tagged object the decoder would change, nesting past :data:`MAX_DEPTH`, JSON
    ``null``) returns None and takes the full path."""
    try:
        tree = json.loads(text)
        if tree is None or dump_jsonable(tree) != text:
            return None
        if TAG in text and dump_jsonable(to_jsonable(decode_json(text))) != text:
            return None
    except (ValueError, TypeError, RecursionError, TaskStoreError):
        return None
    if text.count("[") + text.count("{") > MAX_DEPTH and _nests_deeper(text, MAX_DEPTH):
        return None
    return tree


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether the lists and dicts of JSON ``text`` nest more than ``limit`` deep:
    strings blanked, then the innermost brackets removed ``limit`` times."""
    rest = _JSON_STRING.sub("", text)
    for _ in range(limit):
        rest, removed = _INNERMOST.subn("", rest)
        if not removed:
            return False
    return "[" in rest or "{" in rest
