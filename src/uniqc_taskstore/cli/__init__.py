"""``uniqc-tasks``: look inside a task store, tidy it, copy it elsewhere, or run the demo
adapter.

This package holds the command group, its error policy and the entry point
:func:`main`; each command group lives in its own module (``inspect``, ``manage``,
``transfer``, ``demo``, ``sdk``), output formatting in ``output``, the store options in
``options`` and the shared filter options in ``filter_options``.
Nothing outside this package imports click or rich.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import DatabaseBusyError, DatabaseError, StoreNotFoundError, TaskStoreError
from . import completion, demo, inspect, manage, sdk, transfer
from . import maintenance as maintenance_commands
from .options import Interrupted, common_options
from .output import OutputError, flush

EXIT_OK = 0
EXIT_REFUSED = 1
"""The store refused the request, or what was asked for is not there."""
EXIT_USAGE = 2
"""A mistake on the command line (click's own usage errors)."""
EXIT_UNREACHABLE = 3
"""The database cannot be reached or opened as a task store."""
EXIT_BUSY = 4
"""The database stayed locked by other writers; nothing was written, try again."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT)."""

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


class _Group(click.Group):
    """The command group: quiet on a closed pipe, everything else left to :func:`main`."""

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


cli.add_command(demo.demo_command)
for _command in (*inspect.COMMANDS, *transfer.COMMANDS):
    cli.add_command(_command)
for _command in (*manage.COMMANDS, *maintenance_commands.COMMANDS, *completion.COMMANDS):
    cli.add_command(_command)
for _command in sdk.COMMANDS:
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uniqc-tasks`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args, prog_name="uniqc-tasks", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        _say(str(exc))
        return EXIT_INTERRUPTED
    except OutputError as exc:
        _say(str(exc))
        return EXIT_REFUSED
    except TaskStoreError as exc:
        _say(str(exc))
        return exit_code_for(exc)
    except OSError as exc:
        # The library names every path it refuses; this is the net under what it does
        # not foresee (a file the operating system refuses to open or stat).
        where = f" ({str(exc.filename)[:100]})" if exc.filename else ""
        _say(f"{exc.strerror or exc}{where}; check that path and try again")
        return EXIT_REFUSED
    return result if isinstance(result, int) else EXIT_OK


def exit_code_for(error: TaskStoreError) -> int:
    """The documented exit status for a refused request."""
    if isinstance(error, DatabaseBusyError):
        return EXIT_BUSY
    if isinstance(error, DatabaseError) and not isinstance(error, StoreNotFoundError):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def _say(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    line = " ".join(message.split())
    try:
        sys.stderr.write(f"uniqc-tasks: {line}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def _silence_stdout() -> None:
    """After a reader closed our stdout, let the interpreter's final flush go nowhere
    instead of printing 'Exception ignored ... BrokenPipeError'."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests capture stdout in memory): nothing to silence
