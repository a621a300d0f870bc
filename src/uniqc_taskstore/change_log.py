"""The write side of the change feed: the statement every write appends to its own
transaction, one row per task it changed, last before its commit.

Each write records what happened (:data:`KINDS`) to which tasks with one ``INSERT``:
``INSERT ... SELECT`` from the task table the write left them in (so ``status`` is
the one committed), or, for tasks the write deleted, their ids: ``INSERT ... VALUES``,
except on MariaDB, where every insert into ``changes`` must be an ``INSERT ...
SELECT`` (there a ``UNION ALL`` of one-row SELECTs of the ids, one statement per
batch) for its reader's horizon to hold. Where MariaDB's ``innodb_autoinc_lock_mode``
is 2, one more statement runs just before it, the commit tick (see
:mod:`uniqc_taskstore.backends.changefeed`). Statements are built once per feed design,
kind and table, with the ids as an expanding ``change_ids`` parameter and the write's
time as ``changed_at``. On PostgreSQL the hot writes send no such statement: the
update that settles the task inserts the row itself (:func:`folded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    insert,
    literal,
    literal_column,
    null,
    select,
    union_all,
)

from .backends.base import CHANGES_RECORDED
from .backends.changefeed import feed_for, feed_key
from .engine import Statements
from .schema import archived_tasks, changes, task_shards, tasks
from .statements import ID_BATCH

Kind = Literal["saved", "updated", "tagged", "archived", "restored", "deleted", "purged"]
KINDS: tuple[str, ...] = ("saved", "updated", "tagged", "archived", "restored", "deleted", "purged")
GONE: frozenset[str] = frozenset({"deleted", "purged"})
"""Kinds after which the task is in neither table (their status is None)."""

_IDS: Any = bindparam("change_ids", expanding=True)


def statements(dialect: str, kind: Kind, *, reported: bool = False) -> list[Any]:
    """The statements appending ``kind`` changes for the ``change_ids`` tasks: from the
    live table (``archived``: the archive), or their ids alone for deletions (where
    the feed records deletions by ``INSERT ... SELECT``, the last statement depends on
    how many: use :func:`batch_statement`). ``dialect``: a
    :func:`~uniqc_taskstore.backends.changefeed.feed_key`.
    ``reported``: only if shard (``key_task``, ``key_index``) holds ``new_status`` (a
    shard report that was not stale; ``change_ids`` is then that one task)."""
    tick = feed_for(dialect).tick()
    return [*([tick] if tick is not None else []), _record(dialect, kind, reported)]


@cache
def _record(dialect: str, kind: Kind, reported: bool) -> Any:
    txid = feed_for(dialect).txid()
    names = ["task_id", "kind", "status", "changed_at"]
    extra = [] if txid is None else [txid]
    if txid is not None:
        names.append("txid")
    at = bindparam("changed_at", type_=changes.c.changed_at.type)
    if kind in GONE:
        values: dict[str, Any] = {"task_id": bindparam("task_id"), "kind": kind, "changed_at": at}
        if txid is not None:
            values["txid"] = txid
        return insert(changes).values(values).inline()
    table: Table = archived_tasks if kind == "archived" else tasks
    where: Any = table.c.task_id.in_(_IDS)
    if reported:
        where = and_(
            where,
            exists().where(
                task_shards.c.uniqc_task_id == bindparam("key_task"),
                task_shards.c.shard_index == bindparam("key_index"),
                task_shards.c.status == bindparam("new_status"),
            ),
        )
    rows = select(
        table.c.task_id, literal(kind, changes.c.kind.type), table.c.status, at, *extra
    ).where(where)
    return insert(changes).from_select(names, rows).inline()


FOLDS_INTO_WRITES: frozenset[str] = frozenset({"postgresql"})
"""Feed keys of databases that run a data-modifying ``WITH`` (:func:`folded`)."""


def folded(dialect: str, kind: Kind, write: Any) -> Any | None:
    """``write`` (an ``UPDATE`` of the task table ``RETURNING`` the ``task_id`` and
    ``status`` of each task it leaves as the change left it) and the ``kind`` change
    of each of those tasks, in one statement: ``WITH written AS (UPDATE ... RETURNING
    task_id, status) INSERT INTO changes ... SELECT ... FROM written``. The status
    recorded is the one the update returns, the one committed, as :func:`statements`'
    would read it after the update; the time is ``changed_at``. None where the
    database runs no data-modifying ``WITH`` (:data:`FOLDS_INTO_WRITES`): there the
    change takes a statement of its own. Saves a statement on the hot paths, which
    matters on PostgreSQL: psycopg spends about as much CPU on a pipelined statement
    as the server spends running this one."""
    if dialect not in FOLDS_INTO_WRITES or kind in GONE:
        return None
    return _folded(dialect, kind, write)


@lru_cache(maxsize=32)
def _folded(dialect: str, kind: Kind, write: Any) -> Any:
    txid = feed_for(dialect).txid()
    written = write.cte("written")
    names = ["task_id", "kind", "status", "changed_at", *([] if txid is None else ["txid"])]
    rows = select(
        written.c.task_id,
        literal(kind, changes.c.kind.type),
        written.c.status,
        bindparam("changed_at", type_=changes.c.changed_at.type),
        *([] if txid is None else [txid]),
    )
    return insert(changes).from_select(names, rows).add_cte(written).inline()


@lru_cache(maxsize=64)
def _gone_select(kind: Kind, count: int) -> Any:
    """``INSERT ... SELECT`` of ``count`` deleted tasks' ids (``change_id_0``, ...)."""
    at = bindparam("changed_at", type_=changes.c.changed_at.type)
    rows = [
        select(
            bindparam(f"change_id_{index}", type_=changes.c.task_id.type).label("task_id"),
            literal_column(f"'{kind}'").label("kind"),
            null().label("status"),
            at.label("changed_at"),
        )
        for index in range(count)
    ]
    source: Any = rows[0] if count == 1 else union_all(*rows)
    return insert(changes).from_select(["task_id", "kind", "status", "changed_at"], source).inline()


