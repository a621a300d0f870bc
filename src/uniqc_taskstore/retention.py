"""Age-based retention: archive old finished tasks, purge old archived ones.

Set-based and in batches of at most 500 tasks, each batch one short write
transaction, so a purge of a million rows never holds the write lock for long
and other writers get their turn between batches. The cutoff is fixed when the
call starts: tasks that age past it meanwhile wait for the next run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, exists, select

from . import change_log
from . import statements as sql
from .engine import Database
from .errors import InvalidInputError
from .filters import ARCHIVED, LIVE, TaskFilter, TaskTables, filter_clauses
from .model import RetentionResult, TaskStatus, validate_flag, validate_statuses
from .statements import ID_BATCH
from .timestamps import EARLIEST, LATEST, format_timestamp, utc_now

AGE_COLUMNS = ("update_time", "submit_time")
_LONGEST = LATEST - EARLIEST


def cutoff(age: object, field: str) -> str:
    """Canonical UTC text of now minus ``age`` (a timedelta, or seconds: an int or a
    finite float). An age reaching before year 1 is valid and matches no task: the
    cutoff is then the earliest storable instant."""
    if isinstance(age, timedelta):
        delta = age
    elif isinstance(age, (int, float)) and not isinstance(age, bool):
        if isinstance(age, float) and not math.isfinite(age):
            raise InvalidInputError(field, age, "must be a finite number of seconds")
        if age < 0:
            raise InvalidInputError(field, age, "must not be negative")
        if age > _LONGEST.total_seconds():
            return format_timestamp(EARLIEST)
        delta = timedelta(seconds=age)
    else:
        raise InvalidInputError(field, age, "must be a datetime.timedelta or seconds")
    if delta < timedelta(0):
        raise InvalidInputError(field, age, "must not be negative")
    now = datetime.now(UTC)
    return format_timestamp(EARLIEST if delta > now - EARLIEST else now - delta)


def archive_older_than(
    db: Database,
    age: object,
    *,
    statuses: Iterable[TaskStatus | str] | None,
    by: str,
    dry_run: bool,
    f: TaskFilter,
) -> RetentionResult:
    """Archive live tasks in ``statuses`` (None: any) whose ``by`` time is older than
    ``age``, and that match ``f``: both ``statuses`` and ``f``'s own ``status`` must
    hold, as for every other field of a filter. Those whose id the archive already
    holds stay live, listed in ``refused``."""
    if by not in AGE_COLUMNS:
        raise InvalidInputError("by", by, f"must be one of {', '.join(AGE_COLUMNS)}")
    if statuses is not None:
        wanted = validate_statuses(statuses, "statuses")
        if f.statuses is not None:
            wanted = [s for s in wanted if s in f.statuses]
        f = replace(f, status=wanted)
    clauses = [*filter_clauses(f, LIVE), LIVE.tasks.c[by] < cutoff(age, "age")]
    # A live task whose id the archive holds (a twin) is left live: an archived task is
    # never replaced (see twins.py); such tasks are listed in ``refused``.
    in_archive = exists().where(ARCHIVED.tasks.c.task_id == LIVE.tasks.c.task_id)
    twins = select(LIVE.tasks.c.task_id).where(*clauses, in_archive).order_by(LIVE.tasks.c.task_id)
    refused = db.read(lambda conn: list(conn.execute(twins).scalars()))

    def archive(conn: Connection, ids: list[str]) -> None:
        now = utc_now()
        for stmt in sql.archive_statements(ids, now):
            conn.execute(stmt)
        change_log.record(conn, "archived", ids, now)

    result = _in_batches(db, LIVE, [*clauses, ~in_archive], archive, dry_run=dry_run)
    return replace(result, refused=refused)


def purge_archived(
    db: Database, older_than: object, *, dry_run: bool, f: TaskFilter
) -> RetentionResult:
    """Delete archived tasks archived longer ago than ``older_than`` that match ``f``."""
    clauses = [
        *filter_clauses(f, ARCHIVED),
        ARCHIVED.tasks.c.archived_at < cutoff(older_than, "older_than"),
    ]

    def purge(conn: Connection, ids: list[str]) -> None:
        for stmt in sql.delete_statements(ids, archived=True):
            conn.execute(stmt)
        change_log.record(conn, "purged", ids, utc_now())

    return _in_batches(db, ARCHIVED, clauses, purge, dry_run=dry_run)


def _in_batches(
    db: Database,
    side: TaskTables,
    clauses: list[ColumnElement[bool]],
    act: Any,
    *,
    dry_run: bool,
) -> RetentionResult:
    validate_flag(dry_run, "dry_run")
    table = side.tasks
    matching = select(table.c.task_id).where(*clauses).order_by(table.c.task_id)
    if dry_run:
        ids = db.read(lambda conn: list(conn.execute(matching).scalars()))
        return RetentionResult(len(ids), True, ids)

    def batch(conn: Connection) -> int:
        ids = list(conn.execute(matching.limit(ID_BATCH).with_for_update()).scalars())
        if ids:
            act(conn, ids)
        return len(ids)

    total = 0
    while True:
        done = db.write(batch)
        total += done
        if done < ID_BATCH:
            return RetentionResult(total)
