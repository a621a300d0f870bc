"""Exporting tasks to a file and importing them again: JSON lines (lossless) or CSV.

A JSONL export is a header line ``{"uniqc_export": 1, ...}``, then one line per task:
``{"task": {...}, "shards": [...]}``, every field of the task (tags, name,
``archived_at`` for an archived one) and of its shards, values in the store's tagged
JSON form (:mod:`~uniqc_taskstore.jsoncodec`), so NaN, complex numbers and dicts keyed
by integers come back as they went. Tasks are read by keyset a batch at a time and
written as they come, so memory stays flat however many there are; all of it is read
from one snapshot (:meth:`~uniqc_taskstore.engine.Database.snapshot`).

:func:`import_tasks` reads such a file back a batch at a time, each batch one
transaction, and skips tasks the store already has (live or archived): importing the
same file twice adds nothing, and an import that was interrupted is finished by
running it again. CSV exports are for spreadsheets and papers, not for importing.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from sqlalchemy import Connection, insert, select, union_all

from . import change_log, queries
from . import statements as sql
from .errors import InvalidInputError, ShardLayoutError, TaskStoreError
from .filters import ARCHIVED, LIVE, Sort, TaskFilter, TaskTables
from .jsoncodec import dump_jsonable, from_jsonable, to_jsonable
from .migrator import CURRENT_SCHEMA_VERSION
from .model import (
    TaskInfo,
    TaskShard,
    validate_callback,
    validate_count,
    validate_shard,
    validate_task,
)
from .sharding import assemble_results, check_layout
from .store import OnCorrupt, TaskStore
from .timestamps import canonical_timestamp, utc_now

EXPORT_FORMAT = 1
"""Version of the JSONL layout; :func:`import_tasks` refuses files of a later one."""
HEADER_KEY = "uniqc_export"

Progress = Callable[[int, int | None], None]
"""Called after each batch with (tasks done, tasks in all, None when not known)."""
Format = Literal["jsonl", "json", "csv"]
CsvRows = Literal["task", "shard", "circuit"]

TASK_COLUMNS = (
    "task_id",
    "name",
    "backend",
    "status",
    "shots",
    "submit_time",
    "update_time",
    "archived_at",
    "tags",
    "error_message",
)
"""Columns of a CSV export with one row per task (``tags`` as a JSON object)."""
SHARD_COLUMNS = (
    "task_id",
    "shard_index",
    "platform_task_id",
    "backend",
    "status",
    "circuit_count",
    "sub_index_offset",
    "submit_time",
    "update_time",
    "error_message",
)
"""Columns of a CSV export with one row per shard (platform job)."""
CIRCUIT_COLUMNS = (
    "task_id",
    "name",
    "backend",
    "status",
    "circuit_index",
    "result",
    "error_message",
)
"""Columns of a CSV export with one row per circuit result (``result`` as JSON). A
circuit without a result has an empty ``result`` and the error of its platform job
(else of its task); a task with no circuit known (failed before it was sharded) has
one row with an empty ``circuit_index`` and its error."""


@dataclass
class ExportReport:
    """What :func:`export_tasks` wrote."""

    tasks: int = 0
    archived_tasks: int = 0
    shards: int = 0
    rows: int = 0
    seconds: float = 0.0


@dataclass
class ImportReport:
    """What :func:`import_tasks` read and added."""

    tasks: int = 0
    """Tasks added to the live tables."""
    archived_tasks: int = 0
    """Tasks added to the archive."""
    shards: int = 0
    tags: int = 0
    skipped: int = 0
    """Tasks the store already had (live or archived), left as they were."""
    read: int = 0
    """Task lines read from the file."""
    seconds: float = 0.0


def export_tasks(
    store: TaskStore,
    stream: IO[str],
    filter: TaskFilter | None = None,
    *,
    live: bool = True,
    archived: bool = False,
    shards: bool = True,
    format: Format = "jsonl",
    csv_rows: CsvRows = "task",
    batch_size: int = 500,
    progress: Progress | None = None,
    on_corrupt: OnCorrupt | None = None,
) -> ExportReport:
    """Write the live (``live``) and archived (``archived``) tasks matching ``filter`` to
    ``stream``, newest first, each side in turn.

    ``format="jsonl"`` is lossless and re-importable (with shards unless
    ``shards=False``); ``format="json"`` is the same header and task objects as one
    JSON document (``{"uniqc_export": 1, ..., "tasks": [...]}``), still written as
    read; ``format="csv"`` writes one row per task, per shard or per circuit
    result (``csv_rows``) for spreadsheets. A row that cannot be read raises
    :class:`CorruptRowError`, or, with ``on_corrupt``, is skipped and handed to it. Only
    reads the store, from one snapshot: the file holds the store as it was at one
    instant, whatever is written meanwhile."""
    if format not in ("jsonl", "json", "csv"):
        raise InvalidInputError("format", format, "must be 'jsonl', 'json' or 'csv'")
    if csv_rows not in ("task", "shard", "circuit"):
        raise InvalidInputError("csv_rows", csv_rows, "must be 'task', 'shard' or 'circuit'")
    f = filter or TaskFilter()
    validate_count(batch_size, "batch_size", 1)
    validate_callback(on_corrupt, "on_corrupt")
    sides = [side for side, wanted in ((LIVE, live), (ARCHIVED, archived)) if wanted]
    started = time.perf_counter()
    report = ExportReport()
    with_shards = shards if format != "csv" else csv_rows != "task"
    done = total = 0
    # One snapshot for the whole file: a task restored or archived while the export
    # runs is in exactly one of its parts, and every count and row is of one instant.
    with store._db.snapshot() as conn:
        total = sum(queries.count(conn, side, f) for side in sides)
        writer = (
            _csv_writer(stream, csv_rows)
            if format == "csv"
            else _jsonl_writer(stream, store, shards, whole=format == "json")
        )
        if progress is not None:
            progress(0, total)
        for side in sides:
            found = queries.iter_tasks(
                store._db,
                side,
                f,
                Sort(),
                include_shards=with_shards,
                include_results=True,
                batch_size=batch_size,
                on_corrupt=on_corrupt,
                conn=conn,
            )
            for item in found:
                task, task_shards = item if isinstance(item, tuple) else (item, [])
                report.rows += writer(task, task_shards)
                report.shards += len(task_shards)
                if side is ARCHIVED:
                    report.archived_tasks += 1
                else:
                    report.tasks += 1
                done += 1
                if progress is not None and done % batch_size == 0:
                    progress(done, total)
    if progress is not None:
        progress(done, max(done, total))
    if format == "json":
        stream.write("\n]}\n" if done else "]}\n")
    stream.flush()
    report.seconds = time.perf_counter() - started
    return report


Writer = Callable[[TaskInfo, list[TaskShard]], int]


def _jsonl_writer(stream: IO[str], store: TaskStore, shards: bool, *, whole: bool) -> Writer:
    """One line per task (JSONL), or with ``whole`` the items of one JSON document's
    ``tasks`` list (its closing brackets are written by :func:`export_tasks`)."""
    header = {
        HEADER_KEY: EXPORT_FORMAT,
        "schema_version": CURRENT_SCHEMA_VERSION,
        "exported_at": utc_now(),
        "source": store.location,
        "shards": shards,
    }
    stream.write(json.dumps(header)[:-1] + ', "tasks": [' if whole else json.dumps(header) + "\n")
    first = [True]

    def write(task: TaskInfo, task_shards: list[TaskShard]) -> int:
        line: dict[str, Any] = {"task": task.to_dict()}
        if shards:
            line["shards"] = [shard.to_dict() for shard in task_shards]
        text = dump_jsonable(to_jsonable(line, task.task_id))
        if whole:
            stream.write(("\n" if first[0] else ",\n") + text)
            first[0] = False
        else:
            stream.write(text + "\n")
        return 1

    return write


def _csv_writer(stream: IO[str], rows: CsvRows) -> Writer:
    out = csv.writer(stream)
    out.writerow({"task": TASK_COLUMNS, "shard": SHARD_COLUMNS, "circuit": CIRCUIT_COLUMNS}[rows])

    def json_cell(value: Any) -> str:
        return "" if value is None else dump_jsonable(to_jsonable(value))

    def write(task: TaskInfo, task_shards: list[TaskShard]) -> int:
        if rows == "task":
            data = task.to_dict() | {"tags": json_cell(task.tags)}
            out.writerow(["" if data[c] is None else data[c] for c in TASK_COLUMNS])
            return 1
        if rows == "shard":
            for shard in task_shards:
                data = shard.to_dict() | {"task_id": shard.uniqc_task_id}
                out.writerow(["" if data[c] is None else data[c] for c in SHARD_COLUMNS])
            return len(task_shards)
        circuits = _circuit_rows(task, task_shards)
        for index, result, error in circuits:
            out.writerow(
                [
                    task.task_id,
                    task.name or "",
                    task.backend,
                    task.status.value,
                    "" if index is None else index,
                    json_cell(result),
                    error or "",
                ]
            )
        return len(circuits)

    return write


def _circuit_rows(
    task: TaskInfo, shards: list[TaskShard]
) -> list[tuple[int | None, Any, str | None]]:
    """``(circuit, result, error)`` per circuit: every circuit the shards cover, those
    without a result with their shard's error (or the task's); a task with neither
    results nor shards but an error (or a failed or cancelled status) as one row
    without a circuit, so failures are not left out of a per-circuit export."""
    if shards and (task.result is None or any(s.result is not None for s in shards)):
        try:
            results = assemble_results(shards, allow_missing=True)
        except ShardLayoutError:
            pass
        else:
            errors: dict[int, str | None] = {}
            for shard in shards:
                for circuit in range(
                    shard.sub_index_offset, shard.sub_index_offset + shard.circuit_count
                ):
                    errors[circuit] = shard.error_message or task.error_message
            return [(i, r, errors.get(i) if r is None else None) for i, r in enumerate(results)]
    results = circuit_results(task, shards)
    if results:
        return [(i, r, None) for i, r in enumerate(results)]
    if task.error_message or task.status.value in ("failed", "cancelled"):
        return [(None, None, task.error_message or task.status.value)]
    return []


def circuit_results(task: TaskInfo, shards: list[TaskShard]) -> list[Any]:
    """A task's per-circuit results in submission order: from its shards when any has a
    result (None for circuits whose shard has none), else from ``task.result`` (a list
    is one entry per circuit, anything else one circuit)."""
    if any(shard.result is not None for shard in shards):
        try:
            return assemble_results(shards, allow_missing=True)
        except ShardLayoutError:
            pass  # shards that do not tile the batch: fall back to the task's own result
    if task.result is None:
        return []
    return list(task.result) if isinstance(task.result, list) else [task.result]


# -- import -------------------------------------------------------------------------------


def import_tasks(
    store: TaskStore,
    stream: IO[str],
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> ImportReport:
    """Add the tasks of a JSONL export to ``store``: live ones to the live tables,
    archived ones (with their ``archived_at``) to the archive, with shards and tags,
    ``batch_size`` tasks per transaction. Tasks the store already has, live or
    archived, are skipped, so it can be run again to finish an interrupted import.

    A file that is not an export, or a line that cannot be stored, raises
    :class:`InvalidInputError` naming the line; the batches before it stay imported."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be a positive integer")
    started = time.perf_counter()
    total = _count_lines(stream)
    lines = iter(stream)
    _read_header(next(lines, ""))
    report = ImportReport()
    if progress is not None:
        progress(0, total)
    batch: list[_Entry] = []
    for number, text in enumerate(lines, start=2):
        if not text.strip():
            continue
        batch.append(_parse_line(text, number))
        if len(batch) >= batch_size:
            _import_batch(store, batch, report)
            batch = []
            if progress is not None:
                progress(report.read, total)
    if batch:
        _import_batch(store, batch, report)
    if progress is not None:
        progress(report.read, max(report.read, total or 0))
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Entry:
    task: TaskInfo
    shards: list[TaskShard]


