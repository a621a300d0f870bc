"""Statements over the tables, and the mapping between rows and dataclasses.

Built once here from the :mod:`~uniqc_taskstore.schema` tables; the store only
executes them. Nothing here assumes a dialect except through the backend's
upsert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from .backends import Backend
from .backends.base import Incoming
from .errors import CorruptRowError, InvalidInputError
from .filters import ARCHIVED, LIVE
from .jsoncodec import prepare_json
from .model import (
    TERMINAL_STATUSES,
    TaskInfo,
    TaskShard,
    TaskStatus,
    Unreadable,
    coerce_status,
    legacy_task_name,
)
from .schema import task_shards, task_tags, tasks
from .search import shard_search_key, task_search_key
from .timestamps import canonical_timestamp, is_canonical_timestamp, repair_times

log = logging.getLogger(__name__)
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
ID_BATCH = 500
"""Ids per ``IN (...)`` list: well under every driver's bound-parameter limit."""
_KEEP_WHEN_STALE = ("result_json", "error_message")

# -- rows <-> dataclasses ---------------------------------------------------------------


def task_row(task: TaskInfo, stamp: str | None = None) -> dict[str, Any]:
    """The ``tasks`` row of a validated task; ``stamp``: the ``update_time`` to write
    instead of the task's own (which must still be a timestamp)."""
    submit_time = canonical_timestamp(task.submit_time, "submit_time")
    update_time = canonical_timestamp(task.update_time, "update_time")
    name = task.name if task.name is not None else legacy_task_name(task.metadata)
    return {
        "task_id": task.task_id,
        "backend": task.backend,
        "platform": platform_of(task.backend),
        "status": task.status.value,
        "shots": task.shots,
        "submit_time": submit_time,
        "update_time": update_time if stamp is None else stamp,
        "result_json": prepare_json(task.result, "result"),
        "metadata_json": prepare_json(task.metadata, "metadata"),
        "error_message": task.error_message,
        "name": name,
        "search_key": task_search_key(task.task_id, task.backend, name),
    }


def platform_of(backend: str) -> str:
    """The platform of a backend label: up to its first ``:``, or all of it (the
    ``platform`` column; migration v10 fills old rows by the same rule in SQL)."""
    return backend.split(":", 1)[0]


def shard_row(shard: TaskShard, stamp: str | None = None) -> dict[str, Any]:
    """The ``task_shards`` row of a validated shard; ``stamp`` as for :func:`task_row`."""
    submit_time = canonical_timestamp(shard.submit_time, "submit_time")
    update_time = canonical_timestamp(shard.update_time, "update_time")
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
        "submit_time": submit_time,
        "update_time": update_time if stamp is None else stamp,
        "search_key": shard_search_key(shard.platform_task_id),
    }


def task_from_row(row: Mapping[Any, Any]) -> TaskInfo:
    """A task read from ``tasks`` or ``archived_tasks`` (result absent in summaries).

    Raises :class:`CorruptRowError` naming the task and column of a value that cannot
    be read; unreadable legacy timestamp text is repaired (:func:`readable_row`)."""
    task = _sound_task(row)
    return task if task is not None else _checked_task(row)


def _checked_task(row: Mapping[Any, Any]) -> TaskInfo:
    """:func:`task_from_row` for any row: each value checked, legacy times repaired."""
    table = "archived_tasks" if "archived_at" in row else "tasks"
    row = readable_row(table, row)
    key = row["task_id"]
    return TaskInfo(
        task_id=_text(table, key, row, "task_id"),
        backend=_text(table, key, row, "backend"),
        status=_status(table, key, row),
        result=row.get("result_json"),
        shots=_count(table, key, row, "shots"),
        submit_time=row["submit_time"],
        update_time=row["update_time"],
        metadata=_metadata(table, key, row),
        error_message=_text(table, key, row, "error_message", optional=True),
        archived_at=row.get("archived_at"),
        name=row.get("name"),
    )


def shard_from_row(row: Mapping[Any, Any]) -> TaskShard:
    """A shard read from ``task_shards`` or ``archived_task_shards``; raises
    :class:`CorruptRowError` as :func:`task_from_row` does."""
    shard = _sound_shard(row)
    return shard if shard is not None else _checked_shard(row)


