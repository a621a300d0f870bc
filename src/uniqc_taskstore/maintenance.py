"""Looking after a store: backups, health checks and the schema's pending steps.

:func:`backup` copies a live SQLite store consistently while others write (SQLite's
online backup API); for a server it names the server's own dump tool. :func:`diagnose`
looks at a location without opening it as a store: it creates and changes nothing,
so it also explains a store that will not open (missing, foreign, damaged, too new,
unwritable, server down, driver missing), each problem with the command that fixes it.
"""

from __future__ import annotations

import itertools
import os
import shlex
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from . import counters
from .backends import backend_for_url
from .backends.base import APPLICATION_ID, Backend
from .backends.server import ServerBackend
from .backends.sqlite import (
    SIDECAR_SUFFIXES,
    SqliteBackend,
    check_header,
    copy_database,
    copy_is_intact,
    migration_backups,
)
from .changes import DEFAULT_RETENTION
from .errors import (
    BackupUnavailableError,
    CorruptDatabaseError,
    DatabaseError,
    ForeignDatabaseError,
    InvalidInputError,
    SchemaTooNewError,
    StoreNotFoundError,
    TaskStoreError,
)
from .integrity import corrupt_rows_on, stale_copies
from .migrator import CURRENT_SCHEMA_VERSION, MigrationReport, MigrationStep, pending_steps
from .schema import changes
from .store import CACHE_DIR_ENV, URL_ENV, TaskStore, _database_path
from .timestamps import format_timestamp, utc_now

Status = Literal["ok", "warn", "fail"]
WAL_WARN_BYTES = 256 * 1024 * 1024
"""A ``-wal`` file larger than this means checkpoints are being held off."""


@dataclass(frozen=True)
class Check:
    """One finding of :func:`diagnose`: ``fix`` says what to run when it is not ok."""

    name: str
    status: Status
    message: str
    fix: str | None = None


RowCheck = Callable[[Connection, str], Iterable[Check]]
"""A check of the stored rows: given the read-only connection and the ``suffix`` for
fix commands."""


def readable_rows(conn: Connection, suffix: str) -> list[Check]:
    """Every stored task and shard reads back; each one that does not (a hand edit,
    another program) is named with its column."""
    bad = list(corrupt_rows_on(conn))
    if not bad:
        return [Check("rows", "ok", "every stored task and shard reads back")]
    checks = []
    for error in bad:
        task_id = error.key[0] if isinstance(error.key, tuple) else error.key
        archived = " --archived" if error.table.startswith("archived") else ""
        checks.append(
            Check(
                "rows",
                "warn",
                str(error),
                f"repair its {error.column} by hand, or delete the task: "
                f"uniqc-tasks delete{archived} {shlex.quote(str(task_id))}{suffix}",
            )
        )
    return checks


def index_copies(conn: Connection, suffix: str) -> list[Check]:
    """Each task's ``platform`` is its backend's and each tag's ``submit_time`` its
    task's (the copies platform and tag pages are read by; schema v10)."""
    del suffix
    stale = stale_copies(conn)
    if not stale:
        return [
            Check(
                "filter columns",
                "ok",
                "every platform, tag submit time and search text is in step with its task",
            )
        ]
    counts = ", ".join(f"{n} in {table}" for table, n in stale.items())
    return [
        Check(
            "filter columns",
            "warn",
            f"rows whose platform or tag submit_time does not match their task, or that "
            f"lack their search text ({counts}): written by another program; platform, "
            "tag and search filters miss these tasks",
            "save each such task again through the store (save rewrites both copies)",
        )
    ]


def status_counters(conn: Connection, suffix: str) -> list[Check]:
    """The live tasks per status the counters say (schema v14) are those ``COUNT(*)``
    finds. The triggers keep them in every writing transaction, so only a change made
    around them (triggers dropped, a counter row edited) can make them differ."""
    wrong = counters.drift(conn)
    if not wrong:
        return [Check("counters", "ok", "the status counters match COUNT(*) of every status")]
    found = ", ".join(f"{status}: {kept} counted {real}" for status, (kept, real) in wrong.items())
    return [
        Check(
            "counters",
            "warn",
            f"status counters differ from the tasks ({found}); count and count_by read them",
            f"uniqc-tasks doctor --repair-counts{suffix}",
        )
    ]


