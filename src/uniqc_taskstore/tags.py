"""Tags: one row per ``(task_id, key)`` in ``task_tags`` / ``archived_task_tags``.

Written with their task by ``save`` (the object's tags replace the stored set),
changed in place by ``set_tags`` / ``remove_tags`` under the task's row lock, and
read for a whole page of tasks in one query. Each row carries its task's stored
``submit_time`` (which never changes once stored; v10), so that a tag page is read
from ``(key, value, submit_time, task_id)`` in sort order: every writer here takes it
from the task row, never from the object being saved (whose time ``save`` ignores
for a task already stored).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import cache

from sqlalchemy import (
    Connection,
    Delete,
    Insert,
    Table,
    bindparam,
    delete,
    insert,
    literal,
    select,
    update,
)

from . import change_log
from .engine import Statements
from .errors import TaskNotFoundError
from .filters import LIVE, TaskTables
from .statements import in_batches, later
from .timestamps import utc_now


def tags_of(conn: Connection, tags: Table, task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Every tag of these tasks, by task id (tasks without tags are absent)."""
    found: dict[str, dict[str, str]] = {}
    for batch in in_batches(task_ids):
        rows = conn.execute(
            select(tags.c.task_id, tags.c["key"], tags.c["value"])
            .where(tags.c.task_id.in_(batch))
            .order_by(tags.c.task_id, tags.c["key"])
        )
        for task_id, key, value in rows:
            found.setdefault(task_id, {})[key] = value
    return found


def replace_tags(
    run: Statements,
    tagged: Mapping[str, Mapping[str, str]],
    stored: Collection[str] | None = None,
) -> None:
    """Make each live (locked) task's stored tags exactly ``tagged[task_id]``.
    ``stored``, when known, are the tasks that have tags now (the others need no
    ``DELETE``)."""
    ids = list(tagged) if stored is None else [task_id for task_id in tagged if task_id in stored]
    for batch in in_batches(ids):
        run.run(_delete_live_tags(), {"task_ids": list(batch)})
    rows = [
        {"task_id": task_id, "key": key, "value": value}
        for task_id, pairs in tagged.items()
        for key, value in pairs.items()
    ]
    run.run_many(insert_live_tags(), rows)


@cache
def _delete_live_tags() -> Delete:
    """Delete every live tag of the ``task_ids`` tasks."""
    return delete(LIVE.tags).where(LIVE.tags.c.task_id.in_(bindparam("task_ids", expanding=True)))


@cache
def insert_live_tags() -> Insert:
    """Insert one tag (``task_id``, ``key``, ``value``) of a live task with the task's
    stored ``submit_time`` (the tags' copy, schema v10), taken in SQL: the stored value
    as it is, a legacy text the store repairs only when reading included."""
    tags_, tasks_ = LIVE.tags, LIVE.tasks
    values = select(
        bindparam("task_id", type_=tags_.c.task_id.type),
        bindparam("key", type_=tags_.c.key.type),
        bindparam("value", type_=tags_.c.value.type),
        tasks_.c.submit_time,
    ).where(tasks_.c.task_id == bindparam("task_id"))
    return insert(tags_).from_select(["task_id", "key", "value", "submit_time"], values)


def set_tags(conn: Connection, task_id: str, checked: dict[str, str]) -> dict[str, str]:
    """Add or overwrite these tags (checked by ``validate_tags``) of a live task, keeping
    the others; its tags after."""
    _lock_task(conn, LIVE, task_id)
    tags = LIVE.tags
    if checked:
        conn.execute(
            delete(tags).where(tags.c.task_id == task_id, tags.c["key"].in_(list(checked)))
        )
        rows = [{"task_id": task_id, "key": key, "value": value} for key, value in checked.items()]
        conn.execute(insert_live_tags(), rows)
        _touch(conn, task_id)
    return tags_of(conn, tags, [task_id]).get(task_id, {})


def remove_tags(conn: Connection, task_id: str, wanted: list[str]) -> dict[str, str]:
    """Remove these tag keys (checked by ``validate_names``) from a live task (absent
    keys are ignored); its tags after."""
    _lock_task(conn, LIVE, task_id)
    tags = LIVE.tags
    if (
        wanted
        and conn.execute(
            delete(tags).where(tags.c.task_id == task_id, tags.c["key"].in_(wanted))
        ).rowcount
    ):
        _touch(conn, task_id)
    return tags_of(conn, tags, [task_id]).get(task_id, {})


def _lock_task(conn: Connection, side: TaskTables, task_id: str) -> None:
    """Lock a task's row."""
    found = conn.execute(
        select(side.tasks.c.task_id).where(side.tasks.c.task_id == task_id).with_for_update()
    ).first()
    if found is None:
        raise TaskNotFoundError(f"no task {task_id!r}")


def _touch(conn: Connection, task_id: str) -> None:
    now = utc_now()
    live = LIVE.tasks
    conn.execute(
        update(live)
        .where(live.c.task_id == task_id)
        .values(update_time=later(live.c.update_time, literal(now, live.c.update_time.type)))
    )
    change_log.record(conn, "tagged", [task_id], now)
