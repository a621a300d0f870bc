"""Statements over the tables, and the mapping between rows and dataclasses.

Built once here from the :mod:`~uniqc_taskstore.schema` tables; the store only
executes them. Nothing here assumes a dialect except through the backend's
upsert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
)

from .backends import Backend
from .backends.base import Incoming
from .column_types import IdText
from .errors import InvalidInputError
from .jsoncodec import prepare_json
from .model import MAX_COUNT, TERMINAL_STATUSES, TaskInfo, TaskShard, TaskStatus, coerce_status
from .schema import archived_task_shards, archived_tasks, task_shards, tasks
from .timestamps import normalize_timestamp

_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
ID_BATCH = 500
"""Ids per ``IN (...)`` list: well under every driver's bound-parameter limit."""
_KEEP_WHEN_STALE = ("result_json", "error_message")

Filter = TaskStatus | str | Iterable[TaskStatus | str] | None

# -- rows <-> dataclasses ---------------------------------------------------------------


def task_row(task: TaskInfo) -> dict[str, Any]:
    """The ``tasks`` row of a validated task."""
    return {
        "task_id": task.task_id,
        "backend": task.backend,
        "status": task.status.value,
        "shots": task.shots,
        "submit_time": normalize_timestamp(task.submit_time, "submit_time"),
        "update_time": normalize_timestamp(task.update_time, "update_time"),
        "result_json": prepare_json(task.result, "result"),
        "metadata_json": prepare_json(task.metadata, "metadata"),
        "error_message": task.error_message,
    }


def shard_row(shard: TaskShard) -> dict[str, Any]:
    """The ``task_shards`` row of a validated shard."""
    return {
        "uniqc_task_id": shard.uniqc_task_id,
        "shard_index": shard.shard_index,
        "platform_task_id": shard.platform_task_id,
        "backend": shard.backend,
        "circuit_count": shard.circuit_count,
        "sub_index_offset": shard.sub_index_offset,
        "status": shard.status.value,
        "result_json": prepare_json(shard.result, "result"),
        "error_message": shard.error_message,
        "submit_time": normalize_timestamp(shard.submit_time, "submit_time"),
        "update_time": normalize_timestamp(shard.update_time, "update_time"),
    }


def task_from_row(row: Mapping[Any, Any]) -> TaskInfo:
    """A task read from ``tasks`` or ``archived_tasks`` (result absent in summaries)."""
    return TaskInfo(
        task_id=row["task_id"],
        backend=row["backend"],
        status=coerce_status(row["status"]),
        result=row.get("result_json"),
        shots=row["shots"],
        submit_time=row["submit_time"],
        update_time=row["update_time"],
        metadata=row["metadata_json"] if row["metadata_json"] is not None else {},
        error_message=row["error_message"],
        archived_at=row.get("archived_at"),
    )


def shard_from_row(row: Mapping[Any, Any]) -> TaskShard:
    """A shard read from ``task_shards`` or ``archived_task_shards``."""
    return TaskShard(
        uniqc_task_id=row["uniqc_task_id"],
        shard_index=row["shard_index"],
        platform_task_id=row["platform_task_id"],
        backend=row["backend"],
        circuit_count=row["circuit_count"],
        sub_index_offset=row["sub_index_offset"],
        status=coerce_status(row["status"]),
        result=row["result_json"],
        error_message=row["error_message"],
        submit_time=row["submit_time"],
        update_time=row["update_time"],
    )


# -- writes ------------------------------------------------------------------------------


def _stale(existing: Table, incoming: Incoming) -> ColumnElement[bool]:
    """The stored status is final and the incoming one is not: a slow poller's view."""
    return and_(_is_terminal(existing.c.status), ~_is_terminal(incoming.status))


def _is_terminal(status: ColumnElement[Any]) -> ColumnElement[bool]:
    # The statuses are inlined as SQL literals: upserts run as executemany, which
    # allows no expanding IN, and PyMySQL's executemany allows no parameters after
    # VALUES (...). They are our own enum's fixed lowercase words, never user input.
    return status.in_([literal_column(f"'{value}'") for value in _TERMINAL])