def repair_counts(store: TaskStore) -> dict[str, tuple[int, int]]:
    """Set the status counters to ``COUNT(*)`` per status in one write transaction (see
    :func:`~uniqc_taskstore.counters.recount`); return what differed before."""
    db = store._db

    def work(conn: Connection) -> dict[str, tuple[int, int]]:
        before = counters.drift(conn)
        counters.recount(conn, db.backend)
        return before

    return db.write(work)


def change_feed(conn: Connection, suffix: str) -> list[Check]:
    """How many changes the change feed's log holds, and whether retention keeps up:
    a change older than twice the default retention means nothing prunes it."""
    count, oldest = conn.execute(select(func.count(), func.min(changes.c.changed_at))).one()
    if not count:
        return [Check("change feed", "ok", "no changes logged")]
    limit = format_timestamp(datetime.now(UTC) - 2 * DEFAULT_RETENTION)
    message = f"{count:,} changes logged, the oldest from {oldest}"
    if oldest < limit:
        return [
            Check(
                "change feed",
                "warn",
                f"{message}: older than retention ({DEFAULT_RETENTION.days} days)",
                "call TaskStore.prune_changes(); every `uniqc-tasks prune` run (not "
                "--dry-run) also prunes the change log",
            )
        ]
    return [Check("change feed", "ok", message)]


ROW_CHECKS: list[RowCheck] = [readable_rows, index_copies, status_counters, change_feed]
"""Checks of the stored rows themselves, run by :func:`diagnose` (not with
``full=False``) on a read-only connection once the file, stamp, schema version and
integrity are all ok. Append to it to join ``uniqc-tasks doctor``."""


@dataclass(frozen=True)
class Location:
    """Where a store is, and why there: which option, variable or default chose it."""

    backend: Backend
    reason: str


def locate(
    cache_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    *,
    schema: str | None = None,
    given_by: str | None = None,
) -> Location:
    """The location ``TaskStore(cache_dir)`` / ``TaskStore.from_url(url)`` (or, with
    neither, ``TaskStore()``) would open, without opening it. ``given_by`` names how
    ``cache_dir`` or ``url`` was given (``--cache-dir``), for the reason."""
    if cache_dir is not None and url is not None:
        raise InvalidInputError("cache_dir/url", None, "give at most one location")
    if url is not None:
        return Location(backend_for_url(url, schema=schema), given_by or "url=")
    if cache_dir is not None:
        return Location(SqliteBackend(_database_path(cache_dir)), given_by or "cache_dir=")
    env_url = os.environ.get(URL_ENV)
    if env_url:
        return Location(backend_for_url(env_url, schema=schema, source=URL_ENV), URL_ENV)
    if os.environ.get(CACHE_DIR_ENV):
        return Location(SqliteBackend(_database_path(None)), CACHE_DIR_ENV)
    path = _database_path(None)
    return Location(
        SqliteBackend(path),
        f"the default, {path.parent} (no --cache-dir, --url, {URL_ENV} or {CACHE_DIR_ENV})",
    )


# -- backup -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupReport:
    """The copy :func:`backup` wrote."""

    path: Path
    bytes: int
    seconds: float


def backup(store: TaskStore, dest: str | os.PathLike[str]) -> BackupReport:
    """Copy a SQLite store to ``dest`` (a new file, or a directory to put
    ``tasks-<UTC time>.sqlite`` in), consistently while other processes write, mode
    0600; the copy is checked before it is kept and never replaces a file. A server
    database raises :class:`BackupUnavailableError` whose ``command`` is the
    ``pg_dump`` / ``mariadb-dump`` command line for it (password masked)."""
    backend = store._db.backend
    source = store.db_path
    if isinstance(backend, ServerBackend):
        raise server_backup_error(backend, dest)
    if source is None:
        raise BackupUnavailableError(
            "an in-memory store has no file to back up; write its tasks out with "
            "uniqc-tasks export (exchange.export_tasks) instead"
        )
    target = Path(dest).expanduser()
    try:
        into_directory = target.is_dir()
        names = _backup_names(target) if into_directory else iter([target])
        target = next(names)
        if not into_directory and (target.exists() or target.is_symlink()):
            raise InvalidInputError(
                "dest", str(target), "exists; a backup never replaces a file, choose a new name"
            )
        if not target.parent.is_dir():
            raise InvalidInputError("dest", str(target), "its directory does not exist")
    except OSError as exc:  # a name longer than the file system allows, a loop, ...
        raise InvalidInputError(
            "dest", str(target), f"cannot be used ({exc.strerror}); choose another path"
        ) from None
    started = time.perf_counter()
    while True:
        try:
            copy_database(source, target, timeout=backend.busy.timeout)
            break
        except FileExistsError:
            if not into_directory:
                raise InvalidInputError(
                    "dest", str(target), "exists; a backup never replaces a file, choose a new name"
                ) from None
            target = next(names)  # another backup took this second's name: the next one
        except OSError as exc:
            raise InvalidInputError(
                "dest", str(target), f"cannot be written ({exc.strerror})"
            ) from None
    return BackupReport(target, target.stat().st_size, time.perf_counter() - started)


