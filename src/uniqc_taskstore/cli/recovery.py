"""``restore-backup`` and ``vacuum``: put a SQLite store back from a backup, give its
free pages back. Servers have their own tools; these commands name them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from . import output
from .options import common_options, resolve_location


class Refused(click.ClickException):
    """The command does not apply here; the message says what to use instead."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"uniqc-tasks: {self.message}", err=True)


def _sqlite_path(what: str) -> Path:
    """The store's SQLite file, or a one-line refusal naming the server's own tool."""
    from ..maintenance import locate

    found = resolve_location()
    location = locate(found.cache_dir, found.url, schema=found.schema, given_by=found.given_by)
    path: Path | None = getattr(location.backend, "path", None)
    if path is None:
        name = location.backend.name
        tools = {
            "restore": {"postgresql": "pg_restore", "mysql": "mariadb < dump.sql"},
            "vacuum": {
                "postgresql": "VACUUM FULL (autovacuum already reuses freed space)",
                "mysql": "OPTIMIZE TABLE tasks, task_shards, task_tags, archived_tasks, "
                "archived_task_shards, archived_task_tags",
            },
        }[what]
        raise Refused(
            f"{what} is for SQLite stores; {location.backend.describe()} is a server "
            f"database: use {tools.get(name, 'the server tools')}"
        )
    return path


@click.command(
    "restore-backup",
    epilog="Example: uniqc-tasks restore-backup ~/backups/tasks-20261201T020000Z.sqlite. "
    "The backup is checked (PRAGMA integrity_check, that it is a uniqc task store) before "
    "anything changes; the current file is kept as tasks.sqlite.<UTC time>.bak. Refused "
    "(exit 4, nothing changed) while another process has the store open.",
)
@click.argument("backup", metavar="FILE")
@common_options
def restore_backup_command(backup: str) -> None:
    """Replace the SQLite store with a backup (from uniqc-tasks backup), keeping it."""
    from ..recovery import restore_backup

    path = _sqlite_path("restore")
    report = restore_backup(path, Path(backup).expanduser())
    if output.wants_json():
        output.emit({k: str(v) if isinstance(v, Path) else v for k, v in asdict(report).items()})
        return
    kept = f"; the file it replaced is kept at {report.kept}" if report.kept else ""
    output.line(f"Restored {path} from {backup} ({report.bytes:,} bytes){kept}")


@click.command(
    "vacuum",
    epilog="Example: uniqc-tasks vacuum (after delete or prune --archived). Other "
    "processes may keep the store open; servers: prints the server's command and exits 1.",
)
@common_options
def vacuum_command() -> None:
    """Give a SQLite store's free pages back to the disk (VACUUM); bytes before/after."""
    from ..recovery import vacuum

    path = _sqlite_path("vacuum")
    if not path.is_file():
        raise Refused(f"no task store at {path}")
    report = vacuum(path)
    if output.wants_json():
        output.emit(asdict(report) | {"path": str(path)})
        return
    output.line(
        f"Vacuumed {path}: {report.before:,} -> {report.after:,} bytes "
        f"({report.before - report.after:,} freed) in {report.seconds:.1f} s"
    )


COMMANDS: tuple[Any, ...] = (restore_backup_command, vacuum_command)