@cache
def upsert_tasks(backend: Backend) -> Any:
    """Insert or update tasks by id, keeping the first ``submit_time``; a stored final
    status (with its result and error) is never replaced by a non-final one."""

    def assignments(incoming: Incoming) -> list[tuple[str, ColumnElement[Any]]]:
        stale = _stale(tasks, incoming)
        plain = ("backend", "shots", "update_time", "metadata_json")
        return [
            *((name, incoming[name]) for name in plain),
            *((name, _keep_if(stale, tasks, incoming, name)) for name in _KEEP_WHEN_STALE),
            ("status", _keep_if(stale, tasks, incoming, "status")),
        ]

    return backend.upsert(tasks, ("task_id",), assignments)


@cache
def upsert_shards(backend: Backend) -> Any:
    """Insert or update shards by (task, index), keeping the first ``submit_time``.

    A report for the same platform job never turns a final status back into a
    non-final one; a new ``platform_task_id`` (a resubmission) replaces everything."""

    def assignments(incoming: Incoming) -> list[tuple[str, ColumnElement[Any]]]:
        stale = and_(
            task_shards.c.platform_task_id == incoming.platform_task_id,
            _stale(task_shards, incoming),
        )
        plain = ("backend", "circuit_count", "sub_index_offset", "update_time")
        resubmitted = task_shards.c.platform_task_id != incoming.platform_task_id
        return [
            *((name, incoming[name]) for name in plain),
            *((name, _keep_if(stale, task_shards, incoming, name)) for name in _KEEP_WHEN_STALE),
            (
                "submit_time",
                case((resubmitted, incoming.submit_time), else_=task_shards.c.submit_time),
            ),
            # Read by the conditions above: MySQL applies assignments in order.
            ("status", _keep_if(stale, task_shards, incoming, "status")),
            ("platform_task_id", incoming.platform_task_id),
        ]

    return backend.upsert(task_shards, ("uniqc_task_id", "shard_index"), assignments)


def _keep_if(
    condition: ColumnElement[bool], existing: Table, incoming: Incoming, name: str
) -> ColumnElement[Any]:
    return case((condition, existing.c[name]), else_=incoming[name])


