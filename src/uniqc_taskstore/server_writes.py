"""The hot writes on a server in two round trips: ``update_shard``, ``save`` of one
task (with its shards), ``save_shards`` of one task's shards and ``archive``.

Each runs the statements the generic path runs, in the same order and under the same
locks, but sends them in two batches (:class:`~uniqc_taskstore.backends.base.DriverBatch`:
a psycopg pipeline, or one PyMySQL query of several statements), waiting for the
server only where the next statements depend on an answer:

1. ``BEGIN`` and the statement that locks the task's row (``SELECT ... FOR UPDATE``,
   or the task's upsert), with what has to be known before writing;
2. every write, the status settled in SQL (:func:`settled_status`), the state read
   back, and ``COMMIT``.

Why the lock gets a batch of its own, although the server would run the statements in
order anyway: what follows depends on it (no task: nothing is written), and a
statement that runs while the task's row is not ours would settle its status from a
view taken before another writer's commit. Within the second batch every statement
starts after the lock was granted, so under READ COMMITTED each sees every shard
committed before it, as on the generic path.

The store calls these where :meth:`Backend.batched_writes` is true (PostgreSQL with
psycopg, MariaDB/MySQL with PyMySQL); every other write, and SQLite, take the generic
path. Statements are built once from the schema's tables and compiled once per
dialect; parameters and result rows go through the column types as SQLAlchemy would
convert them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache, partial
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)

from . import change_log
from . import statements as sql
from .backends.base import DriverBatch, Outcome, Step
from .backends.changefeed import feed_key
from .engine import Database
from .errors import ShardNotFoundError, TaskNotFoundError
from .filters import ARCHIVED, LIVE
from .model import (
    ShardUpdate,
    TaskInfo,
    TaskShard,
    TaskStatus,
    coerce_status,
    task_status_after_write,
)
from .retries import retrying_unknown_outcome
from .schema import task_shards, tasks
from .shard_writes import refuse_overlap, shards_by_task
from .status_refresh import settled_status
from .tags import insert_live_tags
from .timestamps import utc_now
from .twins import archived_twin


def update_shard(
    db: Database,
    uniqc_task_id: str,
    shard_index: int,
    new_status: TaskStatus,
    result: Any,
    error_message: str | None,
) -> ShardUpdate:
    """:meth:`TaskStore.update_shard` (arguments checked, ``result`` prepared)."""
    key = {"key_task": uniqc_task_id, "key_index": shard_index}
    report = sql.update_shard_report(
        result=result is not None,
        error=error_message is not None,
        guarded=not new_status.is_terminal,  # a stale poll leaves a final status
    )
    run = _Runner(db)

    def work(batch: DriverBatch) -> ShardUpdate:
        (parent,) = batch.send([run(sql.lock_task_status(), {"task_id": uniqc_task_id})])
        if not parent.rows:
            # Nothing was written: a COMMIT ends it like a ROLLBACK would, and keeps
            # psycopg's prepared statements (after a ROLLBACK it deallocates them all).
            batch.send([], commit=True)
            raise ShardNotFoundError(f"no shard {shard_index} of task {uniqc_task_id!r}")
        now = utc_now()  # after the lock, afresh on each attempt
        values = key | {"new_status": new_status.value, "now": now}
        if result is not None:
            values["new_result"] = result
        if error_message is not None:
            values["new_error"] = error_message
        reported = key | {"new_status": new_status.value}
        written, *_, after = batch.send(
            [
                run(report, values),
                *_settled(run, _settle_reported, values, "updated", [uniqc_task_id], reported),
                run(_after_report(), key),
            ],
            commit=True,
        )
        task_status, shard_status = after.rows[0]
        if shard_status is None:
            raise ShardNotFoundError(f"no shard {shard_index} of task {uniqc_task_id!r}")
        if written.rowcount != 1:
            return ShardUpdate(False, coerce_status(shard_status), coerce_status(task_status))
        return ShardUpdate(True, new_status, coerce_status(task_status))

    return db.batch_write(work, idempotent=True)


def save(
    db: Database,
    task: TaskInfo,
    task_row: dict[str, Any],
    shards: Sequence[TaskShard],
    shard_rows: Sequence[dict[str, Any]],
) -> tuple[TaskStatus, str]:
    """:meth:`TaskStore.save` of one task (checked, as rows); return its status and the
    time it was stamped with."""
    task_id = task.task_id
    by_task = shards_by_task(shards)  # duplicate indexes, overlaps among themselves
    run = _Runner(db)
    upsert = sql.upsert_tasks(db.backend)

    def work(batch: DriverBatch) -> tuple[TaskStatus, str]:
        # Afresh on each attempt; the upsert keeps the later of this and the stored time.
        now = _stamp(task_row, shard_rows)
        # The upsert locks the row: everything read after it is current.
        first = [run(upsert, [task_row]), run(sql.task_write_state(), {"task_ids": [task_id]})]
        if shards:
            first.append(_near(run, task_id, shards))
        _, state, *near = batch.send(first)
        # task_id, status, one probe per shard status, has_tags, has_shards
        _, stored_status, *probes, has_tags, has_shards = state.rows[0]
        current = coerce_status(stored_status)
        present = {status for status, found in zip(TaskStatus, probes, strict=True) if found}
        new_job = bool(shards) and _new_job(task_id, shards, by_task, has_shards, near[0])
        second = []
        if has_tags:
            second.append(run(_delete_tags(), {"task_id": task_id}))
        if task.tags:
            rows = [{"task_id": task_id, "key": k, "value": v} for k, v in task.tags.items()]
            second.append(run(insert_live_tags(), rows))
        if shards:
            second.append(run(sql.upsert_shards(db.backend), list(shard_rows)))
        if shards and has_shards:
            # Stored shards and new ones: the statuses are known only after the upsert.
            key = {"task_id": task_id, "now": now}
            second += [
                *_settled(run, partial(_settle, new_job), key, "saved", [task_id]),
                run(_status(), key),
            ]
            return coerce_status(batch.send(second, commit=True)[-1].rows[0][0]), now
        # Its shards are the stored ones or exactly the new ones: known already (the
        # row's update_time is this save's, from the upsert).
        incoming = {shard.status for shard in shards}
        settled = task_status_after_write(current, present | incoming, new_job=new_job)
        if settled != current:
            key = {"task_id": task_id, "new_status": settled.value, "now": now}
            second += _settled(run, _set_status, key, "saved", [task_id])
        else:
            second += _changes(run, "saved", [task_id], now)
        batch.send(second, commit=True)
        return settled, now

    return db.batch_write(work, idempotent=True)


def save_shards(
    db: Database,
    task_id: str,
    shards: Sequence[TaskShard],
    rows: Sequence[dict[str, Any]],
) -> str:
    """:meth:`TaskStore.save_shards` of shards of one task (checked, as ``rows``); the
    time they were stamped with."""
    run = _Runner(db)

    def work(batch: DriverBatch) -> str:
        lock = run(sql.lock_parents(), {"task_ids": [task_id]})
        parent, near = batch.send([lock, _near(run, task_id, shards)])
        if not parent.rows:
            batch.send([], commit=True)  # nothing written (see update_shard)
            raise TaskNotFoundError(
                f"no task {task_id!r} for its shard; save the task first "
                "(or together: save(task, shards=[...]))"
            )
        by_task = shards_by_task(shards)  # after the parent is found, as on the generic path
        new_job = _new_job(task_id, shards, by_task, bool(parent.rows[0][1]), near)
        now = _stamp(None, rows)  # after the lock, afresh on each attempt
        settle = {"task_id": task_id, "now": now}
        batch.send(
            [
                run(sql.upsert_shards(db.backend), list(rows)),
                *_settled(run, partial(_settle, new_job), settle, "updated", [task_id]),
            ],
            commit=True,
        )
        return now

    return db.batch_write(work, idempotent=True)


def _new_job(
    task_id: str,
    shards: Sequence[TaskShard],
    by_task: Mapping[str, Sequence[TaskShard]],
    has_shards: bool,
    near: Outcome,
) -> bool:
    """Whether writing ``shards`` gives the task a new platform job (a first shard, a
    new index or a resubmission); raises :class:`ShardLayoutError` if one shares a
    circuit with a stored shard it does not replace (``near``: the rows of
    :func:`_near`)."""
    if not has_shards:
        return True
    stored = [_Stored(*row) for row in near.rows]
    kept = [row for row in stored if row.shard_index not in _indexes(shards)]
    refuse_overlap(task_id, by_task[task_id], kept)
    jobs = {row.shard_index: row.platform_task_id for row in stored}
    return any(jobs.get(shard.shard_index) != shard.platform_task_id for shard in shards)


def archive(db: Database, task_id: str) -> bool:
    """:meth:`TaskStore.archive`: True if the task was live and is now archived."""
    run = _Runner(db)

    def work(batch: DriverBatch) -> bool:
        repeat = retrying_unknown_outcome()
        found, twin = batch.send(
            [run(_lock_task(), {"task_id": task_id}), run(_archived_task(), {"task_id": task_id})]
        )
        if not found.rows or twin.rows:
            batch.send([], commit=True)  # nothing written (see update_shard)
            if not found.rows:
                # Repeating an archive that may have been applied: archived is done.
                return bool(repeat and twin.rows)
            raise archived_twin(task_id)
        now = utc_now()
        params = {"task_id": task_id, "archived_at": now}
        batch.send(
            [
                *(run(stmt, params) for stmt in _archive_one()),
                *_changes(run, "archived", [task_id], now),
            ],
            commit=True,
        )
        return True

    return db.batch_write(work, idempotent=True)


def _stamp(task_row: dict[str, Any] | None, shard_rows: Sequence[dict[str, Any]]) -> str:
    now = utc_now()
    if task_row is not None:
        task_row["update_time"] = now
    for row in shard_rows:
        row["update_time"] = now
    return now


def _changes(
    run: _Runner,
    kind: change_log.Kind,
    ids: Sequence[str],
    now: str,
    reported: Mapping[str, Any] | None = None,
) -> list[Step]:
    """The change-log steps of this write (:mod:`uniqc_taskstore.change_log`), last
    before its ``COMMIT``: MariaDB's commit tick is then held for the commit alone."""
    *before, last = change_log.statements(run.dialect, kind, reported=reported is not None)
    values = change_log.params(kind, ids, now)
    if reported is not None:
        values = values | dict(reported)
    return [*(run(stmt, {}) for stmt in before), replace(run(last, values), records_changes=True)]


