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
running it again. A task whose id is both live and archived (a twin, see
:mod:`~uniqc_taskstore.twins`) has ``"twin": true`` on both its lines, and each comes
back to its own side. A line that cannot be read or stored stops the import with an
:class:`ImportLineError` naming the file and the line; the task lines before it are
imported, none after. CSV exports are for spreadsheets and papers, not for importing.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Literal, TypeVar

from sqlalchemy import Connection, insert, literal, select, union_all

from . import change_log, queries
from . import statements as sql
from .errors import (
    DatabaseBusyError,
    DatabaseConnectionError,
    ImportLineError,
    InvalidInputError,
    ShardLayoutError,
    TaskStoreError,
)
from .filters import ARCHIVED, LIVE, Sort, TaskFilter, TaskTables
from .jsoncodec import ENVELOPE_DEPTH, MAX_DEPTH, dump_jsonable, from_jsonable, to_jsonable
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

T = TypeVar("T")
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
            other = LIVE if side is ARCHIVED else ARCHIVED
            items = (item if isinstance(item, tuple) else (item, []) for item in found)
            for chunk in _chunks(items, batch_size):
                twins = _twins(conn, other, [task.task_id for task, _ in chunk])
                for task, task_shards in chunk:
                    report.rows += writer(task, task_shards, task.task_id in twins)
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


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    found = iter(items)
    while chunk := list(itertools.islice(found, size)):
        yield chunk


def _twins(conn: Connection, other: TaskTables, task_ids: list[str]) -> set[str]:
    """The ids among ``task_ids`` that the ``other`` side holds too (twins)."""
    stmt = select(other.tasks.c.task_id).where(other.tasks.c.task_id.in_(task_ids))
    return set(conn.execute(stmt).scalars())


Writer = Callable[[TaskInfo, list[TaskShard], bool], int]
"""Writes one task (with its shards; True: its id is on both sides), returns rows."""


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

    def write(task: TaskInfo, task_shards: list[TaskShard], twin: bool) -> int:
        line: dict[str, Any] = {"task": task.to_dict()}
        if shards:
            line["shards"] = [shard.to_dict() for shard in task_shards]
        if twin:
            line["twin"] = True
        text = dump_jsonable(to_jsonable(line, task.task_id, enclosing=ENVELOPE_DEPTH))
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

    def write(task: TaskInfo, task_shards: list[TaskShard], twin: bool) -> int:
        del twin  # a CSV is not imported: both copies are rows, each with archived_at
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

Opener = Callable[[], TaskStore]
"""Opens (creating it if need be) the store to import into, when there is a first task
to write: an import that fails before then creates nothing."""


def import_tasks(
    store: TaskStore | Opener,
    stream: IO[str] | IO[bytes],
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
    name: str | None = None,
) -> ImportReport:
    """Add the tasks of a JSONL export to ``store``: live ones to the live tables,
    archived ones (with their ``archived_at``) to the archive, with shards and tags,
    ``batch_size`` tasks per transaction. A task the store already has, live or
    archived, is skipped, so it can be run again to finish an interrupted import; a
    line marked ``"twin": true`` (its id was both live and archived where it was
    exported) is judged against its own side only, so both copies come back.

    ``stream`` is a binary (best: a bad byte is pinned to its line) or text stream;
    ``name`` names it in errors (default: its ``name``). ``store`` may be a callable
    that opens the store, called only once there is something to write. A file that
    is not an export, or a line that cannot be read or stored, raises
    :class:`ImportLineError` naming the file and the line: every task line before it
    is imported, none from it on (``error.report`` counts them)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be a positive integer")
    started = time.perf_counter()
    file = name if name is not None else _stream_name(stream)
    target = _Target(store)
    total = _count_lines(stream)
    lines = _numbered_lines(stream)
    try:
        _read_header(next(lines, None))
    except _LineProblem as problem:
        raise ImportLineError(file, problem.line, problem.reason) from None
    report = ImportReport()
    if progress is not None:
        progress(0, total)
    batch: list[_Entry] = []  # read, not yet written
    try:
        for number, text in lines:
            if not text.strip():
                continue
            batch.append(_parse_line(text, number))
            if len(batch) >= batch_size:
                pending, batch = batch, []
                _import_batch(target, pending, report)
                if progress is not None:
                    progress(report.read, total)
        pending, batch = batch, []
        if pending:
            _import_batch(target, pending, report)
    except _LineProblem as problem:
        failed = problem
        if batch:  # the good lines read before the bad one are kept
            try:
                _import_batch(target, batch, report)
            except _LineProblem as earlier:
                failed = earlier
        report.seconds = time.perf_counter() - started
        reason = f"{failed.reason}; {_so_far(report, failed.line)}"
        raise ImportLineError(file, failed.line, reason, report) from None
    target.get()  # an export of no tasks still gives a store to import into
    if progress is not None:
        progress(report.read, max(report.read, total or 0))
    report.seconds = time.perf_counter() - started
    return report


class _Target:
    """The store to import into, opened when first needed."""

    def __init__(self, store: TaskStore | Opener) -> None:
        self._store = store if isinstance(store, TaskStore) else None
        self._open = None if isinstance(store, TaskStore) else store

    def get(self) -> TaskStore:
        if self._store is None:
            assert self._open is not None
            self._store = self._open()
        return self._store


class _LineProblem(Exception):
    """Line ``line`` of the file cannot be imported, for ``reason``."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


