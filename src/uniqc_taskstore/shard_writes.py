"""Writing shards: parents locked, the layout the write changes checked, new platform
jobs noticed, then one upsert.

Only what the write changes is checked: its shards against each other and against
the stored shards they could collide with (same index or a shared circuit). Two
stored shards that already overlap (files from older versions hold such pairs) do
not block a write to a third; assembling that task's results reports them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError

from . import statements as sql
from .backends import Backend
from .engine import Statements
from .errors import ShardLayoutError, TaskNotFoundError
from .model import MAX_COUNT, TaskShard
from .sharding import check_layout


def write_shards(
    run: Statements,
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
        with_shards = _lock_parents(run, sorted({shard.uniqc_task_id for shard in shards}))
    by_task = shards_by_task(shards)
    new_jobs = set(by_task) - with_shards
    new_jobs |= _check_against_stored(run, by_task, sorted(with_shards & set(by_task)))
    try:
        run.run_many(sql.upsert_shards(backend), rows)
    except IntegrityError as exc:  # a parent deleted by a concurrent writer
        raise TaskNotFoundError(f"a shard's task disappeared while saving: {exc.orig}") from exc
    return new_jobs


def shards_by_task(shards: Sequence[TaskShard]) -> dict[str, list[TaskShard]]:
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


def _lock_parents(run: Statements, parents: Sequence[str]) -> set[str]:
    """Lock the parents; return those that already have shards. Raises
    :class:`TaskNotFoundError` if one is missing."""
    found: dict[str, bool] = {}
    for batch in sql.in_batches(parents):
        for row in run.rows(sql.lock_parents(), {"task_ids": list(batch)}):
            found[row["task_id"]] = bool(row["has_shards"])
    missing = [p for p in parents if p not in found]
    if missing:
        raise TaskNotFoundError(
            f"no task {missing[0]!r} for its shard; save the task first "
            f"(or together: save(task, shards=[...]))"
        )
    return {task_id for task_id, has_shards in found.items() if has_shards}


class _Stored(NamedTuple):
    """A stored shard near the written ones."""

    shard_index: int
    platform_task_id: str
    sub_index_offset: int
    circuit_count: int


def _check_against_stored(
    run: Statements, by_task: dict[str, list[TaskShard]], task_ids: Collection[str]
) -> set[str]:
    """Raise :class:`ShardLayoutError` if an incoming shard of these tasks (which have
    stored shards) shares a circuit with a stored shard it does not replace; return the
    tasks for which one is a new platform job (a new index, or a resubmission at a
    stored one).

    Only the stored shards a write could collide with are read: those at its indexes
    and those covering its circuits. Tasks written at the same indexes over the same
    circuits (a batch of like tasks) are read together, 500 per statement."""
    windows: dict[tuple[tuple[int, ...], int, int], list[str]] = {}
    for task_id in task_ids:
        incoming = by_task[task_id]
        indexes = tuple(sorted(shard.shard_index for shard in incoming))
        start = min(shard.sub_index_offset for shard in incoming)
        end = max(shard.sub_index_offset + shard.circuit_count for shard in incoming)
        windows.setdefault((indexes, start, end), []).append(task_id)
    near: dict[str, list[_Stored]] = {task_id: [] for task_id in task_ids}
    for (indexes, start, end), ids in windows.items():
        many, bounded = len(indexes) > sql.ID_BATCH, end <= MAX_COUNT
        params: dict[str, Any] = {"start": start}
        if bounded:
            params["end"] = end
        if many:
            params |= {"index_low": indexes[0], "index_high": indexes[-1]}
        else:
            params["indexes"] = list(indexes)
        stmt = sql.shards_near(many_indexes=many, bounded=bounded)
        for batch in sql.in_batches(ids):
            for row in run.rows(stmt, params | {"task_ids": list(batch)}):
                near[row["uniqc_task_id"]].append(
                    _Stored(
                        row["shard_index"],
                        row["platform_task_id"],
                        row["sub_index_offset"],
                        row["circuit_count"],
                    )
                )
    new_jobs: set[str] = set()
    for task_id in task_ids:
        incoming, stored = by_task[task_id], near[task_id]
        written = {shard.shard_index for shard in incoming}
        kept = [row for row in stored if row.shard_index not in written]
        refuse_overlap(task_id, incoming, kept)
        stored_jobs = {row.shard_index: row.platform_task_id for row in stored}
        if any(stored_jobs.get(s.shard_index) != s.platform_task_id for s in incoming):
            new_jobs.add(task_id)
    return new_jobs


def refuse_overlap(task_id: str, incoming: Sequence[TaskShard], stored: Sequence[Any]) -> None:
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
