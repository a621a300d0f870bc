"""Reading tasks: lists, keyset pages, streams, summaries and counts.

Every statement here selects through :func:`~uniqc_taskstore.filters.filter_clauses`
and orders through a :class:`~uniqc_taskstore.filters.Sort`, on the live or the
archived tables alike. A list page or summary page is one statement, its tasks joined
to their tags, mapped in one pass (:mod:`~uniqc_taskstore.pages`); a stream reads tags
for each batch in one extra query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    true,
    union_all,
)

from . import counters
from . import statements as sql
from .engine import Database
from .errors import CorruptRowError, InvalidInputError
from .filters import (
    LIVE,
    STORED_TIME,
    Sort,
    TaskFilter,
    TaskTables,
    backend_branches,
    decode_cursor,
    encode_cursor,
    filter_clauses,
    filter_fingerprint,
    task_source,
)
from .model import (
    TaskInfo,
    TaskPage,
    TaskShard,
    TaskSummary,
    Unreadable,
    validate_callback,
    validate_count,
    validate_cursor,
    validate_flag,
    validate_page,
)
from .pages import TAG_KEY, TAG_VALUE, PageRows
from .schema import task_shards
from .tags import tags_of
from .timestamps import is_canonical_timestamp, is_readable_timestamp

CountField = Literal["status", "backend", "platform"]
COUNT_FIELDS: tuple[str, ...] = ("status", "backend", "platform")
Position = tuple[str, str]
"""``(sort value as stored, task_id)`` of the last row already seen."""


def select_tasks(
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    limit: int | None = None,
    offset: int | None = None,
    include_results: bool = True,
    position: Position | None = None,
) -> Select[Any]:
    """The filter's tasks in ``sort`` order, optionally only those after ``position``.

    A page of a device label (``ibm:dev1``, which also matches ``ibm:dev1:*``) is the
    ``UNION ALL`` of one ordered, limited read per alternative (the label, its
    sub-labels), merged: each is a range of ``(backend, submit_time, task_id)`` in
    sort order, where the ``OR`` of both would sort all the device's tasks."""
    branch_limit = None if limit is None else limit + (offset or 0)
    return _select_tasks(side, f, sort, limit, offset, include_results, position, branch_limit)


def _select_tasks(
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    limit: Any,
    offset: Any,
    include_results: bool,
    position: tuple[Any, Any] | None,
    branch_limit: Any,
) -> Select[Any]:
    """:func:`select_tasks` with the limit, offset, position and each device branch's
    limit given as values or as bound parameters (:func:`_page_statement`)."""
    table = side.tasks
    columns = [c for c in table.columns if include_results or c.name != "result_json"]
    if limit is None or f.backend is None or ":" not in f.backend:
        stmt = _ordered(side, f, sort, columns, position)
    else:
        rest = replace(f, backend=None)
        parts = [
            _ordered(side, rest, sort, columns, position, branch).limit(branch_limit).subquery()
            for branch in backend_branches(table, f.backend)
        ]
        merged = union_all(*(select(part) for part in parts)).subquery("uniqc_device")
        stmt = select(merged).order_by(*sort.order_clauses(merged))
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset is not None and not (isinstance(offset, int) and offset == 0):
        stmt = stmt.offset(offset)
        if limit is None:
            stmt = stmt.limit(2**62)  # MySQL has no OFFSET without LIMIT
    return stmt


def _ordered(
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    columns: Sequence[Any],
    position: tuple[Any, Any] | None,
    *extra: ColumnElement[bool],
) -> Select[Any]:
    source = task_source(f, sort, side)
    stmt = (
        select(*columns)
        .select_from(source.from_)
        .where(*source.where, *extra)
        .order_by(*sort.order_clauses(source.order))
    )
    if position is not None:
        stmt = stmt.where(sort.after(source.order, *position))
    return stmt


