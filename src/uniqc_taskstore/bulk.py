"""Archive, restore or delete many tasks by id, set-based.

Ids go in batches of at most 500 (``IN`` lists well under every driver's parameter
limit); each batch is one transaction holding the write lock briefly, so a list of
thousands neither blocks other writers for long nor half-applies a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from sqlalchemy import Connection, Table, select

from . import change_log
from . import statements as sql
from .engine import Database
from .filters import ARCHIVED, LIVE
from .model import BulkResult, validate_flag, validate_names
from .statements import in_batches
from .timestamps import utc_now
from .twins import ALREADY_ARCHIVED

_Outcome = tuple[list[str], list[str], list[tuple[str, str]]]


def task_ids(ids: Iterable[str], field: str = "task_ids") -> list[str]:
    """The distinct ids of ``ids`` (any iterable of strings but one string) in the
    order given, each checked."""
    return list(dict.fromkeys(validate_names(ids, field)))


def archive_many(db: Database, ids: Iterable[str]) -> BulkResult:
    """Move live tasks (any status) with their shards and tags to the archive; an id
    the archive already holds is refused, also when it is live too (a twin: the
    archived task is never replaced)."""

    def work(conn: Connection, batch: Sequence[str]) -> _Outcome:
        live = _present(conn, LIVE.tasks, batch, lock=True)
        archived = _present(conn, ARCHIVED.tasks, batch, lock=False)
        found = [i for i in batch if i in live and i not in archived]
        if found:
            now = utc_now()
            for stmt in sql.archive_statements(found, now):
                conn.execute(stmt)
            change_log.record(conn, "archived", found, now)
        return (
            found,
            [i for i in batch if i not in live and i not in archived],
            [(i, ALREADY_ARCHIVED) for i in batch if i in archived],
        )

    return _in_batches(db, task_ids(ids), work)


def restore_many(db: Database, ids: Iterable[str]) -> BulkResult:
    """Move archived tasks back to the live tables; an id that is also live is refused."""

    def work(conn: Connection, batch: Sequence[str]) -> _Outcome:
        archived = _present(conn, ARCHIVED.tasks, batch, lock=True)
        live = _present(conn, LIVE.tasks, [i for i in batch if i in archived], lock=True)
        found = [i for i in batch if i in archived and i not in live]
        if found:
            for stmt in sql.restore_statements(found):
                conn.execute(stmt)
            change_log.record(conn, "restored", found, utc_now())
        return (
            found,
            [i for i in batch if i not in archived],
            [(i, "a live task has this id") for i in batch if i in live],
        )

    # A save may create a live task with one of the ids after the check (no lock
    # covers a row not there yet): the batch is then run again and refuses that id.
    return _in_batches(db, task_ids(ids), work, rerun_on_conflict=True)


def delete_many(db: Database, ids: Iterable[str], *, archived: bool) -> BulkResult:
    """Delete live (or archived) tasks with their shards and tags."""
    side = ARCHIVED if validate_flag(archived, "archived") else LIVE

    def work(conn: Connection, batch: Sequence[str]) -> _Outcome:
        present = _present(conn, side.tasks, batch, lock=True)
        found = [i for i in batch if i in present]
        if found:
            for stmt in sql.delete_statements(found, archived=archived):
                conn.execute(stmt)
            change_log.record(conn, "purged" if archived else "deleted", found, utc_now())
        return found, [i for i in batch if i not in present], []

    return _in_batches(db, task_ids(ids), work)


def _present(conn: Connection, table: Table, ids: Sequence[str], *, lock: bool) -> set[str]:
    if not ids:
        return set()
    stmt = select(table.c.task_id).where(table.c.task_id.in_(ids))
    return set(conn.execute(stmt.with_for_update() if lock else stmt).scalars())


def _call(
    work: Callable[[Connection, Sequence[str]], _Outcome], batch: Sequence[str], conn: Connection
) -> _Outcome:
    return work(conn, batch)


def _in_batches(
    db: Database,
    ids: list[str],
    work: Callable[[Connection, Sequence[str]], _Outcome],
    *,
    rerun_on_conflict: bool = False,
) -> BulkResult:
    result = BulkResult()
    for batch in in_batches(ids):
        done, missing, refused = db.write(
            partial(_call, work, batch), rerun_on_conflict=rerun_on_conflict
        )
        result.done.extend(done)
        result.missing.extend(missing)
        result.refused.extend(refused)
    return result