def _checked_shard(row: Mapping[Any, Any]) -> TaskShard:
    """:func:`shard_from_row` for any row: each value checked, legacy times repaired."""
    table = "archived_task_shards" if "archived_at" in row else "task_shards"
    row = readable_row(table, row)
    key = (row["uniqc_task_id"], row["shard_index"])
    return TaskShard(
        uniqc_task_id=_text(table, key, row, "uniqc_task_id"),
        shard_index=_count(table, key, row, "shard_index"),
        platform_task_id=_text(table, key, row, "platform_task_id"),
        backend=_text(table, key, row, "backend"),
        circuit_count=_count(table, key, row, "circuit_count"),
        sub_index_offset=_count(table, key, row, "sub_index_offset"),
        status=_status(table, key, row),
        result=row["result_json"],
        error_message=_text(table, key, row, "error_message", optional=True),
        submit_time=row["submit_time"],
        update_time=row["update_time"],
    )


# The common case, a row as the store writes it, is recognised by exact types and
# mapped in one pass; anything else (legacy text, a corrupt value, a subclass) takes
# the general path (``_checked_task``, ``_checked_shard``), which gives the same result
# for every row the fast path takes: nothing to repair, nothing unreadable, every check
# passed.

_STATUSES = {status.value: status for status in TaskStatus}
_SHARD_COLUMNS = frozenset(task_shards.c.keys())
_TASK_COLUMNS = frozenset(tasks.c.keys())
_TAGGED_TASK_COLUMNS = _TASK_COLUMNS | {"uniqc_tag_key", "uniqc_tag_value"}
_PAGE_SHAPES = frozenset(
    {
        _TASK_COLUMNS,
        _TASK_COLUMNS - {"result_json"},
        _TASK_COLUMNS | {"archived_at"},
        _TASK_COLUMNS - {"result_json"} | {"archived_at"},
    }
)
"""The columns of a task row in a page: live or archived, with or without its result."""


def _sound_shard(row: Mapping[Any, Any]) -> TaskShard | None:
    """The shard of a live shard row (every column) that needs no checking beyond its
    types, or None."""
    if len(row) != len(_SHARD_COLUMNS) or row.keys() != _SHARD_COLUMNS:
        return None
    task_id = row["uniqc_task_id"]
    index = row["shard_index"]
    platform_id = row["platform_task_id"]
    backend = row["backend"]
    count = row["circuit_count"]
    offset = row["sub_index_offset"]
    status = row["status"]
    result = row["result_json"]
    error = row["error_message"]
    submit_time = row["submit_time"]
    update_time = row["update_time"]
    if not (
        type(task_id) is str
        and type(platform_id) is str
        and type(backend) is str
        and type(index) is int
        and type(count) is int
        and type(offset) is int
        and type(status) is str
        and status in _STATUSES
        and (error is None or type(error) is str)
        and not isinstance(result, Unreadable)
        and is_canonical_timestamp(submit_time)
        and (update_time == submit_time or is_canonical_timestamp(update_time))
    ):
        return None
    return TaskShard(
        task_id,
        index,
        platform_id,
        backend,
        count,
        offset,
        _STATUSES[status],
        result,
        error,
        submit_time,
        update_time,
    )


def _sound_task(row: Mapping[Any, Any]) -> TaskInfo | None:
    """The task of a task row (live or archived, with or without its result, or a live
    one with the joined tag columns of :func:`~uniqc_taskstore.queries.fetch_task`) that
    needs no checking beyond its types, or None."""
    keys = row.keys()
    if type(row) is not dict:
        return None
    if keys == _TAGGED_TASK_COLUMNS:
        if isinstance(row["uniqc_tag_key"], Unreadable) or isinstance(
            row["uniqc_tag_value"], Unreadable
        ):
            return None
    elif frozenset(keys) not in _PAGE_SHAPES:
        return None
    task_id = row["task_id"]
    backend = row["backend"]
    status = row["status"]
    result = row.get("result_json")
    archived_at = row.get("archived_at")
    shots = row["shots"]
    metadata = row["metadata_json"]
    error = row["error_message"]
    name = row["name"]
    platform = row["platform"]
    submit_time = row["submit_time"]
    update_time = row["update_time"]
    if not (
        type(task_id) is str
        and type(backend) is str
        and type(status) is str
        and status in _STATUSES
        and type(shots) is int
        and (metadata is None or type(metadata) is dict)
        and (error is None or type(error) is str)
        and (name is None or type(name) is str)
        and not isinstance(platform, Unreadable)
        and not isinstance(result, Unreadable)
        and is_canonical_timestamp(submit_time)
        and (update_time == submit_time or is_canonical_timestamp(update_time))
        and (archived_at is None or is_canonical_timestamp(archived_at))
    ):
        return None
    return TaskInfo(
        task_id,
        backend,
        _STATUSES[status],
        result,
        shots,
        submit_time,
        update_time,
        {} if metadata is None else metadata,
        error,
        archived_at,
        name,
    )