def read_tasks(
    conn: Connection,
    side: TaskTables,
    stmt: Select[Any],
    on_corrupt: Callable[[CorruptRowError], object] | None = None,
) -> list[TaskInfo]:
    """Run a task SELECT and attach each task's tags (one query per 500 tasks). A row
    that cannot be read raises :class:`CorruptRowError`, or, with ``on_corrupt``, is
    skipped and handed to it."""
    return tasks_of_rows(conn, side, conn.execute(stmt).mappings().all(), on_corrupt)


def tasks_of_rows(
    conn: Connection,
    side: TaskTables,
    rows: Sequence[RowMapping],
    on_corrupt: Callable[[CorruptRowError], object] | None,
) -> list[TaskInfo]:
    """The tasks of rows read from ``side``'s task table, with their tags."""
    found = []
    for row in rows:
        try:
            found.append(sql.task_from_row(row))
        except CorruptRowError as exc:
            sql.log_corrupt_row(exc, skipped=on_corrupt is not None)
            if on_corrupt is None:
                raise
            on_corrupt(exc)
    tags = tags_of(conn, side.tags, [t.task_id for t in found])
    for task in found:
        task.tags = tags.get(task.task_id, {})
    return found


def get_task(conn: Connection, side: TaskTables, task_id: str) -> TaskInfo | None:
    """One task by id, with its tags, or None, inside a caller's transaction."""
    return task_from_rows(conn.execute(_task_by_id(side), {"task_id": task_id}).mappings())


def fetch_task(db: Database, side: TaskTables, task_id: str) -> TaskInfo | None:
    """One task by id, with its tags, or None: one statement (the task joined to its
    tags), so it needs no transaction of its own (:meth:`Database.select`)."""
    return task_from_rows(db.select(_task_by_id(side), {"task_id": task_id}))


def task_from_rows(rows: Iterable[Mapping[Any, Any]]) -> TaskInfo | None:
    """The task of :func:`_task_by_id`'s rows (one per tag, at least one)."""
    task: TaskInfo | None = None
    tags: dict[str, str] = {}
    for row in rows:
        if task is None:
            task = sql.task_from_row(row)
        if row["uniqc_tag_key"] is not None:
            tags[row["uniqc_tag_key"]] = row["uniqc_tag_value"]
    if task is not None:
        task.tags = tags
    return task


def get_shards(db: Database, table: Table, uniqc_task_id: str) -> list[TaskShard]:
    """A task's shards (live or archived ``table``) in index order."""
    rows = db.select(_shards_by_task(table), {"task_id": uniqc_task_id})
    return [sql.shard_from_row(row) for row in rows]


def shard_by_platform_id(
    db: Database, platform_task_id: str, backend: str | None
) -> TaskShard | None:
    """The newest submitted live shard of a platform job id (ties: the greater task id
    and index), optionally only on ``backend`` (a device, or a platform's devices)."""
    params = {"platform_task_id": platform_task_id}
    if backend is not None:
        params |= {"backend": backend, "lo": backend + ":", "hi": backend + ";"}
    rows = db.select(_shard_by_platform_id(backend is not None), params)
    return sql.shard_from_row(rows[0]) if rows else None


# Point reads are built once and executed with parameters: no statement object, and no
# cache key walk over a new one, per call.


@cache
def _task_by_id(side: TaskTables) -> Select[Any]:
    t, tags = side.tasks, side.tags
    return (
        select(t, tags.c["key"].label("uniqc_tag_key"), tags.c["value"].label("uniqc_tag_value"))
        .select_from(t.outerjoin(tags, tags.c.task_id == t.c.task_id))
        .where(t.c.task_id == bindparam("task_id"))
        .order_by(tags.c["key"])
    )


@cache
def _shards_by_task(table: Table) -> Select[Any]:
    return (
        select(table)
        .where(table.c.uniqc_task_id == bindparam("task_id"))
        .order_by(table.c.shard_index)
    )