@dataclass
class _Entry:
    """One task line, checked, with the rows it inserts."""

    line: int
    task: TaskInfo
    twin: bool
    rows: _Rows

    @property
    def archived(self) -> bool:
        return self.task.archived_at is not None


_Rows = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]
"""A task's row, its shards' and its tags' (with ``archived_at`` for the archive)."""


def _stream_name(stream: IO[Any]) -> str:
    name = getattr(stream, "name", None)
    if isinstance(name, str) and name not in ("<stdin>", "<fdopen>"):
        return name
    return "stdin" if name == "<stdin>" or name == 0 else "the file"


def _so_far(report: ImportReport, line: int) -> str:
    """What happened to the lines before ``line``, and what to do."""
    before = "the line before it" if line == 3 else f"lines 2 to {line - 1}"
    if line <= 2 or report.read == 0:
        kept = "nothing was imported"
    else:
        kept = (
            f"every task of {before} was imported ({report.tasks + report.archived_tasks:,} "
            f"added, {report.skipped:,} already there), nothing from line {line} on"
        )
    return (
        f"{kept}. Fix or remove that line and run the same import again: tasks already "
        "there are skipped"
    )


def _numbered_lines(stream: IO[Any]) -> Iterator[tuple[int, str]]:
    """Each line with its number (the header is 1), as text; a line that is not UTF-8
    raises :class:`_LineProblem` naming it (in a text stream, where the decoder reads
    ahead, the first line not read)."""
    number = 0
    found = iter(stream)
    while True:
        try:
            raw = next(found)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:  # a text stream: decoded ahead of the lines
            raise _LineProblem(
                number + 1, f"is not UTF-8 text ({exc.reason}), at this line or soon after"
            ) from None
        number += 1
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 1].hex()
                raise _LineProblem(
                    number, f"is not UTF-8 text (byte 0x{bad} at column {exc.start + 1})"
                ) from None
        else:
            text = raw
        yield number, text.removeprefix("\ufeff") if number == 1 else text