def _backup_names(directory: Path) -> Iterator[Path]:
    """``tasks-<UTC time>Z.sqlite`` in ``directory``, then ``...Z-2.sqlite``, ``-3``,
    ... for backups started within the same second."""
    stamp = utc_now()[:19].replace(":", "")
    yield directory / f"tasks-{stamp}Z.sqlite"
    for n in itertools.count(2):
        yield directory / f"tasks-{stamp}Z-{n}.sqlite"


def server_backup_error(
    backend: ServerBackend, dest: str | os.PathLike[str]
) -> BackupUnavailableError:
    """The refusal to back up a server database, naming the command that does it."""
    command = native_backup_command(backend, Path(dest))
    return BackupUnavailableError(
        f"{backend.describe()} is a server database: back it up with the server's own "
        f"tool, which copies it consistently while others write: {command}",
        command,
    )


def native_backup_command(backend: ServerBackend, dest: Path) -> str:
    """The dump command for a server database, without its password."""
    url = backend.url
    user, host, port, database = url.username, url.host, url.port, url.database or ""
    if backend.name == "postgresql":
        target = make_url("postgresql://").set(
            username=user, host=host, port=port, database=database
        )
        args = ["pg_dump", "--format=custom", f"--file={dest}"]
        schema = getattr(backend, "schema", None)
        if schema:
            args.append(f"--schema={schema}")
        args.append(f"--dbname={target.render_as_string(hide_password=False)}")
        command = shlex.join(args)
        if url.password:
            command += "  (password from PGPASSWORD or ~/.pgpass)"
        return command
    args = ["mariadb-dump", "--single-transaction", "--routines"]
    args += [f"--host={host or 'localhost'}", f"--port={port or 3306}"]
    if user:
        args.append(f"--user={user}")
    if url.password:
        args.append("--password")  # asks for it; never on the command line
    args.append(database)
    return f"{shlex.join(args)} > {shlex.quote(str(dest))}"


# -- migrations ---------------------------------------------------------------------------


def schema_version_at(backend: Backend) -> int:
    """The schema version of the store at ``backend``, read without writing anything;
    :class:`StoreNotFoundError` where there is none, :class:`SchemaTooNewError` when it
    is newer than this code."""
    if isinstance(backend, SqliteBackend) and backend.path is not None:
        path = backend.path
        if not path.is_file() or path.stat().st_size == 0:
            raise StoreNotFoundError(f"no task store at {path}")
        check_header(path)
    engine = backend.create_engine()
    try:
        with backend.inspection_connection(engine) as conn:
            version = backend.claim(conn, stamp=False)
    except DBAPIError as exc:
        raise _translated(backend, exc) from exc
    finally:
        engine.dispose()
    if version == 0:
        raise StoreNotFoundError(f"no task store at {backend.describe()}")
    return version


def pending_migrations(backend: Backend) -> tuple[int, list[MigrationStep]]:
    """The store's schema version and the steps this code would apply to it."""
    version = schema_version_at(backend)
    if version > CURRENT_SCHEMA_VERSION:
        raise SchemaTooNewError(version, CURRENT_SCHEMA_VERSION, backend.describe())
    return version, pending_steps(version)


def last_migration(store: TaskStore) -> MigrationReport | None:
    """What opening ``store`` in this process migrated (steps applied, the copy kept)."""
    return store._db.last_migration


# -- doctor -------------------------------------------------------------------------------