@cache
def _shard_by_platform_id(with_backend: bool) -> Select[Any]:
    # Served by (platform_task_id, submit_time, uniqc_task_id, shard_index): the
    # newest match is the first entry of the range, whatever the number of matches.
    s = task_shards
    stmt = select(s).where(s.c.platform_task_id == bindparam("platform_task_id"))
    if with_backend:
        # filters.backend_matches's rule on the shard's backend (shards have no
        # platform column), with parameters for its bounds.
        stmt = stmt.where(
            or_(
                s.c.backend == bindparam("backend"),
                and_(s.c.backend >= bindparam("lo"), s.c.backend < bindparam("hi")),
            )
        )
    return stmt.order_by(
        s.c.submit_time.desc(), s.c.uniqc_task_id.desc(), s.c.shard_index.desc()
    ).limit(1)


_NO_FILTER = TaskFilter()


def count(conn: Connection, side: TaskTables, f: TaskFilter) -> int:
    """Number of the filter's tasks: live tasks with no filter but statuses from the
    status counters (:mod:`~uniqc_taskstore.counters`), the rest by their index."""
    if side is LIVE and replace(f, status=None) == _NO_FILTER:
        if f.statuses is None:
            return counters.total(conn)
        return counters.of_statuses(conn, [s.value for s in f.statuses])
    stmt = select(func.count()).select_from(side.tasks).where(*filter_clauses(f, side))
    return int(conn.execute(stmt).scalar_one())