def log_corrupt_row(error: CorruptRowError, *, skipped: bool) -> None:
    """A row a reader met and could not read, logged for the operator (WARNING): its
    table, key and column, never the value."""
    log.warning(
        "corrupt row: %s %r, column %s cannot be read%s",
        error.table,
        error.key,
        error.column,
        "; skipped" if skipped else "",
    )


def readable_row(table: str, row: Mapping[Any, Any]) -> dict[str, Any]:
    """``row`` as stored, checked: a value that cannot be read raises
    :class:`CorruptRowError`; timestamp text that is no timestamp is replaced by the
    rule of :func:`~uniqc_taskstore.timestamps.repair_times` (the original kept in
    the task's metadata), and every time is given in the canonical form; an empty
    ``platform`` or ``name`` is derived as a save derives it. Every reader of raw rows
    (the dataclasses, summaries, copies) uses it."""
    key = row.get("task_id", (row.get("uniqc_task_id"), row.get("shard_index")))
    for column, value in row.items():
        if isinstance(value, Unreadable):
            raise CorruptRowError(table, key, column, value.reason)
    names = [name for name in ("submit_time", "update_time", "archived_at") if name in row]
    times, metadata = repair_times({name: row[name] for name in names}, row.get("metadata_json"))
    # Readable but not canonical (written by the original into an upgraded file: no
    # microseconds, naive, another offset): read in the one form, naive meaning UTC.
    times = {name: None if v is None else canonical_timestamp(v, name) for name, v in times.items()}
    fixed = dict(row) | times
    if "metadata_json" in row:
        fixed["metadata_json"] = metadata
    # Derived columns a writer that predates them left empty (the original's INSERT, in
    # a file upgraded since): filled by the rule our writes follow (v13 does it in SQL).
    if "platform" in row and row["platform"] is None and isinstance(row.get("backend"), str):
        fixed["platform"] = platform_of(row["backend"])
    # A name from metadata only in a row without a search key (one only a writer that
    # predates v11 leaves): in the store's own rows the name is set by save alone.
    legacy = "search_key" in row and row["search_key"] is None
    if legacy and "name" in row and row["name"] is None and "metadata_json" in row:
        fixed["name"] = legacy_task_name(metadata)
    if "search_key" in row and row["search_key"] is None:
        if isinstance(row.get("task_id"), str) and isinstance(row.get("backend"), str):
            fixed["search_key"] = task_search_key(row["task_id"], row["backend"], fixed.get("name"))
        elif isinstance(row.get("platform_task_id"), str):
            fixed["search_key"] = shard_search_key(row["platform_task_id"])
    return fixed


def _text(
    table: str, key: object, row: Mapping[Any, Any], column: str, *, optional: bool = False
) -> Any:
    value = row[column]
    if isinstance(value, str) or (optional and value is None):
        return value
    raise CorruptRowError(table, key, column, f"a {type(value).__name__} where text belongs")


def _count(table: str, key: object, row: Mapping[Any, Any], column: str) -> int:
    value = row[column]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise CorruptRowError(table, key, column, f"{value!r:.60} is not an integer")


def _status(table: str, key: object, row: Mapping[Any, Any]) -> TaskStatus:
    try:
        return coerce_status(row["status"])
    except InvalidInputError:
        raise CorruptRowError(table, key, "status", f"{row['status']!r:.60} is no status") from None


