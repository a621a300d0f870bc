"""Commands that move tasks between stores: ``copy``."""

from __future__ import annotations

from dataclasses import asdict

import click

from ..transfer import copy_tasks
from . import output
from .options import (
    Interrupted,
    check_cache_dir,
    check_schema,
    check_url,
    common_options,
    store_at,
)


@click.command(
    "copy",
    epilog="Tasks the destination already has are skipped, so a copy that was "
    "interrupted is finished by running the same command again.",
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
@common_options
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


COMMANDS = (copy_command,)
