"""Keeping a task's status true after every write that touches it.

Every write path (``save``, ``save_many``, ``save_shard(s)``, ``update_shard``) ends
by calling :func:`refresh_task_statuses` in its own transaction. The rule itself is
:func:`~uniqc_taskstore.model.task_status_after_write`; here it is fed which shard
statuses each task has, read with one ``EXISTS`` probe per status on the index
(task, status), so the cost does not grow with the number of shards.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import Connection, update

from . import statements as sql
from .model import TaskStatus, coerce_status, task_status_after_write
from .schema import tasks


def refresh_task_statuses(
    conn: Connection,
    task_ids: Iterable[str],
    now: str,
    *,
    new_jobs: Collection[str] = (),
    stamp: bool = False,
) -> dict[str, TaskStatus]:
    """Set each task's status from its shards (see :func:`task_status_after_write`;
    ``new_jobs`` are the tasks the write gave a new platform job); return the
    statuses. A task whose status changes is stamped ``update_time=now``; with
    ``stamp`` every one is (its shards were just written). Missing ids are skipped."""
    settled: dict[str, TaskStatus] = {}
    changed: dict[TaskStatus, list[str]] = {}
    for batch in sql.in_batches(sorted(set(task_ids))):
        for row in conn.execute(sql.shard_statuses_present(batch)).mappings():
            task_id = row["task_id"]
            current = coerce_status(row["status"])
            present = [status for status in TaskStatus if row[status.value]]
            new = task_status_after_write(current, present, new_job=task_id in new_jobs)
            settled[task_id] = new
            if stamp or new != current:
                changed.setdefault(new, []).append(task_id)
    for status, ids in changed.items():
        for batch in sql.in_batches(ids):
            conn.execute(
                update(tasks)
                .where(tasks.c.task_id.in_(batch))
                .values(status=status.value, update_time=now)
            )
    return settled