def _count_lines(stream: IO[Any]) -> int | None:
    """Task lines in a seekable file (for the progress bar), or None."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
    except (OSError, ValueError):
        return None
    try:
        count = sum(1 for text in stream if text.strip())
    except (OSError, ValueError):  # ValueError: UnicodeDecodeError, found again while importing
        return None
    finally:
        stream.seek(start)
    return max(count - 1, 0)


def _read_header(numbered: tuple[int, str] | None) -> dict[str, Any]:
    expected = (
        f'its first line should be the {{"{HEADER_KEY}": {EXPORT_FORMAT}, ...}} header '
        "written by uniqc-tasks export (CSV exports cannot be imported)"
    )
    if numbered is None:
        raise _LineProblem(1, f"the file is empty: not a uniqc-tasks export; {expected}")
    _, text = numbered
    try:
        header = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or HEADER_KEY not in header:
        raise _LineProblem(1, f"the file is not a uniqc-tasks export: {expected}")
    version = header[HEADER_KEY]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _LineProblem(
            1,
            f'"{HEADER_KEY}": {json.dumps(version)} is not an export format (formats are '
            f"whole numbers from 1; this reads up to {EXPORT_FORMAT}); the header was not "
            "written by uniqc-tasks export",
        )
    if version > EXPORT_FORMAT:
        raise _LineProblem(
            1,
            f"export format {version} is newer than this uniqc-taskstore reads "
            f"({EXPORT_FORMAT}); upgrade it (pip install -U uniqc-taskstore) to import it",
        )
    return header


_NOT_A_LINE = (ValueError, KeyError, TypeError, AttributeError, OverflowError)


def _parse_line(text: str, number: int) -> _Entry:
    try:
        data = from_jsonable(json.loads(text))
        task = TaskInfo.from_dict(data["task"])
        shards = [TaskShard.from_dict(item) for item in data.get("shards") or []]
        twin = data.get("twin", False)
    except RecursionError:
        raise _LineProblem(
            number,
            f"nests too deeply to be a task line (values nest at most {MAX_DEPTH} deep)",
        ) from None
    except _NOT_A_LINE as exc:
        raise _LineProblem(number, f"is not a task line of an export ({exc})") from None
    if not isinstance(twin, bool):
        raise _LineProblem(number, f'"twin" must be true or false, not {json.dumps(twin)}')
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
        rows = _rows(task, shards)
    except TaskStoreError as exc:
        raise _LineProblem(number, f"task {task.task_id!r} cannot be stored: {exc}") from None
    except RecursionError:
        raise _LineProblem(number, f"task {task.task_id!r} nests too deeply to store") from None
    return _Entry(number, task, twin, rows)


def _rows(task: TaskInfo, shards: list[TaskShard]) -> _Rows:
    """The task, shard and tag rows of one task (with ``archived_at`` for the
    archive's tables)."""
    stamp = {"archived_at": task.archived_at} if task.archived_at is not None else {}
    row = sql.task_row(task) | stamp
    # Only tasks the store does not hold are inserted: their submit_time is this one.
    tags = [
        {"task_id": task.task_id, "key": key, "value": value, "submit_time": row["submit_time"]}
        for key, value in task.tags.items()
    ]
    return row, [sql.shard_row(shard) | stamp for shard in shards], tags


_STOPS = (DatabaseBusyError, DatabaseConnectionError)
"""Errors of a batch's write that are the database's, not one line's."""


def _import_batch(target: _Target, batch: list[_Entry], report: ImportReport) -> None:
    """Write ``batch`` in one transaction; if the database refuses it, write its lines
    one at a time up to the one refused, which is raised as a :class:`_LineProblem`."""
    store = target.get()
    try:
        # Another import of the same tasks may insert one after the check: the batch
        # then runs again and skips it, as if it had run second.
        counts = store._db.write(partial(_write_new, batch=batch), rerun_on_conflict=True)
    except _STOPS:
        raise
    except TaskStoreError as exc:
        if len(batch) == 1:
            task_id = batch[0].task.task_id
            raise _LineProblem(
                batch[0].line, f"task {task_id!r} was refused by the database: {exc}"
            ) from None
        for entry in batch:
            _import_batch(target, [entry], report)
        return
    report.read += len(batch)
    report.skipped += len(batch) - (counts[0] + counts[3])
    report.tasks += counts[0]
    report.archived_tasks += counts[3]
    report.shards += counts[1] + counts[4]
    report.tags += counts[2] + counts[5]


def _write_new(conn: Connection, *, batch: list[_Entry]) -> list[int]:
    """Insert the entries the store lacks: a line is skipped when the store (or an
    earlier line of the batch) has its id on either side, a twin's line (``twin``)
    only when on its own side. Tasks, shards and tags added to each side."""
    ids = list(dict.fromkeys(entry.task.task_id for entry in batch))
    # Live and archive in one statement (one snapshot, also at READ COMMITTED): a task
    # restored or archived meanwhile is seen on one side, never on neither.
    found = union_all(
        *(
            select(side.tasks.c.task_id, literal(archived).label("archived")).where(
                side.tasks.c.task_id.in_(ids)
            )
            for archived, side in ((False, LIVE), (True, ARCHIVED))
        )
    )
    present: dict[bool, set[str]] = {False: set(), True: set()}
    for task_id, archived in conn.execute(found):
        present[bool(archived)].add(task_id)
    taken: dict[str, set[bool]] = {}
    chosen: dict[bool, list[_Entry]] = {False: [], True: []}
    for entry in batch:
        task_id, archived = entry.task.task_id, entry.archived
        if entry.twin:
            skip = task_id in present[archived] or archived in taken.get(task_id, set())
        else:
            skip = task_id in present[False] or task_id in present[True] or task_id in taken
        if not skip:
            taken.setdefault(task_id, set()).add(archived)
            chosen[archived].append(entry)
    counts: list[int] = []
    for archived, side in ((False, LIVE), (True, ARCHIVED)):
        entries = chosen[archived]
        for table, rows in (
            (side.tasks, [e.rows[0] for e in entries]),
            (side.shards, [row for e in entries for row in e.rows[1]]),
            (side.tags, [row for e in entries for row in e.rows[2]]),
        ):
            if rows:
                conn.execute(insert(table), rows)
            counts.append(len(rows))
    # Last, after every insert (MariaDB's commit tick is then held for the commit).
    now = utc_now()
    sides: tuple[tuple[bool, change_log.Kind], ...] = ((False, "saved"), (True, "archived"))
    for archived, kind in sides:
        change_log.record(conn, kind, [e.task.task_id for e in chosen[archived]], now)
    return counts
