"""Writing shards: parents locked, the layout the write changes checked, new platform
jobs noticed, then one upsert.

Only what the write changes is checked: its shards against each other and against
the stored shards they could collide with (same index or a shared circuit). Two
stored shards that already overlap (files from older versions hold such pairs) do
not block a write to a third; assembling that task's results reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import statements as sql
from .backends import Backend
from .errors import ShardLayoutError, TaskNotFoundError
from .model import TaskShard
from .sharding import check_layout


def write_shards(
    conn: Connection,
    backend: Backend,
    shards: Sequence[TaskShard],
    rows: Sequence[dict[str, Any]],
    with_shards: set[str] | None = None,
) -> set[str]:
    """Upsert validated ``shards`` (as ``rows``) under their locked parents; return the
    ids of the tasks the write gave a new platform job (a shard at a new index, or a
    new ``platform_task_id`` at a stored one: a resubmission).

    Raises :class:`TaskNotFoundError` for a missing parent and
    :class:`ShardLayoutError` (after all parents are found) for two shards of one
    index in the write or a shard sharing a circuit with another; nothing is written
    then. ``with_shards``: the parents, known to exist and locked by the caller, that
    have shards (then they are not read again)."""
    if not shards:
        return set()
    if with_shards is None:
        with_shards = _lock_parents(conn, sorted({shard.uniqc_task_id for shard in shards}))
    by_task = _by_task(shards)
    new_jobs = set(by_task) - with_shards
    for task_id in sorted(with_shards & set(by_task)):
        if _check_against_stored(conn, task_id, by_task[task_id]):
            new_jobs.add(task_id)
    try:
        conn.execute(sql.upsert_shards(backend), list(rows))
    except IntegrityError as exc:  # a parent deleted by a concurrent writer
        raise TaskNotFoundError(f"a shard's task disappeared while saving: {exc.orig}") from exc
    return new_jobs


def _by_task(shards: Sequence[TaskShard]) -> dict[str, list[TaskShard]]:
    """The write's shards per task, each task's checked for duplicate indexes and
    overlaps among themselves."""
    by_task: dict[str, list[TaskShard]] = {}
    for shard in shards:
        by_task.setdefault(shard.uniqc_task_id, []).append(shard)
    for task_id, own in by_task.items():
        seen: set[int] = set()
        for shard in own:
            if shard.shard_index in seen:
                raise ShardLayoutError(
                    "shard_index",
                    shard.shard_index,
                    f"task {task_id}: two shards in one write have index {shard.shard_index}; "
                    "a write may hold each index once",
                )
            seen.add(shard.shard_index)
        try:
            check_layout(own)
        except ShardLayoutError as exc:
            raise ShardLayoutError(exc.field, exc.value, f"task {task_id}: {exc.reason}") from None
    return by_task


def _lock_parents(conn: Connection, parents: Sequence[str]) -> set[str]:
    """Lock the parents; return those that already have shards. Raises
    :class:`TaskNotFoundError` if one is missing."""
    found: dict[str, bool] = {}
    for batch in sql.in_batches(parents):
        found.update(
            (row.task_id, bool(row.has_shards))
            for row in conn.execute(sql.lock_parents(), {"task_ids": list(batch)})
        )
    missing = [p for p in parents if p not in found]
    if missing:
        raise TaskNotFoundError(
            f"no task {missing[0]!r} for its shard; save the task first "
            f"(or together: save(task, shards=[...]))"
        )
    return {task_id for task_id, has_shards in found.items() if has_shards}


def _check_against_stored(conn: Connection, task_id: str, incoming: Sequence[TaskShard]) -> bool:
    """Raise :class:`ShardLayoutError` if an incoming shard shares a circuit with a
    stored shard it does not replace; return whether one is a new platform job (a new
    index, or a resubmission at a stored one)."""
    by_index = {shard.shard_index: shard for shard in incoming}
    start = min(shard.sub_index_offset for shard in incoming)
    end = max(shard.sub_index_offset + shard.circuit_count for shard in incoming)
    near = conn.execute(sql.shards_near(task_id, sorted(by_index), start, end)).all()
    stored_jobs = {row.shard_index: row.platform_task_id for row in near}
    kept = [row for row in near if row.shard_index not in by_index]
    _refuse_overlap(task_id, incoming, kept)
    return any(stored_jobs.get(shard.shard_index) != shard.platform_task_id for shard in incoming)


def _refuse_overlap(task_id: str, incoming: Sequence[TaskShard], stored: Sequence[Any]) -> None:
    """Sweep both layouts in circuit order; only an incoming/stored pair counts."""
    items = sorted(
        [(s.sub_index_offset, s.shard_index, True, s) for s in incoming]
        + [(r.sub_index_offset, r.shard_index, False, r) for r in stored],
        key=lambda item: (item[0], item[1], item[2]),
    )
    widest: dict[bool, Any] = {}  # per side, the shard reaching furthest so far
    for offset, _, is_new, item in items:
        other = widest.get(not is_new)
        if other is not None and offset < _end(other):
            new, old = (item, other) if is_new else (other, item)
            raise ShardLayoutError(
                "sub_index_offset",
                new.sub_index_offset,
                f"task {task_id}: shard {new.shard_index} (circuits {new.sub_index_offset}.."
                f"{_end(new) - 1}) overlaps stored shard {old.shard_index}, which covers "
                f"circuits {old.sub_index_offset}..{_end(old) - 1}",
            )
        if is_new not in widest or _end(item) > _end(widest[is_new]):
            widest[is_new] = item


def _end(shard: Any) -> int:
    return int(shard.sub_index_offset) + int(shard.circuit_count)
