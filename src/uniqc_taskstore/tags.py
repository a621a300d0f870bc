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

from sqlalchemy import Connection, Table, delete, insert, select, update

from .errors import InvalidInputError, TaskNotFoundError
from .filters import LIVE, TaskTables
from .statements import in_batches
from .timestamps import normalize_timestamp, utc_now


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
    conn: Connection,
    tagged: Mapping[str, Mapping[str, str]],
    stored: Collection[str] | None = None,
    submit_times: Mapping[str, object] | None = None,
) -> None:
    """Make each live (locked) task's stored tags exactly ``tagged[task_id]``.
    ``stored``, when known, are the tasks that have tags now (the others need no
    ``DELETE``); ``submit_times``, when known, the tasks' stored submit times (read
    here otherwise)."""
    ids = list(tagged) if stored is None else [task_id for task_id in tagged if task_id in stored]
    for batch in in_batches(ids):
        conn.execute(delete(LIVE.tags).where(LIVE.tags.c.task_id.in_(batch)))
    wanted = [task_id for task_id, pairs in tagged.items() if pairs]
    if submit_times is None or any(task_id not in submit_times for task_id in wanted):
        submit_times = stored_submit_times(conn, wanted)
    _insert_tags(
        conn,
        [(task_id, submit_times[task_id], tagged[task_id]) for task_id in wanted],
    )


def _insert_tags(conn: Connection, tagged: Sequence[tuple[str, object, Mapping[str, str]]]) -> None:
    """Insert ``(task_id, stored submit_time, tags)``. A stored time that is not
    canonical text (a legacy value the store repairs when it reads the task) cannot go
    through the column's bind processing unchanged, so it is copied in SQL instead."""
    odd = {task_id for task_id, when, _ in tagged if not _canonical(when)}
    rows = [
        {"task_id": task_id, "key": key, "value": value, "submit_time": when}
        for task_id, when, pairs in tagged
        for key, value in pairs.items()
    ]
    if not rows:
        return
    tags, tasks = LIVE.tags, LIVE.tasks
    if odd:
        for row in rows:
            if row["task_id"] in odd:
                row["submit_time"] = None
    conn.execute(insert(tags), rows)
    for batch in in_batches(sorted(odd)):
        stored = select(tasks.c.submit_time).where(tasks.c.task_id == tags.c.task_id)
        conn.execute(
            update(tags)
            .where(tags.c.task_id.in_(batch))
            .values(submit_time=stored.scalar_subquery())
        )


def _canonical(when: object) -> bool:
    if not isinstance(when, str):
        return False
    try:
        return normalize_timestamp(when) == when
    except InvalidInputError:
        return False


def stored_submit_times(conn: Connection, task_ids: Sequence[str]) -> dict[str, object]:
    """The stored ``submit_time`` of these live tasks, by id."""
    t = LIVE.tasks
    found: dict[str, object] = {}
    for batch in in_batches(task_ids):
        rows = conn.execute(select(t.c.task_id, t.c.submit_time).where(t.c.task_id.in_(batch)))
        found.update((task_id, when) for task_id, when in rows)
    return found


def set_tags(conn: Connection, task_id: str, checked: dict[str, str]) -> dict[str, str]:
    """Add or overwrite these tags (checked by ``validate_tags``) of a live task, keeping
    the others; its tags after."""
    submit_time = _lock_task(conn, LIVE, task_id)
    tags = LIVE.tags
    if checked:
        conn.execute(
            delete(tags).where(tags.c.task_id == task_id, tags.c["key"].in_(list(checked)))
        )
        _insert_tags(conn, [(task_id, submit_time, checked)])
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


def _lock_task(conn: Connection, side: TaskTables, task_id: str) -> object:
    """Lock a task's row; its stored submit time."""
    found = conn.execute(
        select(side.tasks.c.submit_time).where(side.tasks.c.task_id == task_id).with_for_update()
    ).first()
    if found is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    return found[0]


def _touch(conn: Connection, task_id: str) -> None:
    conn.execute(
        update(LIVE.tasks).where(LIVE.tasks.c.task_id == task_id).values(update_time=utc_now())
    )
