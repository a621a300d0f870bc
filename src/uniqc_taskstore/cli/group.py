"""The ``uniqc-tasks`` command group: its options, its help and the table of commands,
each imported from its module only when it runs."""

from __future__ import annotations

import importlib
from typing import Any

import click

from .._version import __version__
from . import EXIT_OK, _silence_stdout
from .options import common_options
from .output import OutputError, flush

_EPILOG = """\b
Store: --cache-dir DIR (the SQLite file DIR/tasks.sqlite) or --url URL (a
SQLAlchemy URL such as postgresql+psycopg://user@host/db); without either,
UNIQC_TASKSTORE_URL, else UNIQC_CACHE_DIR, else ~/.uniqc/cache. --schema names
a PostgreSQL schema. These options and --json/--jsonl/--format go before or
after the command. Only demo, import and the destination of copy create a
store; every other command says "no task store at ..." where there is none.
doctor has its own statuses (see its --help).

\b
Confirmation: delete and prune ask before acting on more than one task when
stdin is a terminal; otherwise they need --yes (without it: exit 2, nothing
done). Answering no exits 1 with nothing done.

\b
Errors: every mistake ends in one line on stderr, "uniqc-tasks: <what is wrong
and what to do>", and an exit status:
  0    success (also when a reader closes the pipe early, as `| head` does)
  1    the store refused the request, the store or task is not there, the
       output could not be written (disk full), or a bulk command (delete,
       archive, restore) found some ids missing or refused (it did the rest)
  2    usage error: unknown command or option, bad or conflicting value
  3    the database cannot be reached or opened (server down, wrong URL,
       not a task store, damaged, written by a newer version)
  4    the database stayed locked by other writers; nothing was written,
       run the command again
  130  interrupted (Ctrl-C); an interrupted copy or import resumes when
       run again
"""


COMMANDS: dict[str, tuple[str, str, str]] = {
    "archive": (
        "manage",
        "archive_command",
        "Move tasks into the archive (any status), with their shards and tags.",
    ),
    "backup": (
        "maintenance",
        "backup_command",
        "Copy the store to DEST (a new file, or a directory for tasks-<time>.sqlite).",
    ),
    "changes": (
        "changes",
        "changes_command",
        "Print the changes committed after --since (or, with --follow, as they commit).",
    ),
    "completion": (
        "completion",
        "completion_command",
        "Print the shell completion script for bash, zsh or fish.",
    ),
    "copy": (
        "transfer",
        "copy_command",
        "Copy every task, live and archived, with its shards from SOURCE to DEST.",
    ),
    "delete": ("manage", "delete_command", "Delete tasks with their shards and tags, for good."),
    "demo": (
        "demo",
        "demo_command",
        "Submit a batch through a dummy adapter, poll it to the end, print what the store holds.",
    ),
    "doctor": (
        "maintenance",
        "doctor_command",
        "Check where the store is and whether it is healthy.",
    ),
    "export": (
        "transfer",
        "export_command",
        "Write the matching tasks to FILE, newest first, in flat memory.",
    ),
    "find": ("inspect", "find_command", "Which task owns a platform job id, live or archived."),
    "import": (
        "transfer",
        "import_command",
        "Add the tasks of a JSONL export (FILE, or - for stdin) to the store.",
    ),
    "list": ("inspect", "list_command", "Tasks, newest first (without their results)."),
    "migrate": (
        "maintenance",
        "migrate_command",
        "Bring the store's schema up to this version's, listing each step.",
    ),
    "prune": (
        "manage",
        "prune_command",
        "Archive old finished tasks; --archived deletes old archived ones.",
    ),
    "restore-backup": (
        "recovery",
        "restore_backup_command",
        "Replace the SQLite store with a backup (from uniqc-tasks backup), keeping it.",
    ),
    "restore": ("manage", "restore_command", "Move archived tasks back to the live tasks."),
    "results": (
        "inspect",
        "results_command",
        "A task's per-circuit results in submission order (live or archived).",
    ),
    "sdk": (
        "sdk",
        "sdk_group",
        "Make the SDK (unified-quantum) of this environment use this store, or its own.",
    ),
    "shards": ("inspect", "shards_command", "A task's platform jobs, in shard order."),
    "show": (
        "inspect",
        "show_command",
        "One task in full, live or archived (absent values print as null).",
    ),
    "stats": (
        "inspect",
        "stats_command",
        "Counts by status and backend, the oldest unfinished task, the store's size.",
    ),
    "stores": (
        "config",
        "stores_command",
        "The named stores of the config file (passwords masked), * marking the one in use.",
    ),
    "tag": (
        "manage",
        "tag_command",
        "Set (KEY=VALUE) or remove (-k KEY) a live task's tags; print them.",
    ),
    "vacuum": (
        "recovery",
        "vacuum_command",
        "Give a SQLite store's free pages back to the disk (VACUUM); bytes before/after.",
    ),
    "watch": ("inspect", "watch_command", "Follow tasks until every one has finished (or Ctrl-C)."),
}
"""Command name: (module in this package, attribute, the one-line help ``--help``
lists). A test checks each line against the command's own docstring."""


class _Group(click.Group):
    """The command group: quiet on a closed pipe, everything else left to :func:`main`.
    Commands of :data:`COMMANDS` are imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        module, attribute, _ = COMMANDS[cmd_name]
        found = importlib.import_module(f".{module}", __package__)
        command: click.Command = getattr(found, attribute)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            import difflib

            name = click.utils.make_str(args[0]) if args else ""
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            if name.startswith("-") or not close:
                raise
            ctx.fail(f"No such command {name!r}. Did you mean {close[0]!r}?")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from :data:`COMMANDS`, importing nothing."""
        import textwrap

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                text = COMMANDS[name][2].removesuffix(".")
                rows.append((name, textwrap.shorten(text, limit, placeholder="...")))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        """Command names (with their help) without importing the commands."""
        from click.shell_completion import CompletionItem

        found = [
            CompletionItem(name, help=COMMANDS[name][2] if name in COMMANDS else None)
            for name in self.list_commands(ctx)
            if name.startswith(incomplete)
        ]
        return found + click.Command.shell_complete(self, ctx, incomplete)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # --help and --version print while the arguments are parsed, before invoke; click
        # itself would turn a closed pipe there into exit status 1.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_OK) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            flush()
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_OK) from None
        except OutputError:
            _silence_stdout()
            raise
        return result


@click.group(
    cls=_Group,
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="uniqc-tasks")
@common_options
def cli() -> None:
    """Look inside a uniqc task store, tidy it, copy it elsewhere, or run a demo against it."""