def batch_statement(dialect: str, kind: Kind, ids: Sequence[str], changed_at: str) -> Any:
    """:func:`statements`' last statement for this batch of ids, and its parameters (a
    list of rows for a deletion by ``INSERT ... VALUES``, executed as many)."""
    if kind in GONE and feed_for(dialect).select_deletions:
        values = {f"change_id_{index}": task_id for index, task_id in enumerate(ids)}
        return _gone_select(kind, len(ids)), values | {"changed_at": changed_at}
    return _record(dialect, kind, False), params(kind, ids, changed_at)


def params(kind: Kind, ids: Sequence[str], changed_at: str) -> Any:
    """The parameters of :func:`statements`' last statement (a list of rows for a
    deletion, executed as many)."""
    if kind in GONE:
        return [{"task_id": task_id, "changed_at": changed_at} for task_id in ids]
    return {"change_ids": list(ids), "changed_at": changed_at}


def record(conn: Connection, kind: Kind, ids: Sequence[str], changed_at: str) -> None:
    """Append ``kind`` changes of ``ids`` in ``conn``'s transaction (its last writes)."""
    if not ids:
        return
    dialect = feed_key(conn.dialect)
    conn.info[CHANGES_RECORDED] = True
    *before, _ = statements(dialect, kind)
    for stmt in before:
        conn.execute(stmt)
    for batch in _batches(list(ids)):
        conn.execute(*batch_statement(dialect, kind, batch, changed_at))


def run_record(run: Statements, kind: Kind, ids: Sequence[str], changed_at: str) -> None:
    """:func:`record` on the hot write paths' :class:`Statements`."""
    if not ids:
        return
    run.note_changes()
    *before, _ = statements(run.dialect, kind)
    for stmt in before:
        run.run(stmt, {})
    for batch in _batches(list(ids)):
        last, values = batch_statement(run.dialect, kind, batch, changed_at)
        if isinstance(values, list):
            run.run_many(last, values)
        else:
            run.run(last, values)


def _batches(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + ID_BATCH] for start in range(0, len(ids), ID_BATCH)]