def diagnose(location: Location, *, full: bool = True, suffix: str = "") -> list[Check]:
    """Every check of the store at ``location``, in order, stopping where a failure
    makes the later ones meaningless. Creates and changes nothing. ``full=False`` runs
    ``quick_check`` instead of ``integrity_check``; ``suffix`` is appended to the
    ``uniqc-tasks`` commands in fixes (e.g. ``--cache-dir DIR``)."""
    backend = location.backend
    checks = [Check("location", "ok", f"{backend.describe()} (from {location.reason})")]
    path = getattr(backend, "path", None)
    if isinstance(backend, SqliteBackend) and path is None:
        checks.append(Check("file", "ok", "in-memory database: nothing on disk to check"))
        return checks
    if path is not None and not _file_checks(path, checks):
        return checks
    engine = backend.create_engine()
    try:
        if isinstance(backend, ServerBackend):
            checks.append(_round_trip(backend, engine))
            if checks[-1].status == "fail":
                return checks
        with backend.inspection_connection(engine) as conn:
            version = backend.claim(conn, stamp=False)
            checks.extend(_schema_checks(backend, version, suffix))
            if path is not None and version:
                checks.append(_integrity(conn, path, full))
            healthy = all(c.status != "fail" for c in checks)
            if full and healthy and version == CURRENT_SCHEMA_VERSION:
                for row_check in ROW_CHECKS:
                    checks.extend(row_check(conn, suffix))
    except TaskStoreError as exc:
        checks.append(_failure("database", exc, path))
    except DBAPIError as exc:
        checks.append(_failure("database", _translated(backend, exc), path))
    finally:
        engine.dispose()
    if path is not None:
        checks.extend(_wal_and_copies(path))
    return checks


def _file_checks(path: Path, checks: list[Check]) -> bool:
    """Directory and file: there, ours, private, writable, a SQLite file of ours."""
    directory = path.parent
    create = (
        "a store is created by the first command that writes (uniqc-tasks import, copy "
        "or demo) or by TaskStore() in Python; if it should exist, check --cache-dir / "
        f"{CACHE_DIR_ENV}"
    )
    if not directory.is_dir():
        checks.append(Check("directory", "fail", f"{directory} does not exist", create))
        return False
    info = directory.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not os.access(directory, os.W_OK | os.X_OK):
        checks.append(
            Check(
                "directory",
                "fail",
                f"{directory} is not writable by you (mode {mode:o}); SQLite writes its "
                "-wal and -shm files there",
                f"chmod u+rwx {shlex.quote(str(directory))}",
            )
        )
        return False
    if mode & stat.S_ISVTX:
        # A shared directory like /tmp: others cannot replace the file, which is 0600.
        checks.append(Check("directory", "ok", f"{directory} (mode {mode:o}, shared)"))
    elif mode & 0o077:
        checks.append(
            Check(
                "directory",
                "warn",
                f"{directory} has mode {mode:o}: other users can see into it",
                f"chmod 700 {shlex.quote(str(directory))}  (if only you use it; the store "
                "never changes a directory it did not create)",
            )
        )
    else:
        checks.append(Check("directory", "ok", f"{directory} (mode {mode:o})"))
    if not path.is_file() or path.stat().st_size == 0:
        checks.append(Check("file", "fail", f"no task store at {path}", create))
        return False
    mode = stat.S_IMODE(path.stat().st_mode)
    if not os.access(path, os.R_OK | os.W_OK):
        checks.append(
            Check(
                "file",
                "fail",
                f"{path} is not readable and writable by you (mode {mode:o})",
                f"chmod u+rw {shlex.quote(str(path))}",
            )
        )
        return False
    if mode & 0o077:
        checks.append(
            Check(
                "file",
                "warn",
                f"{path} has mode {mode:o}: other users may read the tasks",
                f"chmod 600 {shlex.quote(str(path))}  (the next open does it too)",
            )
        )
    else:
        checks.append(Check("file", "ok", f"{path} ({_size(path.stat().st_size)}, mode {mode:o})"))
    try:
        check_header(path)
    except TaskStoreError as exc:
        checks.append(_failure("header", exc, path))
        return False
    return True


def _schema_checks(backend: Backend, version: int, suffix: str) -> list[Check]:
    where = backend.describe()
    if version == 0:
        return [
            Check(
                "stamp",
                "fail",
                f"no task store in {where} (no schema stamp)",
                "a store is created by the first command that writes (uniqc-tasks import "
                "or copy) or TaskStore.from_url(...) in Python",
            )
        ]
    found = [Check("stamp", "ok", f"application id {APPLICATION_ID:#010x} (uniqc-taskstore)")]
    if version > CURRENT_SCHEMA_VERSION:
        found.append(
            Check(
                "schema",
                "fail",
                f"schema version {version} on disk, but this uniqc-taskstore knows only up "
                f"to {CURRENT_SCHEMA_VERSION}",
                "pip install -U uniqc-taskstore",
            )
        )
    elif version < CURRENT_SCHEMA_VERSION:
        steps = "; ".join(f"{s.version}: {s.summary}" for s in pending_steps(version))
        copy = " (a copy of the file is kept first)" if isinstance(backend, SqliteBackend) else ""
        found.append(
            Check(
                "schema",
                "warn",
                f"schema version {version} on disk, {CURRENT_SCHEMA_VERSION} in this code; "
                f"pending: {steps}",
                f"uniqc-tasks migrate{suffix}{copy}",
            )
        )
    else:
        found.append(Check("schema", "ok", f"schema version {version}, current"))
    return found


