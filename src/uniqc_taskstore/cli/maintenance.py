"""Commands that look after a store: ``backup``, ``doctor``, ``migrate``."""

from __future__ import annotations

import shlex
from dataclasses import asdict
from typing import Any

import click

from ..backends.server import ServerBackend
from ..errors import TaskStoreError
from ..maintenance import (
    Check,
    Location,
    backup,
    diagnose,
    last_migration,
    locate,
    pending_migrations,
    server_backup_error,
)
from ..maintenance import repair_counts as repair_maintenance_counts
from ..migrator import CURRENT_SCHEMA_VERSION
from . import output
from .options import check_schema, common_options, open_store, resolve_location, settings

DOCTOR_OK = 0
DOCTOR_WARN = 1
DOCTOR_FAIL = 3


def _location() -> Location:
    """Where the options point, and which of them (or which variable) said so."""
    found = resolve_location()
    check_schema(found.schema, found.url, "--schema")
    given_by = found.given_by or ("--cache-dir" if found.cache_dir is not None else "--url")
    return locate(found.cache_dir, found.url, schema=found.schema, given_by=given_by)


def _suffix() -> str:
    """The location options to repeat in a suggested command."""
    found = settings()
    if found.cache_dir is not None:
        return f" --cache-dir {shlex.quote(found.cache_dir)}"
    if found.url is not None:
        return " --url URL"
    return ""


@click.command(
    "backup",
    epilog="SQLite: a consistent copy made with SQLite's online backup while other "
    "processes keep writing; it is checked before it is kept and never replaces a "
    "file. Servers: prints the pg_dump / mariadb-dump command to use and exits 1.",
)
@click.argument("dest", metavar="DEST")
@common_options
def backup_command(dest: str) -> None:
    """Copy the store to DEST (a new file, or a directory for tasks-<time>.sqlite)."""
    backend = _location().backend
    if isinstance(backend, ServerBackend):
        raise server_backup_error(backend, dest)
    with open_store(create=False) as store:
        report = backup(store, dest)
    if output.wants_json():
        output.emit(asdict(report) | {"path": str(report.path), "source": store.location})
        return
    output.line(
        f"Backed up {store.location} to {report.path} "
        f"({report.bytes / 1024:,.0f} KiB in {report.seconds:.1f} s)"
    )


@click.command(
    "doctor",
    epilog=f"Exit status: {DOCTOR_OK} every check is ok; {DOCTOR_WARN} the store works but "
    f"something needs attention (pending migrations, loose permissions); {DOCTOR_FAIL} the "
    "store cannot be used as it is. Each problem is printed with the command that fixes "
    "it. Doctor opens the database read-only and creates or changes nothing, unless "
    "--repair-counts asks it to recount the status counters first.",
)
@click.option("--quick", is_flag=True, help="PRAGMA quick_check instead of integrity_check.")
@click.option(
    "--repair-counts",
    is_flag=True,
    help="First set the status counters to COUNT(*) of each status (the one change "
    "doctor makes, and only when asked).",
)
@common_options
def doctor_command(quick: bool, repair_counts: bool) -> int:
    """Check where the store is and whether it is healthy."""
    if repair_counts:
        with open_store(create=False) as store:
            fixed = repair_maintenance_counts(store)
        for status, (kept, real) in fixed.items() if not output.wants_json() else ():
            output.line(f"repaired  counters  {status}: {kept} -> {real}")
    try:
        checks = diagnose(_location(), full=not quick, suffix=_suffix())
    except TaskStoreError as exc:  # the location itself is unusable (URL, driver)
        checks = [Check("location", "fail", " ".join(str(exc).split()), "see the message")]
    worst = max((("ok", "warn", "fail").index(c.status) for c in checks), default=0)
    code = (DOCTOR_OK, DOCTOR_WARN, DOCTOR_FAIL)[worst]
    if output.wants_json():
        output.emit({"ok": code == DOCTOR_OK, "checks": [asdict(c) for c in checks]})
        return code
    for check in checks:
        line = f"{check.status.upper():<4}  {check.name:<9}  {check.message}"
        if check.fix and check.status != "ok":
            line += f"  -> fix: {check.fix}"
        output.line(line)
    return code


@click.command(
    "migrate",
    epilog="Opening a store with uniqc-taskstore also migrates it (every command does); "
    "this command makes it explicit. Before the first step touches a SQLite file, a "
    "copy is written beside it (tasks.sqlite.v<old>-<time>.bak, the newest three are "
    "kept); servers: dump the database first (uniqc-tasks backup names the command).",
)
@click.option("--dry-run", is_flag=True, help="Only list the pending steps; change nothing.")
@common_options
def migrate_command(dry_run: bool) -> None:
    """Bring the store's schema up to this version's, listing each step."""
    location = _location()
    version, steps = pending_migrations(location.backend)
    where = location.backend.describe()
    data: dict[str, Any] = {
        "location": where,
        "from_version": version,
        "to_version": CURRENT_SCHEMA_VERSION,
        "pending": [asdict(step) for step in steps],
        "applied": [],
        "backup": None,
        "dry_run": dry_run,
    }
    if not dry_run and steps:
        with open_store(create=False) as store:
            report = last_migration(store)
        if report is not None:
            data["applied"] = list(report.applied)
            data["backup"] = str(report.backup) if report.backup else None
    if output.wants_json():
        output.emit(data)
        return
    if not steps:
        output.line(f"{where} is at schema version {version}, current; nothing to do")
        return
    verb = "Would apply" if dry_run else "Applied"
    output.line(f"{where}: schema version {version} -> {CURRENT_SCHEMA_VERSION}")
    done = set(data["applied"]) if not dry_run else {s.version for s in steps}
    for step in steps:
        mark = verb if step.version in done else "Skipped (already applied elsewhere)"
        output.line(f"  {mark} {step.version}: {step.summary}")
    if data["backup"]:
        output.line(f"The file as it was (version {version}) is kept at {data['backup']}")
    elif dry_run and location.backend.name == "sqlite":
        output.line("A copy of the file is written beside it before the first step")


COMMANDS: tuple[Any, ...] = (backup_command, doctor_command, migrate_command)