def _metadata(table: str, key: object, row: Mapping[Any, Any]) -> dict[str, Any]:
    value = row["metadata_json"]
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise CorruptRowError(table, key, "metadata_json", f"a {type(value).__name__}, not an object")


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
        plain = ("backend", "platform", "shots", "metadata_json", "name", "search_key")
        return [
            *((name, incoming[name]) for name in plain),
            ("update_time", later(tasks.c.update_time, incoming.update_time)),
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
        plain = ("backend", "circuit_count", "sub_index_offset", "search_key")
        resubmitted = task_shards.c.platform_task_id != incoming.platform_task_id
        return [
            *((name, incoming[name]) for name in plain),
            ("update_time", later(task_shards.c.update_time, incoming.update_time)),
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


def later(stored: ColumnElement[Any], written: ColumnElement[Any]) -> ColumnElement[Any]:
    """The later of a stored ``update_time`` and the one a write brings: a row's time
    never goes backwards, whatever the clock of the process that wrote it, so a later
    commit never carries an earlier stamp than one a reader already saw."""
    return case((stored > written, stored), else_=written)


def now_param(name: str = "now") -> Any:
    """A bound write time, typed as the timestamp columns are."""
    return bindparam(name, type_=tasks.c.update_time.type)


def _keep_if(
    condition: ColumnElement[bool], existing: Table, incoming: Incoming, name: str
) -> ColumnElement[Any]:
    return case((condition, existing.c[name]), else_=incoming[name])


def in_batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``items`` in slices of :data:`ID_BATCH`, for ``IN (...)`` lists."""
    for start in range(0, len(items), ID_BATCH):
        yield items[start : start + ID_BATCH]


# The write path's fixed statements are built once (each call of a builder like
# ``select(...).where(...)`` costs more Python than SQLite spends running it) and take
# their ids as an expanding ``task_ids`` parameter: ``{"task_ids": [...]}``.

_TASK_IDS: Any = bindparam("task_ids", expanding=True)


@cache
def lock_parents() -> Select[Any]:
    """Lock the ``task_ids`` tasks (``FOR UPDATE``), each with whether it has any shard."""
    has_shards = exists().where(task_shards.c.uniqc_task_id == tasks.c.task_id)
    return (
        select(tasks.c.task_id, has_shards.label("has_shards"))
        .where(tasks.c.task_id.in_(_TASK_IDS))
        .with_for_update()
    )


@cache
def shard_statuses_present() -> Select[Any]:
    """Each of the ``task_ids`` tasks' status and, per shard status, whether any of its
    shards has it.

    One ``EXISTS`` probe per status on the index (task, status): the cost is the same
    for a task with 3 shards or 100,000."""
    probes = [
        exists()
        .where(task_shards.c.uniqc_task_id == tasks.c.task_id, task_shards.c.status == s.value)
        .label(s.value)
        for s in TaskStatus
    ]
    return select(tasks.c.task_id, tasks.c.status, *probes).where(tasks.c.task_id.in_(_TASK_IDS))


@cache
def task_write_state() -> Select[Any]:
    """:func:`shard_statuses_present` plus whether each task has any tag and any shard:
    what ``save`` needs to know, read in one statement after its upsert locked the rows."""
    has_tags = exists().where(task_tags.c.task_id == tasks.c.task_id)
    has_shards = exists().where(task_shards.c.uniqc_task_id == tasks.c.task_id)
    return shard_statuses_present().add_columns(
        has_tags.label("has_tags"), has_shards.label("has_shards")
    )


@cache
def set_task_status() -> Any:
    """Set the ``task_ids`` tasks' status to ``new_status``, stamped ``now``."""
    return (
        update(tasks)
        .where(tasks.c.task_id.in_(_TASK_IDS))
        .values(status=bindparam("new_status"), update_time=later(tasks.c.update_time, now_param()))
    )


@cache
def lock_task_status() -> Select[Any]:
    """The ``task_id`` task's status, its row locked (``FOR UPDATE``)."""
    return select(tasks.c.status).where(tasks.c.task_id == bindparam("task_id")).with_for_update()


@cache
def shard_status() -> Select[Any]:
    """The status of shard ``key_index`` of task ``key_task``."""
    return select(task_shards.c.status).where(*_shard_key())


@cache
def update_shard_report(*, result: bool, error: bool, guarded: bool) -> Any:
    """Write a poll's ``new_status`` (and ``new_result`` / ``new_error``) and ``now``
    into shard (``key_task``, ``key_index``); ``guarded``: not over a stored final
    status (a stale report)."""
    values: dict[str, Any] = {
        "status": bindparam("new_status"),
        "update_time": later(task_shards.c.update_time, now_param()),
    }
    if result:
        values["result_json"] = bindparam("new_result", type_=task_shards.c.result_json.type)
    if error:
        values["error_message"] = bindparam("new_error")
    guard = [~_is_terminal(task_shards.c.status)] if guarded else []
    return update(task_shards).where(*_shard_key(), *guard).values(values)


def _shard_key() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (
        task_shards.c.uniqc_task_id == bindparam("key_task"),
        task_shards.c.shard_index == bindparam("key_index"),
    )


@cache
def shards_near(*, many_indexes: bool, bounded: bool) -> Select[Any]:
    """The stored shards of the ``task_ids`` tasks that a write of shards at the same
    indexes over the same circuits may collide with: those at the written ``indexes``
    (``many_indexes``: from ``index_low`` to ``index_high``, for more than
    :data:`ID_BATCH` of them) and those covering any circuit from ``start`` up to
    ``end`` (``bounded``; without it, every circuit from ``start`` on)."""
    index = task_shards.c.shard_index
    if many_indexes:
        at_index = index.between(bindparam("index_low"), bindparam("index_high"))
    else:
        at_index = index.in_(bindparam("indexes", expanding=True))
    # Written without offset + count, which can pass a 32-bit integer on PostgreSQL; an
    # end past the largest count (``bounded`` False) would not bind there either.
    covering = and_(
        task_shards.c.circuit_count
        > bindparam("start", type_=task_shards.c.sub_index_offset.type)
        - task_shards.c.sub_index_offset,
        *([task_shards.c.sub_index_offset < bindparam("end")] if bounded else []),
    )
    return select(
        task_shards.c.uniqc_task_id,
        task_shards.c.shard_index,
        task_shards.c.platform_task_id,
        task_shards.c.sub_index_offset,
        task_shards.c.circuit_count,
    ).where(task_shards.c.uniqc_task_id.in_(_TASK_IDS), or_(at_index, covering))


def archive_statements(task_ids: str | Sequence[str], archived_at: str) -> list[Any]:
    """Copy tasks with their shards and tags into the archive, then remove them from the
    live tables. The callers have made sure none of them is archived already (an
    archived task is never replaced: see :func:`archived_twins`); archived shards and
    tags left under these ids without an archived task (files of older versions) are
    dropped first, so they cannot collide."""
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    return [
        *orphan_archive_statements(ids),
        *(
            _copy(live, archived, _owned_by(live, ids), archived_at)
            for live, archived in zip(LIVE, ARCHIVED, strict=True)
        ),
        *(delete(table).where(_owned_by(table, ids)) for table in reversed(LIVE)),
    ]


def orphan_archive_statements(task_ids: Sequence[str]) -> list[Delete]:
    """Delete archived shards and tags of these ids that have no archived task."""
    archived_task = ARCHIVED.tasks
    return [
        delete(table).where(
            _owned_by(table, task_ids),
            ~exists().where(archived_task.c.task_id == _owner(table)),
        )
        for table in (ARCHIVED.shards, ARCHIVED.tags)
    ]


def archived_twins(task_ids: Sequence[str]) -> Select[Any]:
    """The ids among ``task_ids`` the archive already holds a task for."""
    return select(ARCHIVED.tasks.c.task_id).where(_owned_by(ARCHIVED.tasks, task_ids))


def archive_contents(task_id: str) -> Select[Any]:
    """Which rows archiving this (locked) task has to move: whether it has shards and
    tags, whether the archive already holds a task under its id (``archived_task``:
    then it is refused), and whether it holds any row under it (any of the three
    archive tables)."""
    ids = [task_id]
    probes: list[Any] = [
        *(exists().where(_owned_by(table, ids)).label(f"live_{table.name}") for table in LIVE),
        exists().where(_owned_by(ARCHIVED.tasks, ids)).label("archived_task"),
        or_(*(exists().where(_owned_by(table, ids)) for table in ARCHIVED)).label("archived"),
    ]
    return select(*probes)


def archive_one_statements(task_id: str, archived_at: str, contents: Any) -> list[Any]:
    """:func:`archive_statements` for one task, without the statements that would
    find nothing (``contents``: the row of :func:`archive_contents`)."""
    ids = [task_id]
    moved = [
        (live, archived)
        for live, archived in zip(LIVE, ARCHIVED, strict=True)
        if live is LIVE.tasks or contents[f"live_{live.name}"]
    ]
    return [
        *(orphan_archive_statements(ids) if contents["archived"] else []),
        *(_copy(live, archived, _owned_by(live, ids), archived_at) for live, archived in moved),
        *(delete(live).where(_owned_by(live, ids)) for live, _ in reversed(moved)),
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
    key: ColumnElement[str] = _owner(table)
    return key.in_(task_ids) if len(task_ids) != 1 else key == task_ids[0]


def _owner(table: Table) -> ColumnElement[str]:
    return table.c.uniqc_task_id if "uniqc_task_id" in table.c else table.c.task_id


def _copy(source: Table, target: Table, where: ColumnElement[bool], archived_at: str | None) -> Any:
    names = [c.name for c in target.columns if c.name != "archived_at"]
    columns: list[Any] = [source.c[name] for name in names]
    if archived_at is not None and "archived_at" in target.c:
        names.append("archived_at")
        columns.append(literal(archived_at, target.c.archived_at.type))
    return insert(target).from_select(names, select(*columns).where(where))


# -- reads -------------------------------------------------------------------------------