def _settled(
    run: _Runner,
    settle: Callable[..., Any],
    values: Mapping[str, Any],
    kind: change_log.Kind,
    ids: Sequence[str],
    reported: Mapping[str, Any] | None = None,
) -> list[Step]:
    """``settle()`` (an update of the task table, stamped ``values["now"]``) and the
    change it makes: one statement where the database folds the change-log row into
    it (:func:`change_log.folded` of ``settle(returning=True)``: on PostgreSQL), else
    ``settle()`` and :func:`_changes`. ``reported``: as for :func:`_changes`; the
    folded statement needs no such guard, as it records exactly the tasks ``settle``
    updated."""
    now = values["now"]
    both = change_log.folded(run.dialect, kind, settle(returning=True))
    if both is None:
        return [run(settle(), values), *_changes(run, kind, ids, now, reported)]
    return [replace(run(both, dict(values) | {"changed_at": now}), records_changes=True)]


# -- statements: built once, from the schema's tables ----------------------------------


@cache
def _settle_reported(*, returning: bool = False) -> Any:
    """Settle the ``key_task`` task's status (:func:`settled_status`, no new job) and
    stamp it ``now``, if shard ``key_index`` took the report (it holds ``new_status``:
    under the task's lock only this call can have put it there since the lock, and a
    stale report left a final status that differs from the non-final one reported)."""
    took = exists().where(
        task_shards.c.uniqc_task_id == bindparam("key_task"),
        task_shards.c.shard_index == bindparam("key_index"),
        task_shards.c.status == bindparam("new_status"),
    )
    return _returning(
        update(tasks)
        .where(tasks.c.task_id == bindparam("key_task"), took)
        .values(
            status=settled_status(False),
            update_time=sql.later(tasks.c.update_time, sql.now_param()),
        ),
        returning,
    )