def _integrity(conn: Connection, path: Path, full: bool) -> Check:
    pragma = "integrity_check" if full else "quick_check"
    problems = [str(row) for row in conn.exec_driver_sql(f"PRAGMA {pragma}").scalars()]
    if problems == ["ok"]:
        return Check("integrity", "ok", f"PRAGMA {pragma}: ok")
    return Check(
        "integrity",
        "fail",
        f"PRAGMA {pragma} found: {'; '.join(problems[:3])}",
        _restore_fix(path),
    )


def _round_trip(backend: Backend, engine: Engine) -> Check:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
            started = time.perf_counter()
            conn.exec_driver_sql("SELECT 1").scalar()
            elapsed = time.perf_counter() - started
    except DBAPIError as exc:
        return Check(
            "server",
            "fail",
            " ".join(str(_translated(backend, exc)).split()),
            "start the server or fix the URL (host, port, user, password, database)",
        )
    return Check("server", "ok", f"reachable, round trip {elapsed * 1000:.1f} ms")


def _wal_and_copies(path: Path) -> list[Check]:
    found: list[Check] = []
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        size = wal.stat().st_size
        if size > WAL_WARN_BYTES:
            found.append(
                Check(
                    "wal",
                    "warn",
                    f"{wal} is {_size(size)}: a long-lived reader keeps SQLite from "
                    "folding it back into the file",
                    "end long-running processes that hold the store open; the next write "
                    "after they exit checkpoints it",
                )
            )
        else:
            found.append(Check("wal", "ok", f"WAL {_size(size)}"))
    copies = migration_backups(path)
    if copies:
        found.append(
            Check("copies", "ok", f"{len(copies)} kept before migrations, newest {copies[-1]}")
        )
    return found


def _failure(name: str, exc: TaskStoreError, path: Path | None) -> Check:
    message = " ".join(str(exc).split())
    if isinstance(exc, CorruptDatabaseError) and path is not None:
        fix = _restore_fix(path)
    elif isinstance(exc, ForeignDatabaseError):
        fix = f"point --cache-dir / --url / {URL_ENV} at your task store, or move that file away"
    elif isinstance(exc, SchemaTooNewError):
        fix = "pip install -U uniqc-taskstore"
    else:
        fix = "see the message"
    return Check(name, "fail", message, fix)


def _restore_fix(path: Path) -> str:
    quoted = shlex.quote(str(path))
    copies = migration_backups(path)
    intact = next((copy for copy in reversed(copies) if copy_is_intact(copy)), None)
    salvage = f"sqlite3 {quoted}.damaged .recover | sqlite3 {quoted}"
    if intact is not None:
        restore = f"cp {shlex.quote(str(intact))} {quoted}"
    else:
        damaged = (
            f"; the {len(copies)} kept before migrations fail integrity_check" if copies else ""
        )
        restore = (
            f"cp <your backup> {quoted} once uniqc-tasks doctor --url sqlite:///<your backup> "
            f"finds it intact (or salvage what is left: {salvage}){damaged}"
        )
    sidecars = " ".join(shlex.quote(str(path) + s) for s in SIDECAR_SUFFIXES)
    return f"stop every writer, mv {quoted} {quoted}.damaged, rm -f {sidecars}, then {restore}"


def _translated(backend: Backend, exc: DBAPIError) -> TaskStoreError:
    translated = backend.translate(exc)
    if isinstance(translated, TaskStoreError):
        return translated
    return DatabaseError(f"{backend.describe()}: {exc.orig!r}")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


__all__ = [
    "ROW_CHECKS",
    "BackupReport",
    "Check",
    "Location",
    "backup",
    "diagnose",
    "last_migration",
    "locate",
    "native_backup_command",
    "pending_migrations",
    "repair_counts",
    "schema_version_at",
    "server_backup_error",
]
