"""Shell completion: ``uniqc-tasks completion bash|zsh|fish`` prints the script to
source, and the completers that offer task ids (read from the store the options point
at) and statuses. click does the completing; this module only supplies candidates."""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

PROG = "uniqc-tasks"
COMPLETE_VAR = "_UNIQC_TASKS_COMPLETE"
_STATUSES = ("pending", "running", "success", "failed", "cancelled")
_MOST_IDS = 200


def complete_task_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Ids of live and archived tasks starting with ``incomplete`` (newest first, at
    most 200); nothing when the store cannot be opened, since completion must not
    print errors into the shell."""
    from .options import open_store  # here: completing command names stays light

    try:
        with ctx, open_store(create=False) as store:
            found: list[str] = []
            for archived in (False, True):
                summaries = store.summaries(
                    search=incomplete or None, limit=_MOST_IDS, archived=archived
                )
                found += [s.task_id for s in summaries if s.task_id.startswith(incomplete)]
    except Exception:  # a shell completion never shows a traceback
        return []
    return [CompletionItem(task_id) for task_id in dict.fromkeys(found)]


def complete_statuses(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Statuses, also after a comma (``--status failed,ca`` offers ``failed,cancelled``)."""
    done, _, last = incomplete.rpartition(",")
    prefix = done + "," if done else ""
    return [CompletionItem(prefix + s) for s in _STATUSES if s.startswith(last.lower())]


@click.command(
    "completion",
    epilog="Example (bash): echo 'eval \"$(uniqc-tasks completion bash)\"' >> ~/.bashrc; "
    "zsh: the same in ~/.zshrc; fish: uniqc-tasks completion fish > "
    "~/.config/fish/completions/uniqc-tasks.fish. Completes commands, options, "
    "statuses and task ids (read from the store the options point at).",
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish."""
    ctx = click.get_current_context()
    root = ctx.find_root().command
    script = get_completion_class(shell)(root, {}, PROG, COMPLETE_VAR)  # type: ignore[misc]
    click.echo(script.source())


COMMANDS: tuple[Any, ...] = (completion_command,)