@cache
def _after_report() -> Any:
    """The ``key_task`` task's status and its shard ``key_index``'s (None if absent)."""
    shard = select(task_shards.c.status).where(
        task_shards.c.uniqc_task_id == bindparam("key_task"),
        task_shards.c.shard_index == bindparam("key_index"),
    )
    return select(tasks.c.status, shard.scalar_subquery()).where(
        tasks.c.task_id == bindparam("key_task")
    )


@cache
def _settle(new_job: bool, *, returning: bool = False) -> Any:
    """Settle the ``task_id`` task's status (:func:`settled_status`) after its shards
    were written, stamped ``now``."""
    return _returning(
        update(tasks)
        .where(tasks.c.task_id == bindparam("task_id"))
        .values(
            status=settled_status(new_job),
            update_time=sql.later(tasks.c.update_time, sql.now_param()),
        ),
        returning,
    )


@cache
def _status() -> Any:
    return select(tasks.c.status).where(tasks.c.task_id == bindparam("task_id"))


@cache
def _set_status(*, returning: bool = False) -> Any:
    return _returning(
        update(tasks)
        .where(tasks.c.task_id == bindparam("task_id"))
        .values(status=bindparam("new_status")),
        returning,
    )


def _returning(settle: Any, returning: bool) -> Any:
    """``settle``, returning the ``task_id`` and ``status`` it leaves if ``returning``
    (built here, never added to a statement already used: SQLAlchemy copies a used
    statement's cached list of returned columns, empty, into the copy)."""
    return settle.returning(tasks.c.task_id, tasks.c.status) if returning else settle