def page(
    db: Database,
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    limit: int,
    cursor: str | None,
    after: Position | None,
    include_results: bool,
    on_corrupt: Callable[[CorruptRowError], object] | None = None,
) -> TaskPage:
    """One keyset page and the cursor of the next (None after the last page). A
    negative ``limit`` means every remaining task, as :meth:`TaskStore.list` reads it."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit == 0:
        raise InvalidInputError("limit", limit, "must be a positive integer (or negative: all)")
    validate_page(max(limit, 0))
    validate_flag(include_results, "include_results")
    position: Position | None = None
    fingerprint = filter_fingerprint(f, side.tasks.name)
    if cursor is not None and after is not None:
        raise InvalidInputError("after", after, "give cursor= or after=, not both")
    if cursor is not None:
        position = decode_cursor(cursor, sort, fingerprint)
    elif after is not None:
        if sort != Sort():
            raise InvalidInputError("after", after, "only for the default sort; use cursor=")
        position = validate_cursor(after)
        if position and db.backend.name != "sqlite" and not is_readable_timestamp(position[0]):
            raise InvalidInputError("after", after, "must start with an ISO-8601 submit time")
    reader, rows = _run_page(
        db,
        side,
        f,
        sort,
        limit=limit + 1 if limit > 0 else None,
        offset=None,
        include_results=include_results,
        position=position,
    )
    groups = reader.groups(rows)
    more = 0 < limit < len(groups)
    groups = groups[:limit] if limit > 0 else groups
    found, columns = reader.tasks(groups, on_corrupt)
    if columns is None:
        return TaskPage(found, None, None, cursor)
    # The position is the last row's sort value as stored, which the next page compares
    # with the stored values: a legacy row whose time was repaired on reading is neither
    # read twice nor skipped. A row skipped by on_corrupt still ends the page where it
    # stands; one whose value cannot be read at all (a BLOB), at the row before it.
    last = reader.last_position(groups, sort.order_by)
    if last is None:
        raise CorruptRowError(
            side.tasks.name, columns["task_id"], sort.order_by, "unreadable sort key"
        )
    value, task_id = last
    resume = encode_cursor(sort, fingerprint, value, task_id)
    if not more:
        return TaskPage(found, None, None, resume)
    next_after = (value, task_id) if sort == Sort() else None
    return TaskPage(found, next_after, resume, resume)


def iter_tasks(
    db: Database,
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    include_shards: bool,
    include_results: bool,
    batch_size: int,
    on_corrupt: Callable[[CorruptRowError], object] | None = None,
    conn: Connection | None = None,
) -> Iterator[TaskInfo | tuple[TaskInfo, list[TaskShard]]]:
    """Every matching task in ``sort`` order, ``batch_size`` (1 to 2**31 - 1) at a time,
    each batch read in its own short snapshot (:meth:`Database.read`), or all of them on
    ``conn``, a snapshot held by the caller (:meth:`Database.snapshot`); with
    ``include_shards``, ``(task, shards)`` pairs. A row that cannot be read raises
    :class:`CorruptRowError`, or, with ``on_corrupt``, is skipped and handed to it. The
    arguments are checked now, not
    when the first task is read."""
    validate_count(batch_size, "batch_size", 1)
    validate_flag(include_shards, "include_shards")
    validate_flag(include_results, "include_results")
    validate_callback(on_corrupt, "on_corrupt")
    read: Callable[[Callable[[Connection], Any]], Any] = (
        db.read if conn is None else (lambda work: work(conn))
    )
    return _iter_tasks(read, side, f, sort, include_shards, include_results, batch_size, on_corrupt)


def _iter_tasks(
    read: Callable[[Callable[[Connection], Any]], Any],
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    include_shards: bool,
    include_results: bool,
    batch_size: int,
    on_corrupt: Callable[[CorruptRowError], object] | None,
) -> Iterator[TaskInfo | tuple[TaskInfo, list[TaskShard]]]:
    position: Position | None = None
    while True:
        stmt = select_tasks(
            side,
            f,
            sort,
            limit=batch_size,
            include_results=include_results,
            position=position,
        )

        def batch(
            conn: Connection, stmt: Select[Any] = stmt
        ) -> tuple[list[TaskInfo], Any, int, list[tuple[Any, str]]]:
            rows = conn.execute(stmt).mappings().all()
            found = tasks_of_rows(conn, side, rows, on_corrupt)
            shards = shards_of(conn, side, [t.task_id for t in found]) if include_shards else {}
            return found, shards, len(rows), [sort.key(row) for row in rows]

        found, shards, seen, keys = read(batch)
        for task in found:
            yield (task, shards.get(task.task_id, [])) if include_shards else task
        if seen < batch_size:
            return
        # As stored, not as read (see page()); a row skipped by on_corrupt still moves
        # the keyset on past it, one whose sort key cannot be read at all does not.
        position = _last_position(side, sort, keys)


def _last_position(side: TaskTables, sort: Sort, keys: Sequence[tuple[Any, str]]) -> Position:
    """The stored position of the last of ``keys`` whose sort value can be read."""
    last = next(((v, i) for v, i in reversed(keys) if isinstance(v, str)), None)
    if last is None:
        raise CorruptRowError(side.tasks.name, keys[-1][1], sort.order_by, "unreadable sort key")
    return last


def shards_of(
    conn: Connection, side: TaskTables, task_ids: Sequence[str]
) -> dict[str, list[TaskShard]]:
    """The shards of these tasks in index order, by task id."""
    found: dict[str, list[TaskShard]] = {}
    table = side.shards
    for batch in sql.in_batches(task_ids):
        rows = conn.execute(
            select(table)
            .where(table.c.uniqc_task_id.in_(batch))
            .order_by(table.c.uniqc_task_id, table.c.shard_index)
        ).mappings()
        for row in rows:
            found.setdefault(row["uniqc_task_id"], []).append(sql.shard_from_row(row))
    return found


def list_tasks(
    db: Database,
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    limit: int | None,
    offset: int | None,
    include_results: bool,
    on_corrupt: Callable[[CorruptRowError], object] | None,
) -> list[TaskInfo]:
    """The filter's tasks in ``sort`` order with their tags, in one statement
    (:mod:`~uniqc_taskstore.pages`). A row that cannot be read raises
    :class:`CorruptRowError`, or, with ``on_corrupt``, is skipped and handed to it."""
    reader, rows = _run_page(
        db,
        side,
        f,
        sort,
        limit=limit,
        offset=offset,
        include_results=include_results,
        position=None,
    )
    return reader.tasks(reader.groups(rows), on_corrupt)[0]


def summaries(
    db: Database,
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    limit: int | None,
    offset: int | None,
) -> list[TaskSummary]:
    """The filter's tasks as summaries, with their tags, in one statement: no result
    or metadata document is read."""
    reader, rows = _run_page(
        db, side, f, sort, limit=limit, offset=offset, include_results=False, summary=True
    )
    found, checked = reader.summaries(reader.groups(rows))
    odd = [s.task_id for s in checked if not all(map(is_canonical_timestamp, _times_of(s)))]
    if not odd:
        return found
    # Legacy times (9.2): repaired by readable_row's rule, as get() reads them, with the
    # replacement recorded in the metadata of such rows (read for them only).
    metadata = db.read(lambda conn: _metadata_of(conn, side, odd))
    return [_repaired(side, s, metadata) if s.task_id in metadata else s for s in found]


def _times_of(summary: TaskSummary) -> tuple[str | None, ...]:
    return (summary.submit_time, summary.update_time, summary.archived_at)


def _metadata_of(conn: Connection, side: TaskTables, task_ids: Sequence[str]) -> dict[str, Any]:
    t = side.tasks
    found: dict[str, Any] = {}
    for batch in sql.in_batches(task_ids):
        rows = conn.execute(select(t.c.task_id, t.c.metadata_json).where(t.c.task_id.in_(batch)))
        for task_id, metadata in rows:
            found[task_id] = None if isinstance(metadata, Unreadable) else metadata
    return found


def _repaired(side: TaskTables, summary: TaskSummary, metadata: dict[str, Any]) -> TaskSummary:
    names = ("submit_time", "update_time", "archived_at")
    times = dict(zip(names, _times_of(summary), strict=True))
    if side.tasks.name == "tasks":
        del times["archived_at"]
    fixed = sql.readable_row(
        side.tasks.name,
        {"task_id": summary.task_id, **times, "metadata_json": metadata[summary.task_id]},
    )
    return replace(summary, **{name: fixed[name] for name in times})


# 64-bit: an offset without a limit reads "the rest" as LIMIT 2**62 (MAX_ROWS).
_LIMIT = bindparam("uniqc_limit", type_=BigInteger())
_OFFSET = bindparam("uniqc_offset", type_=BigInteger())
_BRANCH_LIMIT = bindparam("uniqc_branch_limit", type_=BigInteger())


def _run_page(
    db: Database,
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    *,
    limit: int | None,
    offset: int | None,
    include_results: bool,
    position: Position | None = None,
    summary: bool = False,
) -> tuple[PageRows, list[Sequence[Any]]]:
    """The rows of one page statement as the driver returns them, and their reader.

    The statement is built and compiled once per filter, sort and shape (its values
    as constants); the limit, offset and position are its parameters."""
    has_offset = bool(offset)
    key = (
        "page",
        side.tasks.name,
        _filter_key(f),
        sort,
        include_results,
        summary,
        limit is not None,
        has_offset,
        position is not None,
    )
    prepared = db.prepared_as(
        key,
        lambda: _page_statement(
            side,
            f,
            sort,
            include_results,
            summary,
            limit is not None,
            has_offset,
            position,
            db.backend.lateral_tags,
        ),
    )
    reader = prepared.reader
    if reader is None:
        reader = prepared.reader = PageRows(prepared.keys, prepared.types, prepared.results)
    params: dict[str, Any] = {}
    if limit is not None:
        params["uniqc_limit"] = limit
        params["uniqc_branch_limit"] = limit + (offset or 0)
    if has_offset:
        params["uniqc_offset"] = offset
        if limit is None:
            params["uniqc_limit"] = 2**62  # MySQL has no OFFSET without LIMIT
    if position is not None:
        params["uniqc_after_value"], params["uniqc_after_id"] = position
    return reader, db.select_raw(prepared, params)


def _filter_key(f: TaskFilter) -> tuple[Any, ...]:
    """The filter's fields as a hashable value (tags in their order)."""
    tags = None if f.tags is None else tuple(f.tag_pairs.items())
    return (
        f.statuses,
        f.backend,
        f.submitted_after,
        f.submitted_before,
        f.updated_after,
        f.updated_before,
        tags,
        f.name,
        f.search,
    )


