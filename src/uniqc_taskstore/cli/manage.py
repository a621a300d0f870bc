"""Commands that change tasks: ``delete``, ``archive``, ``restore``, ``prune``, ``tag``.

None of them creates a store: on a location without one they say ``no task store at
…``. The bulk commands act on every id they can and report the rest; any id missing
or refused makes the exit status 1 (the others are still done). ``delete`` and
``prune`` (which are not undone by ``restore`` when they delete) ask before acting on
more than one task when stdin is a terminal; elsewhere they need ``--yes``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import IO, Any

import click

from ..errors import TaskNotFoundError
from ..filters import TaskFilter
from ..model import TERMINAL_STATUSES, BulkResult
from ..store import TaskStore
from . import output
from .completion import complete_task_ids
from .filter_options import duration_option, filter_options
from .options import common_options, open_store

EXIT_NOT_ALL_DONE = 1
_SHOWN_IDS = 20
"""Missing or refused ids listed one by one in the text summary; the rest are counted."""


class NeedsConfirmation(click.ClickException):
    """A destructive command on several tasks, no terminal to ask on, and no ``--yes``."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"uniqc-tasks: {self.message}", err=True)


class Declined(click.ClickException):
    """The user answered no: nothing was done."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"uniqc-tasks: {self.message}", err=True)


def confirm(question: str, count: int, action: str, *, yes: bool) -> None:
    """Ask before acting on ``count`` (> 1) tasks, unless ``--yes`` was given. Without
    a terminal to ask on, refuse with a line saying to add ``--yes``."""
    if yes or count <= 1:
        return
    if not sys.stdin.isatty():
        raise NeedsConfirmation(
            f"{action} {count:,} tasks needs confirmation and stdin is not a terminal; "
            "add --yes to go ahead"
        )
    if not click.confirm(question, default=False, err=True):
        raise Declined(f"nothing was done ({action} {count:,} tasks declined)")


yes_option = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal)."
)


def _ids(task_ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(task_ids))


def _stdin_ids() -> list[str]:
    """Ids read from stdin, one per line (blank lines and ``#`` comments skipped), as
    ``uniqc-tasks list -q`` prints them."""
    found = []
    for line in sys.stdin:
        text = line.strip()
        if text and not text.startswith("#"):
            found.append(text.split()[0])
    return found


def select(
    store: TaskStore,
    task_ids: Sequence[str],
    task_filter: TaskFilter,
    *,
    archived: bool,
    verb: str,
) -> tuple[list[str], bool]:
    """The ids a bulk command acts on: those given, those read from stdin (``-``), or
    every (live, or ``archived``) task matching the filters; and whether they were
    chosen by a filter or stdin (then the count is said and confirmed). Giving both ids
    and filters, or neither, is a usage error."""
    filtered = task_filter != TaskFilter()
    if filtered and task_ids:
        raise click.UsageError(f"give task ids (or - for stdin) or filters to {verb}, not both")
    if not filtered and not task_ids:
        raise click.UsageError(
            f"give the ids to {verb}, - to read them from stdin, or filters such as "
            "--status failed --since 7d"
        )
    if filtered:
        matched = store.summaries(task_filter, archived=archived, order_by="submit_time")
        ids = [s.task_id for s in matched]
        where = "archived " if archived else ""
        output.note(f"{len(ids):,} {where}{'task matches' if len(ids) == 1 else 'tasks match'}")
        return ids, True
    if list(task_ids) == ["-"]:
        return _ids(_stdin_ids()), True
    if "-" in task_ids:
        raise click.UsageError("- (ids from stdin) goes alone, without other ids")
    return _ids(task_ids), False


def _ask(verb: str, ids: Sequence[str], *, yes: bool, where: str = "") -> None:
    confirm(
        f"{verb.capitalize()} {len(ids):,} {where}tasks?",
        len(ids),
        {"archive": "archiving", "restore": "restoring", "tag": "tagging"}.get(verb, verb),
        yes=yes,
    )


@click.command(
    "delete",
    epilog="Examples: uniqc-tasks delete uqt_1… uqt_2…; uniqc-tasks delete --archived "
    "--status cancelled --yes; uniqc-tasks list --status failed -q | uniqc-tasks delete - "
    "--yes",
)
@click.argument("task_ids", metavar="[ID...|-]", nargs=-1, shell_complete=complete_task_ids)
@filter_options
@click.option("--archived", is_flag=True, help="Delete from the archive instead.")
@yes_option
@common_options
def delete_command(
    task_ids: tuple[str, ...], task_filter: TaskFilter, archived: bool, yes: bool
) -> int:
    """Delete tasks with their shards and tags, for good.

    The ids given, read from stdin (-), or every task matching the filters. Ids not
    there are reported as missing (exit status 1); the others are deleted. More than
    one task asks for confirmation on a terminal (--yes skips it). --json lists the
    ids deleted.
    """
    with open_store(create=False) as store:
        ids, _ = select(store, task_ids, task_filter, archived=archived, verb="delete")
        where = "archived " if archived else ""
        confirm(
            f"Delete {len(ids):,} {where}tasks and their shards for good?",
            len(ids),
            "deleting",
            yes=yes,
        )
        result = store.delete_many(ids, archived=archived)
        hint = _hint_archived if not archived else _hint_live
        return _report("deleted", result, len(ids), lambda i: hint(store, i, "delete"))


@click.command(
    "archive",
    epilog="Examples: uniqc-tasks archive uqt_1…; uniqc-tasks archive --status failed "
    "--since 30d --yes --json (prints the ids archived).",
)
@click.argument("task_ids", metavar="[ID...|-]", nargs=-1, shell_complete=complete_task_ids)
@filter_options
@yes_option
@common_options
def archive_command(task_ids: tuple[str, ...], task_filter: TaskFilter, yes: bool) -> int:
    """Move tasks into the archive (any status), with their shards and tags.

    The ids given, read from stdin (-), or every live task matching the filters
    (stderr says how many; more than one asks first, --yes skips it). `restore`
    brings them back. An id the archive already holds is refused, also when a live
    task has it too (an archived task is never replaced: `delete --archived ID`
    first); an unknown one is missing (exit status 1 for either); the others are
    archived.
    """
    with open_store(create=False) as store:
        ids, chosen = select(store, task_ids, task_filter, archived=False, verb="archive")
        if chosen:
            _ask("archive", ids, yes=yes)
        result = store.archive_many(ids)
        return _report("archived", result, len(ids), lambda i: None)


@click.command(
    "restore",
    epilog="Examples: uniqc-tasks restore uqt_1…; uniqc-tasks restore --tag batch=7 --yes.",
)
@click.argument("task_ids", metavar="[ID...|-]", nargs=-1, shell_complete=complete_task_ids)
@filter_options
@yes_option
@common_options
def restore_command(task_ids: tuple[str, ...], task_filter: TaskFilter, yes: bool) -> int:
    """Move archived tasks back to the live tasks.

    The ids given, read from stdin (-), or every archived task matching the filters
    (stderr says how many; more than one asks first, --yes skips it). An id that is
    also live is refused, one not archived missing (exit status 1 for either); the
    others are restored.
    """
    with open_store(create=False) as store:
        ids, chosen = select(store, task_ids, task_filter, archived=True, verb="restore")
        if chosen:
            _ask("restore", ids, yes=yes, where="archived ")
        result = store.restore_many(ids)
        return _report("restored", result, len(ids), lambda i: _hint_live(store, i, "restore"))


@click.command(
    "prune",
    epilog="Examples: `prune --older-than 30d` archives tasks finished more than 30 days "
    "ago; `prune --archived --older-than 52w --dry-run` lists the archived tasks that "
    "`prune --archived --older-than 52w` would delete.",
)
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    required=True,
    callback=duration_option,
    help="Only tasks older than AGE (30d, 12h, 2w, ...): by last update (see --by), or "
    "for --archived by when they were archived.",
)
@filter_options
@click.option(
    "--by",
    type=click.Choice(["update_time", "submit_time"]),
    help="Which time --older-than looks at for live tasks [default: update_time].",
)
@click.option(
    "--archived",
    is_flag=True,
    help="Delete old tasks from the archive for good, instead of archiving live ones.",
)
@click.option("--dry-run", is_flag=True, help="Only list the tasks it would act on.")
@yes_option
@common_options
def prune_command(
    older_than: timedelta,
    task_filter: TaskFilter,
    by: str | None,
    archived: bool,
    dry_run: bool,
    yes: bool,
) -> int:
    """Archive old finished tasks; --archived deletes old archived ones.

    Either also drops changes older than 7 days from the change feed. Live tasks go to
    the archive (`restore` brings them back); without --status only
    finished ones (success, failed, cancelled). With --archived, archived tasks are
    deleted for good. The other filters narrow either. Acting on more than one task
    asks for confirmation on a terminal (--yes skips it).
    """
    if archived and by is not None:
        raise click.UsageError("--by applies to live tasks; --archived ages by archive time")
    statuses = task_filter.statuses or TERMINAL_STATUSES
    rest = TaskFilter(**{**_fields(task_filter), "status": None})
    verb = "deleted" if archived else "archived"
    with open_store(create=False) as store:

        def run(dry: bool) -> Any:
            if archived:
                return store.purge_archived(task_filter, older_than=older_than, dry_run=dry)
            return store.archive_older_than(
                older_than,
                rest,
                statuses=statuses,
                by="submit_time" if by == "submit_time" else "update_time",
                dry_run=dry,
            )

        preview = run(True)
        kept = preview.refused
        if dry_run:
            _emit_preview(verb, preview.task_ids)
            _note_kept(kept)
            return 0
        confirm(
            f"{'Delete' if archived else 'Archive'} {preview.count:,} "
            f"{'archived ' if archived else ''}tasks older than {_age(older_than)}"
            f"{' for good' if archived else ''}?",
            preview.count,
            "deleting" if archived else "archiving",
            yes=yes,
        )
        # Act on exactly the tasks that were counted (and confirmed).
        ids = preview.task_ids
        done = store.delete_many(ids, archived=True) if archived else store.archive_many(ids)
        count = len(done.done)
        kept = [*kept, *(i for i, _ in done.refused)]
        # The change log's retention goes with the tasks' (README, "The change feed").
        pruned = store.prune_changes()
    if output.wants_json():
        extra = {"changes_pruned": pruned} if pruned else {}  # a key only when it happened
        output.emit(
            {
                "action": verb,
                "count": count,
                "dry_run": False,
                "task_ids": done.done,
                "kept_live": kept,
                **extra,
            }
        )
    else:
        output.line(f"{verb} {count:,} {_tasks(count)}")
        if pruned:
            output.line(f"pruned {pruned:,} changes older than 7 days from the change feed")
    _note_kept(kept)
    return 0


def _note_kept(kept: list[str]) -> None:
    """Say which matching live tasks stayed live because the archive holds their id."""
    if kept:
        shown = ", ".join(kept[:_SHOWN_IDS]) + (" ..." if len(kept) > _SHOWN_IDS else "")
        output.note(
            f"{len(kept):,} matching {_tasks(len(kept))} stayed live: the archive already "
            f"holds a task under the same id ({shown}); `uniqc-tasks delete --archived ID` "
            "first to archive one"
        )


def _tasks(count: int) -> str:
    return "task" if count == 1 else "tasks"


def _fields(task_filter: TaskFilter) -> dict[str, Any]:
    return {name: getattr(task_filter, name) for name in TaskFilter.__dataclass_fields__}


def _emit_preview(verb: str, task_ids: list[str]) -> None:
    would = {"archived": "archive", "deleted": "delete"}[verb]
    if output.wants_json():
        output.emit({"action": verb, "count": len(task_ids), "dry_run": True, "task_ids": task_ids})
        return
    for task_id in task_ids:
        output.line(task_id)
    output.note(
        f"dry run: would {would} {len(task_ids):,} {_tasks(len(task_ids))}; nothing was changed"
    )


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@click.command(
    "tag",
    epilog="Examples: uniqc-tasks tag uqt_1… team=qec; uniqc-tasks tag --status failed "
    "--since 1d triage=yes --yes; uniqc-tasks list --name bell -q | uniqc-tasks tag - "
    "-k draft --yes",
)
@click.argument("words", metavar="[ID|-] [KEY=VALUE...]", nargs=-1)
@click.option(
    "-k", "--remove", "remove", metavar="KEY", multiple=True, help="Remove this tag (repeatable)."
)
@filter_options
@yes_option
@common_options
def tag_command(
    words: tuple[str, ...], remove: tuple[str, ...], task_filter: TaskFilter, yes: bool
) -> int:
    """Set (KEY=VALUE) or remove (-k KEY) a live task's tags; print them.

    One ID; or - to read ids from stdin, or filters (--status ...) instead of an id, to
    tag every matching live task (stderr says how many; more than one asks first,
    --yes skips it; --json lists the ids tagged). With one ID and neither KEY=VALUE nor
    -k it only prints its tags.
    """
    filtered = task_filter != TaskFilter()
    single = not filtered and bool(words) and words[0] != "-" and "=" not in words[0]
    given = words[1:] if single or (words and words[0] == "-") else words
    wanted: dict[str, str] = {}
    for pair in given:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE", param_hint="KEY=VALUE")
        wanted[key] = value
    both = sorted(set(wanted) & set(remove))
    if both:
        raise click.UsageError(f"tag {both[0]!r} is both set and removed (-k)")
    with open_store(create=False) as store:
        if single:
            _tag_one(store, words[0], wanted, list(remove))
            return 0
        if not wanted and not remove:
            raise click.UsageError("tagging several tasks needs KEY=VALUE or -k KEY")
        stdin = ("-",) if words and words[0] == "-" else ()
        ids, _ = select(store, stdin, task_filter, archived=False, verb="tag")
        _ask("tag", ids, yes=yes)
        done, missing = [], []
        for task_id in ids:
            try:
                _retag(store, task_id, wanted, list(remove))
            except TaskNotFoundError:
                missing.append(task_id)
            else:
                done.append(task_id)
        result = BulkResult(done=done, missing=missing, refused=[])
        return _report("tagged", result, len(ids), lambda i: _hint_archived(store, i, "tag"))


def _tag_one(store: TaskStore, task_id: str, wanted: dict[str, str], remove: list[str]) -> None:
    try:
        tags = _retag(store, task_id, wanted, remove)
    except TaskNotFoundError:
        if store.get_archived(task_id) is not None:
            raise TaskNotFoundError(
                f"task {task_id!r} is archived; `uniqc-tasks restore {task_id}` first to "
                "change its tags"
            ) from None
        raise TaskNotFoundError(
            f"no task {task_id!r} in {store.location}; `uniqc-tasks list` shows the ids there"
        ) from None
    if output.wants_json():
        output.emit(tags)
    else:
        for key, value in sorted(tags.items()):
            output.line(f"{key}={value}")


def _retag(
    store: TaskStore, task_id: str, wanted: dict[str, str], remove: list[str]
) -> dict[str, str]:
    if wanted:
        tags = store.set_tags(task_id, wanted)
    if remove or not wanted:
        tags = store.remove_tags(task_id, remove)
    return tags


def _hint_archived(store: TaskStore, task_id: str, verb: str) -> str | None:
    if store.get_archived(task_id) is not None:
        if verb == "tag":
            return f"archived: `uniqc-tasks restore {task_id}` first"
        return f"archived: add --archived to {verb} it there"
    return None


def _hint_live(store: TaskStore, task_id: str, verb: str) -> str | None:
    if store.get(task_id) is not None:
        return "live, not archived" + (": run without --archived" if verb == "delete" else "")
    return None


def _report(verb: str, result: BulkResult, asked: int, hint: Callable[[str], str | None]) -> int:
    """Print what a bulk command did; exit status 1 when any id was missing or refused."""
    if output.wants_json():
        outcome = {
            "action": verb,
            "done": result.done,
            "missing": result.missing,
            "refused": [{"task_id": i, "reason": reason} for i, reason in result.refused],
        }
        if output.output_format() == "csv":
            output.emit(
                [{"task_id": i, "outcome": verb, "reason": None} for i in result.done]
                + [{"task_id": i, "outcome": "missing", "reason": None} for i in result.missing]
                + [{"task_id": i, "outcome": "refused", "reason": r} for i, r in result.refused]
            )
        else:
            output.emit(outcome)
    else:
        output.line(f"{verb} {len(result.done):,} of {asked:,} {_tasks(asked)}")
        for task_id in result.missing[:_SHOWN_IDS]:
            why = hint(task_id) if len(result.missing) <= _SHOWN_IDS else None
            output.line(f"missing  {task_id}" + (f"  ({why})" if why else ""))
        for task_id, reason in result.refused[:_SHOWN_IDS]:
            output.line(f"refused  {task_id}  ({reason})")
        hidden = max(0, len(result.missing) - _SHOWN_IDS) + max(0, len(result.refused) - _SHOWN_IDS)
        if hidden:
            output.line(f"... and {hidden:,} more (--json lists them all)")
    failed = len(result.missing) + len(result.refused)
    if not failed:
        return 0
    output.flush()
    parts = [f"{len(result.missing):,} missing"] if result.missing else []
    parts += [f"{len(result.refused):,} refused"] if result.refused else []
    rest = f"; the other {len(result.done):,} were" if result.done else ""
    sys.stderr.write(
        f"uniqc-tasks: {failed:,} of {asked:,} not {verb} ({', '.join(parts)}){rest}\n"
    )
    return EXIT_NOT_ALL_DONE


COMMANDS = (delete_command, archive_command, restore_command, prune_command, tag_command)