def _count_lines(stream: IO[str]) -> int | None:
    """Task lines in a seekable file (for the progress bar), or None."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
        count = sum(1 for text in stream if text.strip())
        stream.seek(start)
    except (OSError, ValueError):
        return None
    return max(count - 1, 0)


def _read_header(text: str) -> dict[str, Any]:
    try:
        header = json.loads(text) if text.strip() else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or HEADER_KEY not in header:
        raise InvalidInputError(
            "file",
            text[:60],
            "is not a uniqc-tasks export: its first line should be the "
            f'{{"{HEADER_KEY}": {EXPORT_FORMAT}, ...}} header written by uniqc-tasks export '
            "(CSV exports cannot be imported)",
        )
    version = header[HEADER_KEY]
    if not isinstance(version, int) or isinstance(version, bool) or version > EXPORT_FORMAT:
        raise InvalidInputError(
            "file",
            version,
            f"export format {version!r} is newer than this uniqc-taskstore reads "
            f"({EXPORT_FORMAT}); upgrade it (pip install -U uniqc-taskstore) to import it",
        )
    return header


def _parse_line(text: str, number: int) -> _Entry:
    where = f"line {number}"
    try:
        data = from_jsonable(json.loads(text))
        task_data = data["task"]
        task = TaskInfo.from_dict(task_data)
        shards = [TaskShard.from_dict(item) for item in data.get("shards") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(
            where, text[:80], f"is not a task line of an export ({exc})"
        ) from None
    try:
        validate_task(task)
        if task.archived_at is not None:
            task.archived_at = canonical_timestamp(task.archived_at, "archived_at")
        for shard in shards:
            validate_shard(shard)
            if shard.uniqc_task_id != task.task_id:
                raise InvalidInputError(
                    "uniqc_task_id",
                    shard.uniqc_task_id,
                    f"shard of another task than {task.task_id}",
                )
        check_layout(shards)
    except TaskStoreError as exc:
        raise InvalidInputError(where, task.task_id, str(exc)) from None
    return _Entry(task, shards)


def _import_batch(store: TaskStore, batch: list[_Entry], report: ImportReport) -> None:
    unique: dict[str, _Entry] = {}
    for entry in batch:
        unique.setdefault(entry.task.task_id, entry)
    rows = {
        archived: _rows(
            [e for e in unique.values() if (e.task.archived_at is not None) == archived]
        )
        for archived in (False, True)
    }

    def work(conn: Connection) -> list[int]:
        ids = list(unique)
        # Live and archive in one statement (one snapshot, also at READ COMMITTED): a
        # task restored or archived meanwhile is seen on one side, never on neither.
        found = union_all(
            *(
                select(side.tasks.c.task_id).where(side.tasks.c.task_id.in_(ids))
                for side in (LIVE, ARCHIVED)
            )
        )
        present: set[str] = set(conn.execute(found).scalars())
        counts = []
        for archived, side in ((False, LIVE), (True, ARCHIVED)):
            counts.extend(_insert_new(conn, side, rows[archived], present))
        # Last, after every insert (MariaDB's commit tick is then held for the commit).
        now = utc_now()
        sides: tuple[tuple[bool, change_log.Kind], ...] = ((False, "saved"), (True, "archived"))
        for archived, kind in sides:
            added = [row["task_id"] for row in rows[archived][0] if row["task_id"] not in present]
            change_log.record(conn, kind, added, now)
        return counts

    # Another import of the same tasks may insert one after the check: the batch then
    # runs again and skips it, as if it had run second.
    counts = store._db.write(work, rerun_on_conflict=True)
    report.read += len(batch)
    report.skipped += len(batch) - (counts[0] + counts[3])
    report.tasks += counts[0]
    report.archived_tasks += counts[3]
    report.shards += counts[1] + counts[4]
    report.tags += counts[2] + counts[5]


_Rows = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def _rows(entries: list[_Entry]) -> _Rows:
    """The task, shard and tag rows of these entries (with ``archived_at`` for the
    archive's tables)."""
    task_rows: list[dict[str, Any]] = []
    shard_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    for entry in entries:
        task = entry.task
        stamp = {"archived_at": task.archived_at} if task.archived_at is not None else {}
        row = sql.task_row(task) | stamp
        task_rows.append(row)
        shard_rows.extend(sql.shard_row(shard) | stamp for shard in entry.shards)
        # Only tasks the store does not hold are inserted: their submit_time is this one.
        tag_rows.extend(
            {"task_id": task.task_id, "key": key, "value": value, "submit_time": row["submit_time"]}
            for key, value in task.tags.items()
        )
    return task_rows, shard_rows, tag_rows


def _insert_new(conn: Connection, side: TaskTables, rows: _Rows, present: set[str]) -> list[int]:
    """Insert the rows of tasks not ``present``; how many tasks, shards and tags."""
    task_rows, shard_rows, tag_rows = rows
    counts = []
    for table, key, table_rows in (
        (side.tasks, "task_id", task_rows),
        (side.shards, "uniqc_task_id", shard_rows),
        (side.tags, "task_id", tag_rows),
    ):
        new = [row for row in table_rows if row[key] not in present]
        if new:
            conn.execute(insert(table), new)
        counts.append(len(new))
    return counts
