"""The migration runner: an ordered list of steps, the schema version as the cursor.

Each step lives in its own file ``migrations/vNNNN_<what>.py`` (shipped inside the
wheel as ``uniqc_taskstore/migrations``) and defines ``upgrade(conn)``. A step and
its version stamp run in one transaction; a step that raises leaves neither its
changes nor the new version behind (on MariaDB, where DDL commits implicitly,
steps are re-runnable instead; see :mod:`uniqc_taskstore.backends.mysql`).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn

from .backends.base import Backend
from .errors import MigrationError, SchemaTooNewError, StoreNotFoundError, TaskStoreError

log = logging.getLogger(__name__)
Migration = Callable[[Connection], None]
_STEP_FILE = re.compile(r"v(\d{4})_\w+\.py")


def migrations_dir() -> Path:
    """Where the migration files are: inside the installed package, or, in a source
    checkout (editable install), the repository's top-level ``migrations/``."""
    packaged = Path(__file__).with_name("migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[tuple[int, Migration]]:
    """``(target_version, upgrade)`` for every step file, in version order."""
    directory = directory or migrations_dir()
    steps: list[tuple[int, Migration]] = []
    for path in sorted(directory.glob("v*.py")):
        match = _STEP_FILE.fullmatch(path.name)
        if match is None:
            continue
        spec = importlib.util.spec_from_file_location(
            f"uniqc_taskstore_migration_{path.stem}", path
        )
        if spec is None or spec.loader is None:
            raise MigrationError(f"cannot load migration file {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        steps.append((int(match.group(1)), module.upgrade))
    versions = [version for version, _ in steps]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration files in {directory} are not numbered 1..n: {versions}")
    return steps


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` found and did; ``backup`` is the copy of the SQLite file
    written before the first step (None when nothing was applied, or on servers)."""

    from_version: int
    to_version: int
    applied: tuple[int, ...]
    backup: Path | None = None


@dataclass(frozen=True)
class MigrationStep:
    """One schema step: the version it brings the database to, and what it adds."""

    version: int
    summary: str


def pending_steps(
    found: int, migrations: Sequence[tuple[int, Migration]] = ()
) -> list[MigrationStep]:
    """The steps a database at version ``found`` still needs, each with the first
    sentence of its docstring."""
    return [
        MigrationStep(version, _summary(step))
        for version, step in (migrations or MIGRATIONS)
        if version > found
    ]


def _summary(step: Migration) -> str:
    text = " ".join((step.__doc__ or "").split())
    return text.split(". ")[0].rstrip(".") if text else "(no description)"


def migrate(
    backend: Backend,
    engine: Engine,
    migrations: Sequence[tuple[int, Migration]],
    *,
    create: bool = True,
) -> MigrationReport:
    """Bring the database to the last version of ``migrations``, one step per transaction.

    Refuses a database that is not ours or is newer than ``migrations`` knows, before
    changing anything (on SQLite, before switching the file to WAL). Safe to call from
    many processes at once: each step re-reads the version under the backend's
    migration lock and is skipped if already done. With ``create=False`` a database
    that holds no store yet raises :class:`StoreNotFoundError` and is not written.
    """
    latest = migrations[-1][0] if migrations else 0
    applied: list[int] = []
    found = check_version(backend, engine, latest)
    if found == 0 and not create:
        raise StoreNotFoundError(
            f"no task store at {backend.describe()}; check the location, or run a command "
            "that writes to create one."
        )
    backup: Path | None = None
    if 0 < found < latest:
        # Before anything is written (even the switch to WAL): a copy to roll back to.
        backup = backend.backup_before_migration(found)
    backend.after_open(engine)
    if 0 < found == latest:
        # Up to date: no need to queue behind another process's migration lock.
        return MigrationReport(found, found, ())
    kept = f"; the copy from before the upgrade is {backup}" if backup else ""
    started = time.monotonic()
    log.info("migrating %s from schema version %d to %d", backend.describe(), found, latest)
    with backend.migration_connection(engine) as conn:
        with conn.begin():
            start = backend.claim(conn)
        if start > latest:
            raise SchemaTooNewError(start, latest, backend.describe())
        for target, step in migrations:
            if target <= start:
                continue
            with conn.begin():
                current = backend.claim(conn)
                if current >= target:
                    continue
                try:
                    step(conn)
                except DBAPIError as exc:
                    if backend.is_busy(exc) or not backup:
                        raise
                    raise MigrationError(
                        f"migration to version {target} failed on {backend.describe()}: "
                        f"{exc.orig!r}; the database stays at version {current}{kept}"
                    ) from exc
                except TaskStoreError:
                    raise
                except Exception as exc:
                    raise MigrationError(
                        f"migration to version {target} failed on {backend.describe()}: {exc!r}; "
                        f"the database stays at version {current}{kept}"
                    ) from exc
                backend.write_version(conn, target)
            applied.append(target)
            log.info("%s: schema version %d applied", backend.describe(), target)
    log.info(
        "%s is at schema version %d (from %d; %d steps applied here) after %.2f s",
        backend.describe(),
        max(start, latest),
        start,
        len(applied),
        time.monotonic() - started,
    )
    return MigrationReport(start, max(start, latest), tuple(applied), backup if applied else None)


def create_missing(conn: Connection, tables: Sequence[Table]) -> None:
    """Create each table and each of its indexes unless it already exists.

    For migrations: re-running a step that stopped halfway finishes it.
    """
    for table in tables:
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def check_version(backend: Backend, engine: Engine, latest: int) -> int:
    """The database's schema version, read through a connection that cannot write (on
    SQLite, the file opened read-only); refuses a database that is not ours, is newer
    than ``latest``, or (when it needs migrating) fails the backend's pre-write check."""
    with backend.inspection_connection(engine) as conn, conn.begin():
        version = backend.claim(conn, stamp=False)
        if version > latest:
            raise SchemaTooNewError(version, latest, backend.describe())
        if version < latest:
            backend.check_before_first_write(conn)
    return version


def add_column(conn: Connection, table_name: str, column: Column[Any]) -> None:
    """``ALTER TABLE table_name ADD COLUMN column``, skipped when the column exists.

    For migrations only: Core has no construct for adding a column.
    """
    existing = {info["name"] for info in inspect(conn).get_columns(table_name)}
    if column.name in existing:
        return
    preparer = conn.dialect.identifier_preparer
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table_name)} ADD COLUMN {spec}")


MIGRATIONS: list[tuple[int, Migration]] = load_migrations()
"""Every schema step, ``(target_version, upgrade)``, in order. Only ever appended to."""

CURRENT_SCHEMA_VERSION: int = MIGRATIONS[-1][0]
