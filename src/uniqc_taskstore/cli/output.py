"""Everything the CLI prints: tables (rich on a terminal, aligned plain text otherwise),
standard JSON and JSON lines, notes on stderr, and the progress bar.

JSON output is RFC 8259 JSON for every value the store accepts: values plain JSON
has no form for (NaN, infinities, complex numbers, dicts with non-string keys) are
written in the store's own tagged form ``{"$uniqc": ...}``, the form they have in
the database, which ``uniqc_taskstore.jsoncodec.from_jsonable`` turns back into the
Python values.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..jsoncodec import dump_jsonable, to_jsonable
from ..model import TaskInfo, TaskShard
from .options import settings


class OutputError(Exception):
    """stdout could not be written (disk full, device error); the message says why."""


def write(text: str) -> None:
    """Write to stdout; a reader that went away is left to the caller (quiet exit), any
    other failure becomes an :class:`OutputError`."""
    _guarded(sys.stdout.write, text)


def flush() -> None:
    """Push out what stdout buffered, with :func:`write`'s error handling."""
    _guarded(sys.stdout.flush)


def _guarded(operation: Callable[..., object], *args: str) -> None:
    try:
        operation(*args)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the output ({exc.strerror or exc})") from None


def line(text: str = "") -> None:
    """One line on stdout."""
    write(text + "\n")


def json_text(data: Any) -> str:
    """``data`` as standard JSON text, indented for people."""
    return json.dumps(to_jsonable(data, "output"), indent=2, allow_nan=False)


def emit(data: Any) -> None:
    """Print ``data`` as JSON (``--json``) or JSON lines (``--jsonl``: one line per item
    of a list, or one line for anything else)."""
    if settings().format == "jsonl":
        items = data if isinstance(data, list) else [data]
        for item in items:
            write(dump_jsonable(to_jsonable(item, "output")) + "\n")
    else:
        write(json_text(data) + "\n")


def wants_json() -> bool:
    """True under ``--json`` or ``--jsonl``."""
    return settings().format != "text"


def note(message: str) -> None:
    """A line for people on stderr, never mixed into the output."""
    sys.stderr.write(message + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: rich on a terminal, plain aligned columns when piped."""
    if not rows:
        write("(none)\n")
        return
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console(markup=False, emoji=False, highlight=False)
        # Ids are copied from tables: when the terminal is too narrow for whole cells,
        # the plain form below lets the terminal wrap lines instead of cutting cells.
        if sum(widths) + 2 * (len(widths) - 1) <= console.width:
            rendered = Table(*headers, box=None, header_style="bold", pad_edge=False)
            for row in rows:
                rendered.add_row(*row)
            console.print(rendered)
            return
    for cells in (headers, *rows):
        write(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
            + "\n"
        )


def tasks_table(tasks: Sequence[TaskInfo]) -> None:
    """Tasks, one row each."""
    table(
        ["TASK", "STATUS", "BACKEND", "SHOTS", "SUBMITTED (UTC)"],
        [[t.task_id, t.status.value, t.backend, str(t.shots), t.submit_time[:19]] for t in tasks],
    )


def shards_table(shards: Sequence[TaskShard]) -> None:
    """A task's shards, with the range of circuits each holds."""
    table(
        ["#", "PLATFORM JOB", "STATUS", "CIRCUITS", "BACKEND"],
        [
            [
                str(s.shard_index),
                s.platform_task_id,
                s.status.value,
                f"{s.sub_index_offset}..{s.sub_index_offset + s.circuit_count - 1}",
                s.backend,
            ]
            for s in shards
        ],
    )


def fields(data: dict[str, Any]) -> None:
    """``name: value`` lines; structured values as standard JSON on one line."""
    for name, value in data.items():
        if isinstance(value, (dict, list)) or name in ("result", "metadata"):
            value = dump_jsonable(to_jsonable(value, name))
        write(f"{name:>13}: {value}\n")


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr when it is a terminal; yields its update function
    (``(done, total)``, total None when unknown), or None when there is nowhere to
    show it."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total, refresh=True)

        yield update