@cache
def _delete_tags() -> Any:
    return delete(LIVE.tags).where(LIVE.tags.c.task_id == bindparam("task_id"))


def _near(run: _Runner, task_id: str, shards: Sequence[TaskShard]) -> Step:
    """The stored shards the write may collide with: :func:`statements.shards_near`,
    with its values bound (built and compiled once)."""
    indexes = sorted(_indexes(shards))
    start = min(shard.sub_index_offset for shard in shards)
    end = max(shard.sub_index_offset + shard.circuit_count for shard in shards)
    if len(indexes) <= sql.ID_BATCH:
        return run(
            _near_stored(by_range=False),
            {"task_id": task_id, "indexes": indexes, "start": start, "end": end},
        )
    return run(
        _near_stored(by_range=True),
        {"task_id": task_id, "low": indexes[0], "high": indexes[-1], "start": start, "end": end},
    )


@cache
def _near_stored(*, by_range: bool) -> Any:
    """:func:`statements.shards_near` with bound values: the shards of ``task_id`` at
    the ``indexes`` (``by_range``: from ``low`` to ``high``) or covering a circuit in
    [``start``, ``end``). Written without offset + count, which can pass a 32-bit
    integer on PostgreSQL; ``end`` may pass it, and is then compared as a bigint."""
    index = task_shards.c.shard_index
    at_index = (
        index.between(bindparam("low"), bindparam("high"))
        if by_range
        else index.in_(bindparam("indexes", expanding=True))
    )
    covering = and_(
        task_shards.c.circuit_count
        > bindparam("start", type_=BigInteger) - task_shards.c.sub_index_offset,
        task_shards.c.sub_index_offset < bindparam("end", type_=BigInteger),
    )
    return select(
        index,
        task_shards.c.platform_task_id,
        task_shards.c.sub_index_offset,
        task_shards.c.circuit_count,
    ).where(task_shards.c.uniqc_task_id == bindparam("task_id"), or_(at_index, covering))


class _Stored(NamedTuple):
    """A row of :func:`statements.shards_near`."""

    shard_index: int
    platform_task_id: str
    sub_index_offset: int
    circuit_count: int


def _indexes(shards: Sequence[TaskShard]) -> set[int]:
    return {shard.shard_index for shard in shards}


@cache
def _lock_task() -> Any:
    return select(tasks.c.task_id).where(tasks.c.task_id == bindparam("task_id")).with_for_update()


@cache
def _archived_task() -> Any:
    archived = ARCHIVED.tasks
    return select(archived.c.task_id).where(archived.c.task_id == bindparam("task_id"))


@cache
def _archive_one() -> list[Any]:
    """Archive the (locked) ``task_id`` task stamped ``archived_at``, which the archive
    does not hold (:func:`_archived_task`): drop archived shards and tags left under
    its id without an archived task, copy the task, its shards and tags (every column
    the archive table shares with the live one), delete them from the live tables,
    children first."""
    return [
        *(
            delete(table).where(
                _owner(table) == bindparam("task_id"),
                ~exists().where(ARCHIVED.tasks.c.task_id == _owner(table)),
            )
            for table in (ARCHIVED.shards, ARCHIVED.tags)
        ),
        *(_copy(live, archived) for live, archived in zip(LIVE, ARCHIVED, strict=True)),
        *(delete(table).where(_owner(table) == bindparam("task_id")) for table in reversed(LIVE)),
    ]


def _owner(table: Table) -> Any:
    return table.c.uniqc_task_id if "uniqc_task_id" in table.c else table.c.task_id


def _copy(live: Table, archived: Table) -> Any:
    names = [c.name for c in archived.columns if c.name != "archived_at"]
    columns: list[Any] = [live.c[name] for name in names]
    if "archived_at" in archived.c:
        names.append("archived_at")
        columns.append(bindparam("archived_at", type_=archived.c.archived_at.type))
    rows = select(*columns).where(_owner(live) == bindparam("task_id"))
    return insert(archived).from_select(names, rows)


# -- compiled once per dialect, bound per call -------------------------------------------


class _Runner:
    """Turns a statement and its parameters into a :class:`Step`: compiled once per
    database (:meth:`Database.prepared`; the statements above are built once), the
    parameters and returned rows converted by the column types as SQLAlchemy would."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.dialect = feed_key(db.engine.dialect)

    def __call__(self, stmt: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Step:
        if isinstance(params, Mapping):
            prepared = self._db.prepared(stmt, params)
            text, args = prepared.statement(params)
            return Step(text, args, convert=prepared.tuple_converter())
        rows = list(params)
        prepared = self._db.prepared(stmt, rows[0])
        text, many = prepared.statements(rows)
        return Step(text, many, many=True)
