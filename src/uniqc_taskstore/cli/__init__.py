"""``uniqc-tasks``: look inside a task store, tidy it, copy it elsewhere, or run the demo
adapter.

This module holds the entry point :func:`main`, the exit statuses and the error
policy; the command group is in ``group`` (``cli`` and ``COMMANDS`` are also reachable
from here), each command group in its own module (``inspect``, ``manage``,
``transfer``, ``maintenance``, ``demo``, ``completion``, ``sdk``), output
formatting in ``output``, the store options in ``options`` and the shared filter
options in ``filter_options``. Nothing outside this package imports click or rich.

Start-up is lazy: ``--version`` loads nothing but this module, ``--help`` and
completion of command names load click but not the commands, and a command's module
(with SQLAlchemy) is imported only when that command runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import DatabaseBusyError, DatabaseError, StoreNotFoundError, TaskStoreError

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


def __getattr__(name: str) -> Any:
    if name in ("cli", "COMMANDS"):
        from . import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uniqc-tasks`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]):
        return _version()
    from .options import stop_logging

    try:
        return _run(args)
    finally:
        stop_logging()


def _version() -> int:
    """``--version``, the one answer that needs no click."""
    try:
        sys.stdout.write(f"uniqc-tasks, version {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return EXIT_OK


def _run(args: list[str]) -> int:
    import click

    from .group import cli
    from .options import Interrupted
    from .output import OutputError

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
