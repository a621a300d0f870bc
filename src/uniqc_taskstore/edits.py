"""Read-merge-write edits of one task, done under its row lock in one transaction.

Two processes patching a task's metadata at once both keep their keys; a task is
finalized (results assembled from its shards) only when every shard is final.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table, literal, select, update

from . import change_log
from . import statements as sql
from .errors import CorruptRowError, InvalidInputError, TaskNotFoundError, TaskStateError
from .filters import LIVE
from .jsoncodec import prepare_json
from .model import TaskInfo, Unreadable, coerce_status, validate_names
from .queries import get_task
from .sharding import assemble_results
from .timestamps import utc_now


def check_patch(patch: object, remove: object) -> tuple[dict[str, Any], list[str]]:
    """A metadata patch and the keys to remove, checked before any transaction."""
    if not isinstance(patch, Mapping):
        raise InvalidInputError("patch", patch, "must be a mapping of metadata keys to values")
    for key in patch:
        _metadata_key(key, "patch")
    prepare_json(dict(patch), "metadata")  # refuse what cannot be stored, by its path
    return dict(patch), validate_names(remove, "remove", _metadata_key)


def _metadata_key(key: object, field: str) -> str:
    if not isinstance(key, str):
        raise InvalidInputError(field, key, "metadata keys must be strings")
    return key


def update_metadata(
    conn: Connection, task_id: str, patch: dict[str, Any], remove: list[str]
) -> dict[str, Any]:
    """Merge ``patch`` into a live task's metadata and drop ``remove``; the result.

    Stored metadata that cannot be read (malformed JSON, not an object) raises
    :class:`CorruptRowError` and is left as it is: replacing it with the patch would
    drop whatever the document held, which only its owner can recover by hand."""
    tasks = LIVE.tasks
    current = conn.execute(
        select(tasks.c.metadata_json).where(tasks.c.task_id == task_id).with_for_update()
    ).first()
    if current is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    stored = current[0]
    if isinstance(stored, Unreadable):
        raise CorruptRowError(tasks.name, task_id, "metadata_json", stored.reason)
    if stored is not None and not isinstance(stored, dict):
        raise CorruptRowError(
            tasks.name, task_id, "metadata_json", f"a {type(stored).__name__}, not an object"
        )
    merged = dict(stored or {})
    merged.update(patch)
    for key in remove:
        merged.pop(key, None)
    now = utc_now()
    conn.execute(
        update(tasks)
        .where(tasks.c.task_id == task_id)
        .values(metadata_json=prepare_json(merged, "metadata"), update_time=_later(tasks, now))
    )
    change_log.record(conn, "updated", [task_id], now)
    after = conn.execute(select(tasks.c.metadata_json).where(tasks.c.task_id == task_id))
    result: dict[str, Any] = after.scalar_one()
    return result


def finalize(conn: Connection, task_id: str) -> TaskInfo:
    """Write the per-circuit results of a task's shards into its ``result`` and their
    errors into its ``error_message``, once every shard is final."""
    tasks, shards = LIVE.tasks, LIVE.shards
    found = conn.execute(
        select(tasks.c.task_id).where(tasks.c.task_id == task_id).with_for_update()
    ).first()
    if found is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    rows = conn.execute(
        select(shards).where(shards.c.uniqc_task_id == task_id).order_by(shards.c.shard_index)
    ).mappings()
    parts = [sql.shard_from_row(row) for row in rows]
    if not parts:
        raise TaskStateError(f"task {task_id!r} has no shards to finalize")
    unfinished = [p.shard_index for p in parts if not coerce_status(p.status).is_terminal]
    if unfinished:
        raise TaskStateError(
            f"task {task_id!r} has unfinished shards {unfinished}; finalize it once every "
            "shard is final"
        )
    changes: dict[str, Any] = {
        "result_json": prepare_json(assemble_results(parts, allow_missing=True), "result"),
        "update_time": _later(tasks, now := utc_now()),
    }
    errors = [f"shard {p.shard_index}: {p.error_message}" for p in parts if p.error_message]
    if errors:
        changes["error_message"] = "; ".join(errors)
    conn.execute(update(tasks).where(tasks.c.task_id == task_id).values(changes))
    change_log.record(conn, "updated", [task_id], now)
    task = get_task(conn, LIVE, task_id)
    assert task is not None
    return task


def _later(table: Table, now: str) -> Any:
    """``now``, or the stored update_time if that is later (see :func:`sql.later`)."""
    return sql.later(table.c.update_time, literal(now, table.c.update_time.type))
