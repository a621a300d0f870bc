"""Live tasks per status, read from the counters the database keeps (schema v14).

Triggers on ``tasks`` (``migrations/v0014_status_counters.py``) add to and subtract from
``task_counts`` in the transaction of every statement that inserts, deletes or changes
the status of a live task, whichever code runs it; a status's count is the sum of its
stripes. Reading them is a few dozen rows however many tasks there are: the dashboard's
``count()``, ``count(status=...)`` and ``count_by("status")`` with no other filter.
:func:`drift` and :func:`recount` are ``doctor``'s check and repair.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select, update

from .backends import Backend
from .model import TaskStatus
from .schema import task_counts, tasks

STRIPES = 64
"""Counter rows per status a server's connections spread over (as migration v14 set)."""


def by_status(conn: Connection) -> dict[str, int]:
    """Live tasks per status, by the counters; statuses with none are absent."""
    return {status: int(n) for status, n in conn.execute(_sums()) if int(n) != 0}


def of_statuses(conn: Connection, statuses: Iterable[str]) -> int:
    """Live tasks in any of ``statuses``, by the counters."""
    wanted = list(statuses)
    return int(conn.execute(_sum_of(), {"statuses": wanted}).scalar_one())


def total(conn: Connection) -> int:
    """Every live task, by the counters: the per-status sums added up. A plain
    ``SUM(n)`` would scan the whole table, which on PostgreSQL keeps the space of every
    dead counter version a bulk load left (52 MB after a 1,000,000-task ``COPY``, 10 ms
    a call, even once vacuumed); the per-status read is served by the primary key."""
    return sum(int(n) for _, n in conn.execute(_sums()))


def counted(conn: Connection) -> dict[str, int]:
    """Live tasks per status by ``COUNT(*)`` over the tasks themselves."""
    stmt = select(tasks.c.status, func.count()).group_by(tasks.c.status)
    return {status: int(n) for status, n in conn.execute(stmt)}


def drift(conn: Connection) -> dict[str, tuple[int, int]]:
    """Each status whose counters disagree with ``COUNT(*)``: (counters, counted)."""
    kept, real = by_status(conn), counted(conn)
    return {
        status: (kept.get(status, 0), real.get(status, 0))
        for status in sorted(set(kept) | set(real))
        if kept.get(status, 0) != real.get(status, 0)
    }


def recount(conn: Connection, backend: Backend) -> None:
    """Set the counters to ``COUNT(*)`` per status, in the current write transaction.

    Every counter row a writer could touch is locked first (each known status on every
    stripe, zeroed, and every row already there): a writer's trigger then waits for this
    transaction, and its change is either counted here (committed before the count) or
    added after it (not), never both."""
    conn.execute(update(task_counts).values(n=0))
    zeros = [{"status": s.value, "stripe": i, "n": 0} for s in TaskStatus for i in range(STRIPES)]
    conn.execute(_keep(backend), zeros)
    rows = [{"status": status, "stripe": 0, "n": n} for status, n in counted(conn).items()]
    if rows:
        conn.execute(_set(backend), rows)


@cache
def _keep(backend: Backend) -> Any:
    return backend.upsert(task_counts, ("status", "stripe"), lambda _: [("n", task_counts.c.n)])


@cache
def _set(backend: Backend) -> Any:
    return backend.upsert(task_counts, ("status", "stripe"), lambda new: [("n", new.n)])


@cache
def _sums() -> Select[Any]:
    n = func.sum(task_counts.c.n)
    return select(task_counts.c.status, n).group_by(task_counts.c.status)


@cache
def _sum_of() -> Select[Any]:
    wanted = task_counts.c.status.in_(bindparam("statuses", expanding=True))
    return select(func.coalesce(func.sum(task_counts.c.n), 0)).where(wanted)
