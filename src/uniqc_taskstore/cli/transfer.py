"""Commands that move tasks between stores and files: ``copy``, ``export``, ``import``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import click

from ..exchange import CsvRows, Format, export_tasks, import_tasks
from ..filters import TaskFilter
from ..store import TaskStore
from ..transfer import copy_tasks
from . import output
from .files import output_file, store_files
from .filter_options import filter_options, skip_corrupt_option
from .options import (
    Interrupted,
    check_cache_dir,
    check_schema,
    check_url,
    common_options,
    open_store,
    output_options,
    settings,
    store_at,
)


@click.command(
    "copy",
    epilog="Tasks the destination already has are skipped, so a copy that was "
    "interrupted is finished by running the same command again. A task the source "
    "archived (or restored) since the last copy is archived (or restored) in DEST too, "
    "unless DEST changed it since: then it is left as DEST has it, and named.",
)
@click.argument("source")
@click.argument("dest")
@click.option("--source-schema", metavar="NAME", help="PostgreSQL schema of SOURCE.")
@click.option("--dest-schema", metavar="NAME", help="PostgreSQL schema of DEST.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Tasks per transaction.",
)
@output_options
def copy_command(
    source: str,
    dest: str,
    source_schema: str | None,
    dest_schema: str | None,
    batch_size: int,
) -> None:
    """Copy every task, live and archived, with its shards from SOURCE to DEST.

    SOURCE and DEST are cache directories or SQLAlchemy URLs. SOURCE is only read
    and must hold a store; DEST is created if needed.
    """
    given = settings()
    for option, value in (
        ("--url", given.url),
        ("--cache-dir", given.cache_dir),
        ("--store", given.store),
    ):
        if value is not None:
            raise click.UsageError(
                f"copy takes its stores as SOURCE and DEST arguments, not {option}; "
                "write: uniqc-tasks copy SOURCE DEST"
            )
    if given.schema is not None:
        raise click.UsageError("copy takes --source-schema and --dest-schema, not --schema")
    for where, schema, name in ((source, source_schema, "SOURCE"), (dest, dest_schema, "DEST")):
        if "://" in where:
            check_url(where, what=name)
        else:
            check_cache_dir(where, what=name)
        check_schema(schema, where if "://" in where else None, f"--{name.lower()}-schema")
    done = [0, 0]

    def count(finished: int, total: int) -> None:
        done[:] = [finished, total]

    with (
        store_at(source, source_schema, create=False) as from_store,
        store_at(dest, dest_schema, create=True) as to_store,
        output.progress("Copying") as bar,
    ):

        def progress(finished: int, total: int) -> None:
            count(finished, total)
            if bar is not None:
                bar(finished, total)

        try:
            report = copy_tasks(from_store, to_store, batch_size=batch_size, progress=progress)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted after {done[0]:,} of {done[1]:,} tasks were copied (or found "
                f"already there) into {to_store.location}; every batch is whole, run the "
                "same command again to copy the rest"
            ) from None
    if output.wants_json():
        output.emit(asdict(report))
        return
    output.line(
        f"Copied from {from_store.location} to {to_store.location} in {report.seconds:.1f} s"
    )
    output.table(
        ["TABLE", "COPIED", "SOURCE", "DEST"],
        [
            [
                name,
                f"{getattr(report.copied, name):,}",
                f"{getattr(report.source, name):,}",
                f"{getattr(report.destination, name):,}",
            ]
            for name in (
                "tasks",
                "shards",
                "tags",
                "archived_tasks",
                "archived_shards",
                "archived_tags",
            )
        ],
    )
    if report.moved:
        output.line(
            f"Moved {report.moved:,} tasks between live and archive in DEST, as SOURCE did "
            "since they were copied"
        )
    if report.kept:
        shown = ", ".join(report.kept[:10]) + (" ..." if len(report.kept) > 10 else "")
        output.note(
            f"{len(report.kept):,} tasks SOURCE moved between live and archive were changed "
            f"in DEST since they were copied, so DEST keeps its own ({shown}); delete DEST's "
            "copy (uniqc-tasks delete [--archived] ID) and copy again to take SOURCE's"
        )


@click.command(
    "export",
    epilog="The file's form is its ending: .jsonl (JSON lines, also the default), .json "
    "(one JSON document) or .csv; for another name or - (stdout), --format picks it. "
    "JSONL holds every field of every task with its shards and tags, and is read back "
    'by uniqc-tasks import; JSON holds the same as {..., "tasks": [...]}. CSV is for '
    "spreadsheets: one row per task, per shard (--shards) or per circuit (--per-circuit; "
    "failed and cancelled tasks too, with their error). With a FILE ending in one of "
    "those, --json/--jsonl/--format print the summary in that form. A regular FILE is "
    "written as FILE.partial and renamed when complete (through a symlink: the file it "
    "points to); a pipe or device (/dev/stdout, >(gzip > x.gz)) is written straight "
    "into. The store's own database, and any SQLite database, is refused. Example: "
    "uniqc-tasks export --status failed --since 7d -o failed.json",
)
@click.option(
    "-o", "--output", "target", required=True, metavar="FILE", help="Where to write; - for stdout."
)
@filter_options
@click.option(
    "--archived", is_flag=True, help="Archived tasks too (they import back into the archive)."
)
@click.option("--archived-only", is_flag=True, help="Only archived tasks (not with --archived).")
@click.option(
    "--shards/--no-shards",
    default=None,
    help="JSONL: with shards (default). CSV: one row per shard.",
)
@click.option(
    "--per-circuit", is_flag=True, help="CSV: one row per circuit result, in submission order."
)
@skip_corrupt_option
@common_options
def export_command(
    target: str,
    task_filter: TaskFilter,
    archived: bool,
    archived_only: bool,
    shards: bool | None,
    per_circuit: bool,
    skip_corrupt: bool,
) -> None:
    """Write the matching tasks to FILE, newest first, in flat memory.

    Live tasks by default; --archived adds the archive, --archived-only exports only
    the archive. Only reads the store.
    """
    if archived and archived_only:
        raise click.UsageError(
            "--archived (live and archived) and --archived-only (only archived) contradict "
            "each other; give one"
        )
    fmt = _file_form(target, settings().format)
    if per_circuit and (fmt != "csv" or shards):
        raise click.UsageError("--per-circuit is a CSV layout; it goes without --shards")
    rows: CsvRows = "circuit" if per_circuit else ("shard" if shards else "task")
    done = [0, 0]
    skipped = output.CorruptCounter() if skip_corrupt else None
    with (
        open_store(create=False) as store,
        output_file(target, store_files(store.db_path)) as out,
        output.progress("Exporting") as bar,
    ):
        try:
            report = export_tasks(
                store,
                out.stream,
                task_filter,
                live=not archived_only,
                archived=archived or archived_only,
                shards=shards is not False,
                format=fmt,
                csv_rows=rows,
                progress=_tracking(done, bar),
                on_corrupt=skipped,
            )
        except KeyboardInterrupt:
            if out.whole:
                where = f"{target} was not written (nothing left behind)"
            else:
                where = "stdout" if target == "-" else f"what reached {target} is incomplete"
            raise Interrupted(
                f"interrupted after {done[0]:,} of {done[1]:,} tasks; {where}; run the same "
                "command again to export"
            ) from None
    if skipped is not None:
        skipped.report()
    summary = asdict(report) | {"file": target, "format": fmt}
    if target == "-":
        output.note(
            f"exported {report.tasks + report.archived_tasks:,} tasks in {report.seconds:.1f} s"
        )
    elif output.wants_json():
        output.emit(summary)
    else:
        output.line(
            f"Exported {report.tasks:,} live and {report.archived_tasks:,} archived tasks "
            f"({report.shards:,} shards, {report.rows:,} {fmt} rows) from {store.location} "
            f"to {target} in {report.seconds:.1f} s"
        )


_FORM_OF_ENDING: dict[str, Format] = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}


def _file_form(target: str, chosen: str) -> Format:
    """The export's form: the FILE's ending when it names one, else the one --format
    (--json, --jsonl) chose, else JSON lines."""
    ending = Path(target).suffix.lower() if target != "-" else ""
    if ending in _FORM_OF_ENDING:
        return _FORM_OF_ENDING[ending]
    return {"json": "json", "csv": "csv"}.get(chosen, "jsonl")  # type: ignore[return-value]


@click.command(
    "import",
    epilog="Tasks the store already has, live or archived, are skipped (and counted), so "
    "importing a file twice adds nothing and an interrupted import is finished by "
    "running the same command again. Each batch is one transaction.",
)
@click.argument("file", metavar="FILE")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Tasks per transaction.",
)
@common_options
def import_command(file: str, batch_size: int) -> None:
    """Add the tasks of a JSONL export (FILE, or - for stdin) to the store.

    Live tasks go to the live tables, archived ones to the archive, with their shards
    and tags, every field as exported. Creates the store if needed, once there is a
    task to write: a file refused at its first task line creates nothing.
    """
    done = [0, 0]
    opened: list[TaskStore] = []

    def store() -> TaskStore:
        if not opened:
            opened.append(open_store(create=True))
        return opened[0]

    try:
        with _input_file(file) as stream, output.progress("Importing") as bar:
            try:
                report = import_tasks(
                    store,
                    stream,
                    batch_size=batch_size,
                    progress=_tracking(done, bar),
                    name="stdin" if file == "-" else file,
                )
            except KeyboardInterrupt:
                where = opened[0].location if opened else "the store (nothing was written)"
                raise Interrupted(
                    f"interrupted after {done[0]:,} of {done[1]:,} tasks were read (each "
                    f"batch is whole) into {where}; run the same command again to import "
                    "the rest, tasks already there are skipped"
                ) from None
            location = store().location
    finally:
        for each in opened:
            each.close()
    if output.wants_json():
        output.emit(asdict(report) | {"file": file})
        return
    output.line(
        f"Imported {report.tasks:,} live and {report.archived_tasks:,} archived tasks "
        f"({report.shards:,} shards, {report.tags:,} tags) into {location} in "
        f"{report.seconds:.1f} s; {report.skipped:,} already there were skipped"
    )


def _tracking(
    done: list[int], bar: Callable[[int, int | None], None] | None
) -> Callable[[int, int | None], None]:
    def progress(finished: int, total: int | None) -> None:
        done[:] = [finished, total or finished]
        if bar is not None:
            bar(finished, total)

    return progress


@contextmanager
def _input_file(file: str) -> Iterator[IO[bytes] | IO[str]]:
    """FILE (or stdin for ``-``) as bytes, so that a byte that is not UTF-8 is named
    with its line by the import."""
    if file == "-":
        yield getattr(sys.stdin, "buffer", sys.stdin)
        return
    try:
        stream = Path(file).expanduser().open("rb")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {file} ({exc.strerror})", param_hint="FILE"
        ) from None
    with stream:
        yield stream


COMMANDS: tuple[Any, ...] = (copy_command, export_command, import_command)
