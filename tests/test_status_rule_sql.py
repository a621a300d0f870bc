"""``update_shard`` settles the task's status in SQL (``status_refresh.settled_status``:
with ``UPDATE ... RETURNING`` on SQLite, in the batched server write on PostgreSQL and
MariaDB), other writes on MariaDB's generic path in Python. Both must be
:func:`task_status_after_write`: checked here for every stored task status, every set
of other shards' statuses and every reported status."""

from __future__ import annotations

from itertools import combinations

from sqlalchemy import update

from conftest import RawDatabase
from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.model import task_status_after_write
from uniqc_taskstore.schema import tasks

STATUSES = list(TaskStatus)
# Pending and running are alike to the rule (unfinished): the other shards and the
# stored task status range over running and the finished ones, the report over all.
ALIKE: list[TaskStatus] = [s for s in STATUSES if s is not TaskStatus.PENDING]
OTHERS: list[set[TaskStatus]] = [
    set(c) for n in range(len(ALIKE) + 1) for c in combinations(ALIKE, n)
]


def test_update_shard_settles_every_combination_as_the_rule_says(
    store: TaskStore, raw_database: RawDatabase
) -> None:
    cases: list[tuple[TaskStatus, set[TaskStatus], TaskStatus]] = [
        (current, others, reported)
        for current in ALIKE
        for others in OTHERS
        for reported in STATUSES
    ]
    saved, shards = [], []
    for n, (_, others, _) in enumerate(cases):
        task_id = f"case-{n}"
        saved.append(TaskInfo(task_id, "originq:WK_C180"))
        shards.append(TaskShard(task_id, 0, f"job-{n}-0", "originq:WK_C180", 1, 0))
        for i, status in enumerate(sorted(others), start=1):
            shards.append(
                TaskShard(task_id, i, f"job-{n}-{i}", "originq:WK_C180", 1, i, status=status)
            )
    store.save_many(saved, shards)
    with raw_database.engine.begin() as conn:  # any stored status, as older files hold
        for current in ALIKE:
            ids = [f"case-{n}" for n, case in enumerate(cases) if case[0] is current]
            conn.execute(update(tasks).where(tasks.c.task_id.in_(ids)).values(status=current))
    wrong = []
    for n, (current, others, reported) in enumerate(cases):
        result = store.update_shard(f"case-{n}", 0, status=reported)
        expected = task_status_after_write(current, others | {reported})
        if not result.applied or result.task_status != expected:
            wrong.append((current, sorted(others), reported, result, expected))
    assert wrong == []
    stored = {task.task_id: task.status for task in store.list(limit=-1)}
    assert stored == {f"case-{n}": store_status for n, store_status in _expected(cases)}


def _expected(
    cases: list[tuple[TaskStatus, set[TaskStatus], TaskStatus]],
) -> list[tuple[int, TaskStatus]]:
    return [
        (n, task_status_after_write(current, others | {reported}))
        for n, (current, others, reported) in enumerate(cases)
    ]


def test_save_shards_settles_every_combination_as_the_rule_says(
    store: TaskStore, raw_database: RawDatabase
) -> None:
    """A new shard is a new platform job: the same rule with ``new_job`` (a finished
    task reopens), here through one ``save_shards`` over every case at once."""
    cases = [
        (current, others, reported)
        for current in ALIKE
        for others in OTHERS
        for reported in STATUSES
    ]
    saved, shards = [], []
    for n, (_, others, _) in enumerate(cases):
        task_id = f"case-{n}"
        saved.append(TaskInfo(task_id, "originq:WK_C180"))
        for i, status in enumerate(sorted(others)):
            shards.append(
                TaskShard(task_id, i, f"job-{n}-{i}", "originq:WK_C180", 1, i, status=status)
            )
    store.save_many(saved, shards)
    with raw_database.engine.begin() as conn:
        for current in ALIKE:
            ids = [f"case-{n}" for n, case in enumerate(cases) if case[0] is current]
            conn.execute(update(tasks).where(tasks.c.task_id.in_(ids)).values(status=current))
    store.save_shards(
        [
            TaskShard(f"case-{n}", 9, f"new-{n}", "originq:WK_C180", 1, 9, status=reported)
            for n, (_, _, reported) in enumerate(cases)
        ]
    )
    stored = {task.task_id: task.status for task in store.list(limit=-1)}
    expected = {
        f"case-{n}": task_status_after_write(current, others | {reported}, new_job=True)
        for n, (current, others, reported) in enumerate(cases)
    }
    assert stored == expected