def _page_statement(
    side: TaskTables,
    f: TaskFilter,
    sort: Sort,
    include_results: bool,
    summary: bool,
    has_limit: bool,
    has_offset: bool,
    position: Position | None,
    lateral: bool,
) -> Select[Any]:
    """The page's tasks (limited, as a subquery) joined to their tags, in page order
    and tag key order within a task; ``lateral``: each task's tags as a ``LATERAL``
    subquery (:attr:`Backend.lateral_tags`)."""
    t = side.tasks
    limit = _LIMIT if has_limit or has_offset else None
    offset = _OFFSET if has_offset else None
    after = None
    if position is not None:
        after = (
            bindparam("uniqc_after_value", type_=STORED_TIME),
            bindparam("uniqc_after_id", type_=t.c.task_id.type),
        )
    if summary:
        inner = _summary_select(side, f, sort, limit, offset)
    else:
        inner = _select_tasks(side, f, sort, limit, offset, include_results, after, _BRANCH_LIMIT)
    page = inner.subquery("uniqc_page")
    tags = side.tags
    if lateral:
        found = (
            select(tags.c["key"].label(TAG_KEY), tags.c["value"].label(TAG_VALUE))
            .where(tags.c.task_id == page.c.task_id)
            .offset(0)  # kept a subquery: pulled up, it would be a join again
            .lateral("uniqc_tags")
        )
        key, value = found.c[TAG_KEY], found.c[TAG_VALUE]
        joined = page.outerjoin(found, true())
    else:
        key, value = tags.c["key"].label(TAG_KEY), tags.c["value"].label(TAG_VALUE)
        joined = page.outerjoin(tags, tags.c.task_id == page.c.task_id)
    return select(page, key, value).select_from(joined).order_by(*sort.order_clauses(page), key)