def in_batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``items`` in slices of :data:`ID_BATCH`, for ``IN (...)`` lists."""
    for start in range(0, len(items), ID_BATCH):
        yield items[start : start + ID_BATCH]


def lock_parents(task_ids: Sequence[str]) -> Select[Any]:
    """Lock these tasks (``FOR UPDATE``), each with whether it has any shard yet."""
    has_shards = exists().where(task_shards.c.uniqc_task_id == tasks.c.task_id)
    return (
        select(tasks.c.task_id, has_shards.label("has_shards"))
        .where(tasks.c.task_id.in_(task_ids))
        .with_for_update()
    )


def shard_statuses_present(task_ids: Sequence[str]) -> Select[Any]:
    """Each task's status and, per shard status, whether any of its shards has it.

    One ``EXISTS`` probe per status on the index (task, status): the cost is the same
    for a task with 3 shards or 100,000."""
    probes = [
        exists()
        .where(task_shards.c.uniqc_task_id == tasks.c.task_id, task_shards.c.status == s.value)
        .label(s.value)
        for s in TaskStatus
    ]
    return select(tasks.c.task_id, tasks.c.status, *probes).where(tasks.c.task_id.in_(task_ids))


def shards_near(task_id: str, indexes: Sequence[int], start: int, end: int) -> Select[Any]:
    """The stored shards of a task a write may collide with: those at the written
    ``indexes`` and those covering any circuit in ``[start, end)``."""
    if len(indexes) <= ID_BATCH:
        at_index = task_shards.c.shard_index.in_(indexes)
    else:
        at_index = task_shards.c.shard_index.between(min(indexes), max(indexes))
    # Written without offset + count, which can pass a 32-bit integer on PostgreSQL.
    covering = and_(
        task_shards.c.circuit_count > literal(start) - task_shards.c.sub_index_offset,
        *([task_shards.c.sub_index_offset < end] if end <= MAX_COUNT else []),
    )
    return select(
        task_shards.c.shard_index,
        task_shards.c.platform_task_id,
        task_shards.c.sub_index_offset,
        task_shards.c.circuit_count,
    ).where(task_shards.c.uniqc_task_id == task_id, or_(at_index, covering))


def archive_statements(task_id: str, archived_at: str) -> list[Any]:
    """Copy a task and its shards into the archive (replacing an older archived copy),
    then remove them from the live tables."""
    return [
        *_delete_archived(task_id),
        _copy(tasks, archived_tasks, tasks.c.task_id == task_id, archived_at),
        _copy(
            task_shards, archived_task_shards, task_shards.c.uniqc_task_id == task_id, archived_at
        ),
        delete(task_shards).where(task_shards.c.uniqc_task_id == task_id),
        delete(tasks).where(tasks.c.task_id == task_id),
    ]


def restore_statements(task_id: str) -> list[Any]:
    """Copy an archived task and its shards back to the live tables and drop the archive copy."""
    return [
        _copy(archived_tasks, tasks, archived_tasks.c.task_id == task_id, None),
        _copy(
            archived_task_shards, task_shards, archived_task_shards.c.uniqc_task_id == task_id, None
        ),
        *_delete_archived(task_id),
    ]


def _delete_archived(task_id: str) -> list[Delete]:
    return [
        delete(archived_task_shards).where(archived_task_shards.c.uniqc_task_id == task_id),
        delete(archived_tasks).where(archived_tasks.c.task_id == task_id),
    ]


def _copy(source: Table, target: Table, where: ColumnElement[bool], archived_at: str | None) -> Any:
    names = [c.name for c in target.columns if c.name != "archived_at"]
    columns: list[Any] = [source.c[name] for name in names]
    if archived_at is not None:
        names.append("archived_at")
        columns.append(literal(archived_at, target.c.archived_at.type))
    return insert(target).from_select(names, select(*columns).where(where))


# -- reads -------------------------------------------------------------------------------


def backend_matches(column: Any, backend: str) -> ColumnElement[bool]:
    """``backend`` itself or any of its devices: ``originq`` matches ``originq:WK_C180``.

    A prefix comparison rather than LIKE, which ignores case on SQLite."""
    prefix = literal(backend + ":", IdText())
    return or_(column == backend, func.substr(column, 1, func.length(prefix)) == prefix)


def task_filters(table: Table, status: Filter, backend: str | None) -> list[ColumnElement[bool]]:
    """WHERE clauses for the status and backend filters of list and count."""
    clauses: list[ColumnElement[bool]] = []
    if status is not None:
        wanted = [status] if isinstance(status, (TaskStatus, str)) else list(status)
        clauses.append(table.c.status.in_([coerce_status(s).value for s in wanted]))
    if backend is not None:
        if not isinstance(backend, str):
            raise InvalidInputError("backend", backend, "must be a string or None")
        clauses.append(backend_matches(table.c.backend, backend))
    return clauses


def select_tasks(
    table: Table,
    *,
    status: Filter = None,
    backend: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
    include_results: bool = True,
    after: tuple[str, str] | None = None,
) -> Select[Any]:
    """Tasks newest first by submit time (ties by id, so pages are stable), optionally
    only those after the ``(submit_time, task_id)`` of the last row of a previous page."""
    columns = [c for c in table.columns if include_results or c.name != "result_json"]
    stmt = (
        select(*columns)
        .where(*task_filters(table, status, backend))
        .order_by(table.c.submit_time.desc(), table.c.task_id.desc())
    )
    if after is not None:
        submitted, task_id = after
        stmt = stmt.where(
            or_(
                table.c.submit_time < submitted,
                and_(table.c.submit_time == submitted, table.c.task_id < task_id),
            )
        )
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
        if limit is None:
            stmt = stmt.limit(2**62)  # MySQL has no OFFSET without LIMIT
    return stmt


def count_tasks(table: Table, *, status: Filter = None, backend: str | None = None) -> Select[Any]:
    """Number of tasks matching the filters."""
    return select(func.count()).select_from(table).where(*task_filters(table, status, backend))


def select_shards_by_platform_id(platform_task_id: str, backend: str | None) -> Select[Any]:
    """Shards of a platform job, newest first, ties broken by task id and index."""
    stmt = select(task_shards).where(task_shards.c.platform_task_id == platform_task_id)
    if backend is not None:
        stmt = stmt.where(backend_matches(task_shards.c.backend, backend))
    return stmt.order_by(
        task_shards.c.submit_time.desc(),
        task_shards.c.uniqc_task_id.desc(),
        task_shards.c.shard_index.desc(),
    )
