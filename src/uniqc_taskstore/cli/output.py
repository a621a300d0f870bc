"""Everything the CLI prints: tables (rich on a terminal, aligned plain text otherwise),
standard JSON, JSON lines and CSV, notes on stderr, bars, and the progress bar.

JSON output is RFC 8259 JSON for every value the store accepts: values plain JSON
has no form for (NaN, infinities, complex numbers, dicts with non-string keys) are
written in the store's own tagged form ``{"$uniqc": ...}``, the form they have in
the database, which ``uniqc_taskstore.jsoncodec.from_jsonable`` turns back into the
Python values. CSV has one row per item and a column per key; a nested value (a
result, tags, metadata) is that same JSON inside its cell.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..jsoncodec import ENVELOPE_DEPTH, dump_jsonable, to_jsonable
from .options import settings

if TYPE_CHECKING:
    from ..model import TaskInfo, TaskShard


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
    tree = document(data)
    try:
        return json.dumps(tree, indent=2, allow_nan=False)
    except RecursionError:  # indenting recurses in Python: very deep values go on one line
        return dump_jsonable(tree)


def document(data: Any) -> Any:
    """``data`` (stored values in lists and dicts) as plain JSON data: whatever
    ``save`` accepted can be written, however deep (see ``ENVELOPE_DEPTH``)."""
    return to_jsonable(data, "output", enclosing=ENVELOPE_DEPTH)


def emit(data: Any) -> None:
    """Print ``data`` as JSON (``--json``), JSON lines (``--jsonl``: one line per item
    of a list, or one line for anything else) or CSV (``--format csv``: a row per item
    of a list, a column per key)."""
    if settings().format == "csv":
        write(csv_text(data))
    elif settings().format == "jsonl":
        items = data if isinstance(data, list) else [data]
        for item in items:
            write(dump_jsonable(document(item)) + "\n")
    else:
        write(json_text(data) + "\n")


def emit_stream(items: Iterable[Any]) -> None:
    """Print items as :func:`emit` prints a list of them, but each as it comes, so a
    listing of millions of tasks takes flat memory."""
    fmt = settings().format
    first = True
    for item in items:
        if fmt == "jsonl":
            write(dump_jsonable(document(item)) + "\n")
        elif fmt == "csv":  # the items share their keys: one header, from the first
            text = csv_text([item])
            write(text if first else text.split("\n", 1)[1])
        else:
            text = json_text(item)
            write(("[\n" if first else ",\n") + "  " + text.replace("\n", "\n  "))
        first = False
    if fmt == "json":
        write("[]\n" if first else "\n]\n")
    elif fmt == "csv" and first:
        write(csv_text([]))


def output_format() -> str:
    """``text`` (tables), ``json``, ``jsonl`` or ``csv``."""
    return settings().format


def wants_json() -> bool:
    """True when the output is for programs (``--json``, ``--jsonl``, ``--format csv``)
    rather than a table: print it with :func:`emit`."""
    return settings().format != "text"


def csv_text(data: Any) -> str:
    """``data`` as CSV with a header row: a list of objects gives a row each (columns in
    the order keys first appear), one object one row, other items a ``value`` column.
    Nested values are JSON in their cell; None is an empty cell."""
    items = data if isinstance(data, list) else [data]
    rows = [document(item) for item in items]
    rows = [row if isinstance(row, dict) else {"value": row} for row in rows]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return dump_jsonable(value)
    return str(value)


class CorruptCounter:
    """An ``on_corrupt`` callback for ``--skip-corrupt``: counts the rows skipped, and
    :meth:`report` says on stderr how many and which."""

    shown = 10

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, error: Exception) -> None:
        key = getattr(error, "key", None)
        self.keys.append(str(key[0] if isinstance(key, tuple) else key))

    def report(self) -> None:
        if not self.keys:
            return
        names = ", ".join(self.keys[: self.shown])
        more = f" and {len(self.keys) - self.shown:,} more" if len(self.keys) > self.shown else ""
        note(
            f"uniqc-tasks: skipped {len(self.keys):,} unreadable "
            f"{'row' if len(self.keys) == 1 else 'rows'} ({names}{more}); "
            "`uniqc-tasks doctor` says what is wrong with them"
        )


def note(message: str) -> None:
    """A line for people on stderr, never mixed into the output."""
    sys.stderr.write(message + "\n")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    foldable: Sequence[str] = (),
    page: bool = False,
) -> None:
    """A table: rich on a terminal (fitted to its width, ``COLUMNS`` if set: the
    ``foldable`` columns wrap, the others, ids among them, are never cut), plain
    aligned columns when piped. With ``page``, a table taller than the terminal goes
    through the pager (``$PAGER``, else less)."""
    if not rows:
        write("(none)\n")
        return
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console(markup=False, emoji=False, highlight=False)
        folds = [header in foldable for header in headers]
        needed = sum(min(w, 6) if fold else w for w, fold in zip(widths, folds, strict=True))
        # Ids are copied from tables: when the terminal is too narrow for whole cells,
        # the plain form below lets the terminal wrap lines instead of cutting cells.
        if needed + 2 * (len(widths) - 1) <= console.width:
            rendered = Table(box=None, header_style="bold", pad_edge=False)
            for header, fold in zip(headers, folds, strict=True):
                rendered.add_column(header, no_wrap=not fold, overflow="fold")
            for row in rows:
                rendered.add_row(*row)
            if page and len(rows) + 1 > console.height:
                with console.pager(styles=False):
                    console.print(rendered)
            else:
                console.print(rendered)
            return
    for cells in (headers, *rows):
        write(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
            + "\n"
        )


_TASK_HEADERS = {
    "task_id": "TASK",
    "status": "STATUS",
    "backend": "BACKEND",
    "name": "NAME",
    "shots": "SHOTS",
    "submit_time": "SUBMITTED (UTC)",
    "update_time": "UPDATED (UTC)",
    "archived_at": "ARCHIVED AT (UTC)",
    "tags": "TAGS",
    "error_message": "ERROR",
}


def task_columns(
    tasks: Sequence[TaskInfo], *, updated: bool = False, archived: bool = False
) -> list[str]:
    """The fields a task table shows by default: a NAME column when any has a name,
    UPDATED on request, ARCHIVED AT for the archive."""
    return [
        "task_id",
        "status",
        "backend",
        *(["name"] if any(t.name for t in tasks) else []),
        "shots",
        "submit_time",
        *(["update_time"] if updated else []),
        *(["archived_at"] if archived else []),
    ]


def tasks_table(tasks: Sequence[TaskInfo], columns: Sequence[str], *, page: bool = False) -> None:
    """Tasks, one row each, with these fields (of :data:`_TASK_HEADERS`) as columns."""
    table(
        [_TASK_HEADERS[c] for c in columns],
        [[_task_cell(t, c) for c in columns] for t in tasks],
        foldable=("NAME", "BACKEND", "TAGS", "ERROR"),
        page=page,
    )


def _task_cell(task: TaskInfo, column: str) -> str:
    value = getattr(task, column)
    if value is None or value == {}:
        return "-"
    if column == "tags":
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if column.endswith("_time") or column == "archived_at":
        return str(value)[:19]
    return str(getattr(value, "value", value))


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
    """``name: value`` lines; structured values as standard JSON on one line, and an
    absent value (None) as ``null`` whichever field it is."""
    for name, value in data.items():
        if value is None or isinstance(value, (dict, list)) or name in ("result", "metadata"):
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


def results_table(rows: Sequence[dict[str, Any]]) -> None:
    """Per-circuit results: outcome, count and probability for counts; JSON otherwise."""
    table(
        ["CIRCUIT", "OUTCOME", "COUNT", "PROBABILITY"],
        [
            [str(row["circuit"]), row["outcome"], str(row["count"]), f"{row['probability']:.4f}"]
            if "outcome" in row
            else [
                str(row["circuit"]),
                "-"
                if row["result"] is None
                else dump_jsonable(to_jsonable(row["result"], "result")),
                "",
                "",
            ]
            for row in rows
        ],
    )


def bar_table(label: str, counts: dict[str, int], total: int) -> None:
    """``label  COUNT  SHARE`` rows; on a terminal each with a small horizontal bar."""
    rows = [[name, f"{n:,}", f"{100 * n / total:.1f}%"] for name, n in counts.items()]
    if not rows or not sys.stdout.isatty():
        table([label, "COUNT", "SHARE"], rows)
        return
    from rich.bar import Bar
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False, emoji=False, highlight=False)
    rendered = Table(label, "COUNT", "SHARE", "", box=None, header_style="bold", pad_edge=False)
    for (name, count, share), n in zip(rows, counts.values(), strict=True):
        rendered.add_row(name, count, share, Bar(total, 0, n, width=30))
    console.print(rendered)


def live_watch(
    look: Callable[[], object],
    rows: Callable[[], list[list[str]]],
    caption: Callable[[], str | None],
    interval: float,
) -> None:
    """A table of the watched tasks that updates in place every ``interval`` seconds
    until ``caption`` says all finished (its text starts with ``all``)."""
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        shown = Table(
            "TASK",
            "STATUS",
            "BACKEND",
            "NAME",
            "UPDATED (UTC)",
            box=None,
            header_style="bold",
            pad_edge=False,
            caption=caption(),
            caption_justify="left",
        )
        for row in rows():
            shown.add_row(*row)
        return shown

    console = Console(markup=False, emoji=False, highlight=False)
    with Live(render(), console=console, auto_refresh=False) as live:
        while not (caption() or "").startswith("all "):
            time.sleep(interval)
            look()
            live.update(render(), refresh=True)