def _summary_select(
    side: TaskTables, f: TaskFilter, sort: Sort, limit: Any, offset: Any
) -> Select[Any]:
    """The columns of :class:`TaskSummary` of the filter's tasks, in ``sort`` order."""
    t, shards = side.tasks, side.shards
    shard_count = (
        select(func.count())
        .where(shards.c.uniqc_task_id == t.c.task_id)
        .correlate(t)
        .scalar_subquery()
    )
    names = (
        "task_id",
        "name",
        "backend",
        "status",
        "shots",
        "submit_time",
        "update_time",
        "error_message",
    )
    extra = [t.c.archived_at] if "archived_at" in t.c else []
    source = task_source(f, sort, side)
    stmt = (
        select(
            *(t.c[n] for n in names),
            *extra,
            t.c.result_json.is_not(None).label("has_result"),
            shard_count.label("shard_count"),
        )
        .select_from(source.from_)
        .where(*source.where)
        .order_by(*sort.order_clauses(source.order))
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset is not None:
        stmt = stmt.offset(offset)
    return stmt


def count_by(conn: Connection, side: TaskTables, field: str, f: TaskFilter) -> dict[str, int]:
    """Tasks per status, backend or platform (the part of the backend before ``:``), in
    one GROUP BY; keys with no task are absent."""
    if field not in COUNT_FIELDS:
        raise InvalidInputError("field", field, f"must be one of {', '.join(COUNT_FIELDS)}")
    if field == "status" and side is LIVE and f == _NO_FILTER:
        return dict(sorted(counters.by_status(conn).items()))
    t = side.tasks
    column = {"status": t.c.status, "backend": t.c.backend, "platform": t.c.platform}[field]
    stmt = (
        select(column, func.count())
        .where(*filter_clauses(f, side))
        .group_by(column)
        .order_by(column)
    )
    counts: dict[str, int] = {}
    for key, n in conn.execute(stmt):
        counts[key] = int(n)
    return counts
