"""Statements over the tables, and the mapping between rows and dataclasses.

Built once here from the :mod:`~uniqc_taskstore.schema` tables; the store only
executes them. Nothing here assumes a dialect except through the backend's
upsert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    insert,
    literal,
    literal_column,
    select,
)

from .backends import Backend
from .backends.base import Incoming
from .filters import ARCHIVED, LIVE, backend_matches
from .jsoncodec import prepare_json
from .model import TERMINAL_STATUSES, TaskInfo, TaskShard, coerce_status, legacy_task_name
from .schema import task_shards, tasks
from .timestamps import normalize_timestamp

_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
_KEEP_WHEN_STALE = ("result_json", "error_message")

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
        "name": task.name if task.name is not None else legacy_task_name(task.metadata),
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
        name=row.get("name"),
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
        plain = ("backend", "shots", "update_time", "metadata_json", "name")
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


def archive_statements(task_ids: str | Sequence[str], archived_at: str) -> list[Any]:
    """Copy tasks with their shards and tags into the archive (replacing older archived
    copies), then remove them from the live tables."""
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    return [
        *delete_archived_statements(ids),
        *(
            _copy(live, archived, _owned_by(live, ids), archived_at)
            for live, archived in zip(LIVE, ARCHIVED, strict=True)
        ),
        *(delete(table).where(_owned_by(table, ids)) for table in reversed(LIVE)),
    ]


def restore_statements(task_ids: str | Sequence[str]) -> list[Any]:
    """Copy archived tasks with their shards and tags back to the live tables and drop
    the archive copies."""
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    return [
        *(
            _copy(archived, live, _owned_by(archived, ids), None)
            for live, archived in zip(LIVE, ARCHIVED, strict=True)
        ),
        *delete_archived_statements(ids),
    ]


def delete_statements(task_ids: Sequence[str], *, archived: bool = False) -> list[Delete]:
    """Delete tasks with their shards and tags, children first (the last statement's
    rowcount is the number of tasks deleted)."""
    side = ARCHIVED if archived else LIVE
    return [delete(table).where(_owned_by(table, task_ids)) for table in reversed(side)]


def delete_archived_statements(task_ids: str | Sequence[str]) -> list[Delete]:
    """Delete archived tasks with their shards and tags."""
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    return delete_statements(ids, archived=True)


def _owned_by(table: Table, task_ids: Sequence[str]) -> ColumnElement[bool]:
    key = table.c.uniqc_task_id if "uniqc_task_id" in table.c else table.c.task_id
    return key.in_(task_ids) if len(task_ids) != 1 else key == task_ids[0]


def _copy(source: Table, target: Table, where: ColumnElement[bool], archived_at: str | None) -> Any:
    names = [c.name for c in target.columns if c.name != "archived_at"]
    columns: list[Any] = [source.c[name] for name in names]
    if archived_at is not None and "archived_at" in target.c:
        names.append("archived_at")
        columns.append(literal(archived_at, target.c.archived_at.type))
    return insert(target).from_select(names, select(*columns).where(where))


# -- reads -------------------------------------------------------------------------------


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
