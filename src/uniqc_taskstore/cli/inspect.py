"""Commands that only read: ``list``, ``show``, ``shards``. They never create a store."""

from __future__ import annotations

from typing import Any

import click

from ..errors import TaskNotFoundError
from ..model import TaskInfo, TaskStatus
from ..store import TaskStore
from . import output
from .options import common_options, open_store, parse_statuses

DEFAULT_LIMIT = 50


@click.command("list")
@click.option(
    "--status",
    "statuses",
    metavar="STATUS[,STATUS...]",
    multiple=True,
    callback=parse_statuses,
    help="Only these statuses: --status success,failed or the option repeated.",
)
@click.option("--backend", help="Platform or device, e.g. originq or originq:WK_C180.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many tasks, newest first.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every matching task (no --limit).")
@click.option("--archived", is_flag=True, help="List the archive instead of live tasks.")
@common_options
def list_command(
    statuses: tuple[TaskStatus, ...],
    backend: str | None,
    limit: int,
    show_all: bool,
    archived: bool,
) -> None:
    """Tasks, newest first (without their results).

    After the table, stderr says how many were shown of how many matched.
    """
    wanted = list(statuses) or None
    with open_store(create=False) as store:
        fetch = store.list_archived if archived else store.list
        count = store.count_archived if archived else store.count
        tasks = fetch(
            status=wanted,
            backend=backend,
            limit=None if show_all else limit,
            include_results=False,
        )
        matched = (
            len(tasks) if show_all or len(tasks) < limit else count(status=wanted, backend=backend)
        )
    if output.wants_json():
        output.emit([_summary(t) for t in tasks])
        return
    output.tasks_table(tasks)
    kind = "archived tasks" if archived else "tasks"
    more = "; --limit N or --all to see more" if len(tasks) < matched else ""
    output.note(f"{len(tasks):,} of {matched:,} {kind}{more}")


@click.command("show")
@click.argument("task_id")
@common_options
def show_command(task_id: str) -> None:
    """One task in full, live or archived."""
    with open_store(create=False) as store:
        task = _find(store, task_id)
    if output.wants_json():
        output.emit(task.to_dict())
    else:
        output.fields(task.to_dict())


@click.command("shards")
@click.argument("task_id")
@common_options
def shards_command(task_id: str) -> None:
    """A task's platform jobs, in shard order."""
    with open_store(create=False) as store:
        task = _find(store, task_id)
        shards = (
            store.get_shards(task_id)
            if task.archived_at is None
            else store.get_archived_shards(task_id)
        )
    if output.wants_json():
        output.emit([s.to_dict() for s in shards])
    else:
        output.shards_table(shards)


def _find(store: TaskStore, task_id: str) -> TaskInfo:
    task = store.get(task_id) or store.get_archived(task_id)
    if task is None:
        raise TaskNotFoundError(
            f"no task {task_id!r} in {store.location}; `uniqc-tasks list` shows the ids there"
        )
    return task


def _summary(task: TaskInfo) -> dict[str, Any]:
    data = task.to_dict()
    del data["result"]
    return data


COMMANDS = (list_command, show_command, shards_command)
