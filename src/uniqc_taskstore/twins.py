"""Task ids that are both live and archived ("twins"), and the one rule for them.

A twin is made by saving a task under the id of an archived one (allowed: the gateway
re-submits under old ids). Both copies are kept and both stay retrievable; nothing ever
replaces one with the other:

* archiving the live copy is refused while the archive holds that id
  (``archive``: :class:`TaskStateError`; ``archive_many``: ``refused``;
  ``archive_older_than``: left live and listed in ``RetentionResult.refused``), and
  restoring the archived copy is refused while the id is live;
* ``export`` marks both lines of a twin (``"twin": true``) and ``import`` puts each
  back on its own side; a line without the mark is skipped when the store has its id on
  either side;
* ``copy`` copies each side; a task the source moved between live and archive since
  the last copy is moved in the destination too (when the destination's copy is the one
  copied before: same ``update_time``);
* ``stats`` says how many of the ids it counts are twins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from .errors import TaskStateError
from .filters import ARCHIVED, LIVE, TaskFilter, filter_clauses

if TYPE_CHECKING:
    from .store import TaskStore

ALREADY_ARCHIVED = "already archived"
"""The ``BulkResult.refused`` reason for a live id the archive already holds."""


def archived_twin(task_id: str) -> TaskStateError:
    """The refusal to archive a live task whose id the archive already holds."""
    return TaskStateError(
        f"task {task_id!r} is already archived (an older task under the same id); an "
        "archived task is never replaced: delete that archived copy first "
        f"(delete_archived / uniqc-tasks delete --archived {task_id}), or keep both"
    )


def live_twin(task_id: str) -> TaskStateError:
    """The refusal to restore an archived task whose id is live."""
    return TaskStateError(
        f"task {task_id!r} exists both live and archived; a live task is never replaced: "
        f"delete one of them first (uniqc-tasks delete {task_id}, or delete --archived "
        f"{task_id})"
    )


def count_twins(store: TaskStore, f: TaskFilter | None = None, *, archived: bool = False) -> int:
    """How many ids among the live (or, ``archived``, archived) tasks of ``store``
    matching ``f`` are on the other side too."""
    side, other = (ARCHIVED, LIVE) if archived else (LIVE, ARCHIVED)
    stmt = (
        select(func.count())
        .select_from(side.tasks)
        .join(other.tasks, other.tasks.c.task_id == side.tasks.c.task_id)
        .where(*filter_clauses(f or TaskFilter(), side))
    )
    return store._db.read(lambda conn: int(conn.execute(stmt).scalar_one()))
