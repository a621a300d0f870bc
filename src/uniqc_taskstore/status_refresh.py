"""Keeping a task's status true after every write that touches it.

Every write path (``save``, ``save_many``, ``save_shard(s)``, ``update_shard``) ends
by calling :func:`refresh_task_statuses` in its own transaction. The rule itself is
:func:`~uniqc_taskstore.model.task_status_after_write`; here it is fed which shard
statuses each task has, read with one ``EXISTS`` probe per status on the index
(task, status), so the cost does not grow with the number of shards.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, literal, or_, update

from . import statements as sql
from .engine import Statements
from .model import TERMINAL_STATUSES, TaskStatus, coerce_status, task_status_after_write
from .schema import task_shards, tasks


def refresh_task_statuses(
    run: Statements,
    task_ids: Iterable[str],
    now: str,
    *,
    new_jobs: Collection[str] = (),
    stamp: bool = False,
) -> dict[str, TaskStatus]:
    """Set each task's status from its shards (see :func:`task_status_after_write`;
    ``new_jobs`` are the tasks the write gave a new platform job); return the
    statuses. A task whose status changes is stamped ``update_time=now``; with
    ``stamp`` every one is (its shards were just written). Missing ids are skipped.

    With ``stamp``, where an ``UPDATE`` can return rows (SQLite, PostgreSQL), that is
    one statement per 500 tasks (:func:`_settle_statement`); else the probes are read
    and the changed rows updated."""
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    if stamp and run.returning:
        settled: dict[str, TaskStatus] = {}
        for new_job in (False, True):
            group = [i for i in ids if (i in new_jobs) is new_job]
            for batch in sql.in_batches(group):
                params = {"task_ids": list(batch), "now": now}
                for row in run.rows(_settle_statement(new_job), params):
                    settled[row["task_id"]] = coerce_status(row["status"])
        return settled
    settled = {}
    changed: dict[TaskStatus, list[str]] = {}
    for batch in sql.in_batches(ids):
        for row in run.rows(sql.shard_statuses_present(), {"task_ids": list(batch)}):
            task_id = row["task_id"]
            current = coerce_status(row["status"])
            present = [status for status, column in _PROBES if row[column]]
            new = task_status_after_write(current, present, new_job=task_id in new_jobs)
            settled[task_id] = new
            if stamp or new != current:
                changed.setdefault(new, []).append(task_id)
    _set_statuses(run, changed, now)
    return settled


_PROBES = [(status, status.value) for status in TaskStatus]
"""Each shard status and the column probing for it (:func:`sql.shard_statuses_present`)."""


def _set_statuses(run: Statements, changed: Mapping[TaskStatus, list[str]], now: str) -> None:
    for status, ids in changed.items():
        for batch in sql.in_batches(ids):
            params = {"task_ids": list(batch), "new_status": status.value, "now": now}
            run.run(sql.set_task_status(), params)


@dataclass(frozen=True)
class WriteState:
    """A task as ``save`` finds it right after its upsert (row locked): its status,
    which shard statuses it has, and whether it has any tag or shard at all."""

    status: TaskStatus
    present: frozenset[TaskStatus]
    has_tags: bool
    has_shards: bool


def read_write_state(run: Statements, task_ids: Iterable[str]) -> dict[str, WriteState]:
    """:class:`WriteState` of each task, one statement per 500 tasks."""
    found: dict[str, WriteState] = {}
    for batch in sql.in_batches(sorted(set(task_ids))):
        for row in run.rows(sql.task_write_state(), {"task_ids": list(batch)}):
            found[row["task_id"]] = WriteState(
                coerce_status(row["status"]),
                frozenset(status for status, column in _PROBES if row[column]),
                bool(row["has_tags"]),
                bool(row["has_shards"]),
            )
    return found


def settle_saved(
    run: Statements,
    state: Mapping[str, WriteState],
    incoming: Mapping[str, Collection[TaskStatus]],
    now: str,
    *,
    new_jobs: Collection[str] = (),
) -> dict[str, TaskStatus]:
    """Statuses after ``save`` wrote these tasks (``state`` read after their upsert)
    and the ``incoming`` shard statuses. A task whose shards the write did not change,
    or which had none before (its shards are now exactly the incoming ones), is settled
    from what is known; only one that had shards and got more is probed again (see
    :func:`refresh_task_statuses`). Changed statuses are stamped ``now``."""
    settled: dict[str, TaskStatus] = {}
    changed: dict[TaskStatus, list[str]] = {}
    probe: list[str] = []
    for task_id, known in state.items():
        if known.has_shards and task_id in incoming:
            probe.append(task_id)
            continue
        present = known.present | frozenset(incoming.get(task_id, ()))
        new = task_status_after_write(known.status, present, new_job=task_id in new_jobs)
        settled[task_id] = new
        if new != known.status:
            changed.setdefault(new, []).append(task_id)
    _set_statuses(run, changed, now)
    return settled | refresh_task_statuses(run, probe, now, new_jobs=new_jobs)


def settle_after_shard_update(run: Statements, task_id: str, now: str) -> TaskStatus | None:
    """After one stored shard of ``task_id`` took a reported status (same platform job:
    no new job), set the task's status by :func:`task_status_after_write` and stamp
    it; return the status, or None if there is no such task (see
    :func:`refresh_task_statuses`)."""
    return refresh_task_statuses(run, [task_id], now, stamp=True).get(task_id)


@cache
def _settle_statement(new_job: bool) -> Any:
    """``UPDATE tasks SET status = <task_status_after_write(current, shard statuses,
    new_job)>, update_time = :now`` for the ``task_ids`` tasks, ``RETURNING`` each id
    and status (see :func:`settled_status`; tests/test_status_rule_sql.py checks every
    combination against the Python rule)."""
    return (
        update(tasks)
        .where(tasks.c.task_id.in_(bindparam("task_ids", expanding=True)))
        .values(
            status=settled_status(new_job),
            update_time=sql.later(tasks.c.update_time, sql.now_param()),
        )
        .returning(tasks.c.task_id, tasks.c.status)
    )


@cache
def settled_status(new_job: bool) -> Any:
    """A ``tasks`` row's status by :func:`task_status_after_write` (current status,
    its shards' statuses, ``new_job``), as a SQL expression over the row: the Python
    rule written in SQL over the same ``EXISTS`` probes, case by case."""
    has = {
        status: exists().where(
            task_shards.c.uniqc_task_id == tasks.c.task_id,
            task_shards.c.status == literal(status.value),
        )
        for status in TaskStatus
    }
    unfinished = or_(*(has[s] for s in TaskStatus if not s.is_terminal))
    aggregate = case(
        (unfinished, literal(TaskStatus.RUNNING.value)),
        (
            and_(has[TaskStatus.SUCCESS], ~has[TaskStatus.FAILED], ~has[TaskStatus.CANCELLED]),
            literal(TaskStatus.SUCCESS.value),
        ),
        (has[TaskStatus.FAILED], literal(TaskStatus.FAILED.value)),
        else_=literal(TaskStatus.CANCELLED.value),
    )
    finished = tasks.c.status.in_([literal(s.value) for s in sorted(TERMINAL_STATUSES)])
    keep = [~or_(*has.values())]  # no shards (in a status we know): kept
    if not new_job:
        keep.append(and_(finished, unfinished))  # finished is not reopened
    return case(*((condition, tasks.c.status) for condition in keep), else_=aggregate)
