"""``uniqc-tasks changes``: the change feed on the command line."""

from __future__ import annotations

import click

from ..change_log import KINDS
from ..changes import Change, ChangeFilter
from . import output
from .options import common_options, open_store


@click.command(
    "changes",
    epilog="Examples: `changes --follow --jsonl` prints each change as it commits, one "
    "JSON object per line with the token after it; `changes --since TOKEN --jsonl` "
    'prints what committed after TOKEN and, last, a line {"token": ...} to resume from.',
)
@click.option("--since", metavar="TOKEN", help="Start after this token (default: now).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing changes as they commit.")
@click.option("--task-id", "task_ids", multiple=True, metavar="ID", help="Only this task (repeat).")
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only this kind (repeat)."
)
@common_options
def changes_command(
    since: str | None, follow: bool, task_ids: tuple[str, ...], kinds: tuple[str, ...]
) -> int:
    """Print the changes committed after --since (or, with --follow, as they commit).

    Each change: when, which task, what happened (saved, updated, tagged, archived,
    restored, deleted, purged) and the task's status after it. With --jsonl every
    change carries the token that resumes just after it; without --follow the last
    line is the token after everything printed. --follow runs until Ctrl-C (exit 130).
    """
    wanted = ChangeFilter(task_ids=task_ids or None, kinds=kinds or None)
    with open_store(create=False) as store:
        if follow:
            for change in store.follow(since, filter=wanted):
                _show(change)
                output.flush()
            return 0  # pragma: no cover - follow never ends by itself
        token = since if since is not None else store.changes().token
        while True:
            page = store.changes(token, filter=wanted)
            for change in page:
                _show(change)
            token = page.token
            if not page.more:
                break
        if output.wants_json():
            output.emit({"token": token})
        else:
            output.line(f"token: {token}")
    return 0


def _show(change: Change) -> None:
    if output.wants_json():
        output.emit(change.to_dict())
        return
    status = change.status.value if change.status is not None else "-"
    output.line(f"{change.changed_at}  {change.task_id}  {change.kind:<8}  {status}")


COMMANDS = (changes_command,)
