"""``TaskStore``: the repository every adapter and the CLI talk to."""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from . import statements as sql
from .backends import backend_for_url
from .backends.sqlite import DATABASE_FILENAME, SqliteBackend
from .engine import Database, database_for_url, release_database, shared_database
from .errors import (
    InvalidInputError,
    ShardNotFoundError,
    StoreLocationError,
    TaskStateError,
)
from .jsoncodec import prepare_json
from .model import (
    TERMINAL_STATUSES,
    ShardUpdate,
    TaskInfo,
    TaskShard,
    TaskStatus,
    aggregate_status,
    coerce_status,
    validate_id,
    validate_optional_text,
    validate_shard,
    validate_task,
)
from .schema import archived_task_shards, archived_tasks, task_shards, tasks
from .shard_writes import write_shards
from .status_refresh import refresh_task_statuses
from .timestamps import utc_now

DEFAULT_CACHE_DIR = Path.home() / ".uniqc" / "cache"
CACHE_DIR_ENV = "UNIQC_CACHE_DIR"
URL_ENV = "UNIQC_TASKSTORE_URL"
_BATCH_ROWS = 500
"""Ids per ``IN (...)`` list: well under every driver's bound-parameter limit."""


@dataclass(frozen=True)
class TaskPage:
    """A page of tasks and where the next one starts (None after the last page)."""

    tasks: builtins.list[TaskInfo]
    next_after: tuple[str, str] | None


class TaskStore:
    """Durable store of tasks and their shards.

    ``TaskStore()`` follows ``UNIQC_TASKSTORE_URL`` if set, else uses the SQLite file
    ``tasks.sqlite`` in ``UNIQC_CACHE_DIR`` or ``~/.uniqc/cache/``. ``cache_dir=`` picks
    the directory, :meth:`from_url` any SQLAlchemy URL, ``engine=`` an engine you
    built. Stores on the same location in one process share one pooled engine, so
    constructing one is cheap; all methods are safe from many threads and processes.
    ``create=False`` opens only a store that exists (else :class:`StoreNotFoundError`),
    creating no directory, file, schema or table: for tools that only read.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        schema: str | None = None,
        engine: Engine | None = None,
        create: bool = True,
    ) -> None:
        if sum(x is not None for x in (cache_dir, url, engine)) > 1:
            raise InvalidInputError("cache_dir/url/engine", None, "give at most one location")
        if cache_dir is None and url is None and engine is None:
            url = os.environ.get(URL_ENV) or None
        self._key: str | None = None
        if engine is not None:
            self._db = Database(backend_for_url(engine.url, schema=schema), engine)
        elif url is not None:
            self._key, self._db = database_for_url(url, schema)
        else:
            backend = SqliteBackend(_database_path(cache_dir))
            # Keyed like database_for_url, so sqlite:/// URLs share the same engine.
            self._key = backend.describe()
            self._db = shared_database(self._key, lambda: backend)
        try:
            self._db.ensure_ready(create=create)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, schema: str | None = None, create: bool = True) -> TaskStore:
        """A store on any SQLAlchemy URL: ``sqlite:///path/tasks.sqlite``,
        ``postgresql+psycopg://user@host/db`` (``schema=`` for a group's own schema) or
        ``mysql+pymysql://user@host/db``. ``create=False`` opens only an existing store
        (:class:`StoreNotFoundError` otherwise) and creates nothing."""
        return cls(url=url, schema=schema, create=create)

    @classmethod
    def in_memory(cls) -> TaskStore:
        """A private, empty store in memory, for adapters' unit tests."""
        store = cls.__new__(cls)
        store._key = None
        store._db = Database(SqliteBackend(None))
        store._db.ensure_ready()
        return store

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the tasks live, for people (a file path or a URL without password)."""
        return self._db.backend.describe()

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, or None for a server or in-memory database."""
        return getattr(self._db.backend, "path", None)

    @property
    def schema_version(self) -> int:
        """The schema version the database is at."""
        report = self._db.last_migration
        return report.to_version if report else 0

    def close(self) -> None:
        """Let go of the database; the last store on a location closes its connections."""
        if self._key is not None:
            release_database(self._key, self._db)
            self._key = None
        elif getattr(self, "_db", None) is not None and self._db.owns_engine:
            self._db.dispose()  # an engine=... passed in stays the caller's to dispose

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TaskStore({self.location})"

    # -- tasks -------------------------------------------------------------------------------

    def save(self, task: TaskInfo, shards: Sequence[TaskShard] | None = None) -> None:
        """Insert or update ``task`` (and ``shards``, all in one transaction).

        Stamps ``update_time`` on the row and on the object; keeps the first
        ``submit_time``. A final status already stored (success, failed, cancelled)
        is not replaced by a non-final one: a stale view cannot undo a result.
        Shards must belong to ``task``, hold each index once and not overlap its
        other shards. A task with shards then takes their aggregate status, except
        that a finished status (stored, or saved now, e.g. a cancel) is not replaced
        by an unfinished one unless the write gave the task a new platform job (a new
        shard, or a resubmission); the status stored is set on the object too (see
        README, "Statuses, results and errors").
        """
        self.save_many([task], shards)

    def save_many(
        self, tasks_: Sequence[TaskInfo], shards: Sequence[TaskShard] | None = None
    ) -> None:
        """:meth:`save` for many tasks (and shards of any of them) in one transaction."""
        for task in tasks_:
            validate_task(task)
        ids = {task.task_id for task in tasks_}
        shard_list = list(shards or ())
        for shard in shard_list:
            validate_shard(shard)
            if shard.uniqc_task_id not in ids:
                raise InvalidInputError(
                    "uniqc_task_id",
                    shard.uniqc_task_id,
                    "shard does not belong to a task being saved",
                )
        now = utc_now()
        task_rows = [sql.task_row(task) | {"update_time": now} for task in tasks_]
        shard_rows = [sql.shard_row(shard) | {"update_time": now} for shard in shard_list]

        touched = ids | {shard.uniqc_task_id for shard in shard_list}

        def work(conn: Connection) -> dict[str, TaskStatus]:
            if task_rows:
                conn.execute(sql.upsert_tasks(self._db.backend), task_rows)
            new_jobs = write_shards(conn, self._db.backend, shard_list, shard_rows)
            return refresh_task_statuses(conn, touched, now, new_jobs=new_jobs)

        settled = self._db.write(work)
        for task in tasks_:
            task.update_time = now
            task.status = settled[task.task_id]
        for shard in shard_list:
            shard.update_time = now

    def get(self, task_id: str) -> TaskInfo | None:
        """The task with this id, or None."""
        row = self._db.read(
            lambda conn: (
                conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
            )
        )
        return sql.task_from_row(row) if row else None

    def list(
        self,
        *,
        status: sql.Filter = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_results: bool = True,
    ) -> builtins.list[TaskInfo]:
        """Tasks newest first by submit time. ``status`` takes one status or several;
        ``backend`` matches a platform and its devices (``originq`` finds
        ``originq:WK_C180``). ``include_results=False`` skips loading result blobs."""
        return self._list(tasks, status, backend, limit, offset, include_results=include_results)

    def list_page(
        self,
        *,
        status: sql.Filter = None,
        backend: str | None = None,
        limit: int = 100,
        after: tuple[str, str] | None = None,
        include_results: bool = False,
    ) -> TaskPage:
        """One page of :meth:`list`, by keyset: pass the previous page's ``next_after``
        as ``after`` to continue. Unlike offsets, pages stay consistent while tasks
        are added, and each page costs the same however deep it is."""
        page = self._list(
            tasks, status, backend, limit, None, include_results=include_results, after=after
        )
        last = page[-1] if len(page) == limit and page else None
        return TaskPage(page, (last.submit_time, last.task_id) if last else None)

    def count(self, *, status: sql.Filter = None, backend: str | None = None) -> int:
        """Number of tasks matching the same filters as :meth:`list`."""
        stmt = sql.count_tasks(tasks, status=status, backend=backend)
        return int(self._db.read(lambda conn: conn.execute(stmt).scalar_one()))

    def delete(self, task_id: str) -> bool:
        """Delete a task and its shards; True if it existed."""
        return self._db.write(
            lambda conn: _deleted(
                conn,
                delete(task_shards).where(task_shards.c.uniqc_task_id == task_id),
                delete(tasks).where(tasks.c.task_id == task_id),
            )
        )

    def clear_completed(
        self, terminal_statuses: Iterable[TaskStatus | str] = TERMINAL_STATUSES
    ) -> int:
        """Delete the tasks in these statuses (default: every final one) with their
        shards; return how many tasks went."""
        wanted = sorted({coerce_status(s, "terminal_statuses").value for s in terminal_statuses})
        if not wanted:
            return 0
        doomed = select(tasks.c.task_id).where(tasks.c.status.in_(wanted))

        def work(conn: Connection) -> int:
            ids = builtins.list(conn.execute(doomed.with_for_update()).scalars())
            for batch in _batches(ids):
                conn.execute(delete(task_shards).where(task_shards.c.uniqc_task_id.in_(batch)))
                conn.execute(delete(tasks).where(tasks.c.task_id.in_(batch)))
            return len(ids)

        return self._db.write(work)

    def clear_all(self) -> None:
        """Remove every task, live and archived. On SQLite the file (and its -wal/-shm)
        is deleted; this store, and any other on the same location, keeps working on
        a fresh file."""
        self._db.clear_all()
        self._db.ensure_ready()

    # -- shards ------------------------------------------------------------------------------

    def save_shard(self, shard: TaskShard) -> None:
        """Insert or update one shard by (task id, index); its task must exist.

        A new ``platform_task_id`` for an existing index is a resubmission and
        replaces the shard; a report for the same platform job never turns a final
        status back into a non-final one (see :meth:`update_shard`). The task's
        status is recomputed from its shards in the same transaction (a new shard or a
        resubmission reopens a finished task) and its ``update_time`` stamped.
        """
        self.save_shards([shard])

    def save_shards(self, shards: Sequence[TaskShard]) -> None:
        """:meth:`save_shard` for many shards (of any tasks), in one transaction."""
        for shard in shards:
            validate_shard(shard)
        now = utc_now()
        rows = [sql.shard_row(shard) | {"update_time": now} for shard in shards]

        def work(conn: Connection) -> None:
            new_jobs = write_shards(conn, self._db.backend, shards, rows)
            parents = {shard.uniqc_task_id for shard in shards}
            refresh_task_statuses(conn, parents, now, new_jobs=new_jobs, stamp=True)

        self._db.write(work)
        for shard in shards:
            shard.update_time = now

    def update_shard(
        self,
        uniqc_task_id: str,
        shard_index: int,
        *,
        status: TaskStatus | str,
        result: Any = None,
        error_message: str | None = None,
    ) -> ShardUpdate:
        """Record a poll of one shard and recompute its task's status, atomically.

        Under the write lock: the shard takes ``status`` (and ``result`` /
        ``error_message`` when given), then the task's status becomes the aggregate
        of its shards, unless that would reopen a finished task, and both are
        stamped. A report that would turn a final status back into a non-final one
        is stale and changes nothing (``applied`` is False). A deliberate
        resubmission goes through :meth:`save_shard` with a new ``platform_task_id``.
        The cost does not grow with the task's number of shards.
        """
        new_status = coerce_status(status)
        validate_optional_text(error_message, "error_message")
        validate_id(uniqc_task_id, "uniqc_task_id")
        key = _shard_key(uniqc_task_id, shard_index)
        prepared = prepare_json(result, "result")

        def work(conn: Connection) -> ShardUpdate:
            parent = conn.execute(
                select(tasks.c.status).where(tasks.c.task_id == uniqc_task_id).with_for_update()
            ).first()
            current = conn.execute(select(task_shards.c.status).where(*key)).scalar()
            if parent is None or current is None:
                raise ShardNotFoundError(f"no shard {shard_index} of task {uniqc_task_id!r}")
            current = coerce_status(current)
            if current.is_terminal and not new_status.is_terminal:
                return ShardUpdate(False, current, coerce_status(parent.status))
            now = utc_now()
            changes: dict[str, Any] = {"status": new_status.value, "update_time": now}
            if prepared is not None:
                changes["result_json"] = prepared
            if error_message is not None:
                changes["error_message"] = error_message
            conn.execute(update(task_shards).where(*key).values(changes))
            settled = refresh_task_statuses(conn, [uniqc_task_id], now, stamp=True)
            return ShardUpdate(True, new_status, settled[uniqc_task_id])

        return self._db.write(work)

    def get_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """The task's shards in index order (empty if none)."""
        return self._shards(task_shards, uniqc_task_id)

    def get_shard_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> TaskShard | None:
        """The shard of a platform job id. When several match (platforms reuse ids),
        the newest submitted wins; ``backend`` narrows to one platform or device."""
        if backend is not None and not isinstance(backend, str):
            raise InvalidInputError("backend", backend, "must be a string or None")
        stmt = sql.select_shards_by_platform_id(platform_task_id, backend).limit(1)
        row = self._db.read(lambda conn: conn.execute(stmt).mappings().first())
        return sql.shard_from_row(row) if row else None

    def find_uniqc_id_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> str | None:
        """The task id owning a platform job id (same choice as
        :meth:`get_shard_by_platform_id`), or None."""
        shard = self.get_shard_by_platform_id(platform_task_id, backend=backend)
        return shard.uniqc_task_id if shard else None

    def delete_shards(self, uniqc_task_id: str) -> int:
        """Delete a task's shards (not the task); return how many."""
        stmt = delete(task_shards).where(task_shards.c.uniqc_task_id == uniqc_task_id)
        return self._db.write(lambda conn: int(conn.execute(stmt).rowcount))

    @staticmethod
    def aggregate_status(shards: Iterable[TaskShard | TaskStatus | str]) -> TaskStatus:
        """A task's status from its shards (or their statuses); see
        :func:`uniqc_taskstore.model.aggregate_status`."""
        return aggregate_status(s.status if isinstance(s, TaskShard) else s for s in shards)

    # -- archive -----------------------------------------------------------------------------

    def archive(self, task_id: str) -> bool:
        """Move a task (finished or not) and its shards to the archive, stamped
        ``archived_at``; False if no such task. A later :meth:`update_shard` for it
        raises :class:`ShardNotFoundError`; :meth:`restore` brings it back."""

        def work(conn: Connection) -> bool:
            found = conn.execute(
                select(tasks.c.task_id).where(tasks.c.task_id == task_id).with_for_update()
            ).first()
            if found is None:
                return False
            for stmt in sql.archive_statements(task_id, utc_now()):
                conn.execute(stmt)
            return True

        return self._db.write(work)

    def restore(self, task_id: str) -> bool:
        """Move an archived task and its shards back to the live tables; False if not
        archived. Raises :class:`TaskStateError` if a live task has the same id (also
        when a concurrent save creates it while the restore runs)."""

        def work(conn: Connection) -> bool:
            found = conn.execute(
                select(archived_tasks.c.task_id)
                .where(archived_tasks.c.task_id == task_id)
                .with_for_update()
            ).first()
            if found is None:
                return False
            live = conn.execute(select(tasks.c.task_id).where(tasks.c.task_id == task_id)).first()
            if live is not None:
                raise _live_twin(task_id)
            try:
                for stmt in sql.restore_statements(task_id):
                    conn.execute(stmt)
            except IntegrityError as exc:  # a save created the live task after our check
                raise _live_twin(task_id) from exc
            return True

        return self._db.write(work)

    def get_archived(self, task_id: str) -> TaskInfo | None:
        """The archived task with this id (``archived_at`` set), or None."""
        row = self._db.read(
            lambda conn: (
                conn.execute(select(archived_tasks).where(archived_tasks.c.task_id == task_id))
                .mappings()
                .first()
            )
        )
        return sql.task_from_row(row) if row else None

    def get_archived_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """An archived task's shards in index order."""
        return self._shards(archived_task_shards, uniqc_task_id)

    def list_archived(
        self,
        *,
        status: sql.Filter = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_results: bool = True,
    ) -> builtins.list[TaskInfo]:
        """Archived tasks newest first by submit time, with :meth:`list`'s filters."""
        return self._list(
            archived_tasks, status, backend, limit, offset, include_results=include_results
        )

    def count_archived(self, *, status: sql.Filter = None, backend: str | None = None) -> int:
        """Number of archived tasks matching the filters."""
        stmt = sql.count_tasks(archived_tasks, status=status, backend=backend)
        return int(self._db.read(lambda conn: conn.execute(stmt).scalar_one()))

    def delete_archived(self, task_id: str) -> bool:
        """Delete an archived task and its shards; True if it existed."""
        return self._db.write(
            lambda conn: _deleted(
                conn,
                delete(archived_task_shards).where(archived_task_shards.c.uniqc_task_id == task_id),
                delete(archived_tasks).where(archived_tasks.c.task_id == task_id),
            )
        )

    def _list(
        self,
        table: Any,
        status: sql.Filter,
        backend: str | None,
        limit: int | None,
        offset: int | None,
        *,
        include_results: bool,
        after: tuple[str, str] | None = None,
    ) -> builtins.list[TaskInfo]:
        _check_page(limit, offset)
        stmt = sql.select_tasks(
            table,
            status=status,
            backend=backend,
            limit=limit,
            offset=offset,
            include_results=include_results,
            after=after,
        )
        rows = self._db.read(lambda conn: conn.execute(stmt).mappings().all())
        return [sql.task_from_row(row) for row in rows]

    def _shards(self, table: Any, uniqc_task_id: str) -> builtins.list[TaskShard]:
        stmt = (
            select(table)
            .where(table.c.uniqc_task_id == uniqc_task_id)
            .order_by(table.c.shard_index)
        )
        rows = self._db.read(lambda conn: conn.execute(stmt).mappings().all())
        return [sql.shard_from_row(row) for row in rows]


def _live_twin(task_id: str) -> TaskStateError:
    return TaskStateError(
        f"task {task_id!r} exists both live and archived; delete or archive the live one first"
    )


def _shard_key(uniqc_task_id: str, shard_index: int) -> tuple[Any, Any]:
    return (task_shards.c.uniqc_task_id == uniqc_task_id, task_shards.c.shard_index == shard_index)


def _deleted(conn: Connection, children: Any, parent: Any) -> bool:
    conn.execute(children)
    return bool(conn.execute(parent).rowcount)


def _database_path(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        env = os.environ.get(CACHE_DIR_ENV)
        directory = Path(env).expanduser() if env else DEFAULT_CACHE_DIR
    else:
        directory = Path(cache_dir).expanduser()
    try:
        return directory.resolve() / DATABASE_FILENAME
    except OSError as exc:
        raise StoreLocationError(
            f"cannot use {directory} for the task store ({exc.strerror}); choose another "
            f"directory with {CACHE_DIR_ENV} or TaskStore(cache_dir=...)."
        ) from exc


def _check_page(limit: int | None, offset: int | None) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidInputError(name, value, "must be a non-negative integer or None")


def _batches(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _BATCH_ROWS):
        yield items[start : start + _BATCH_ROWS]
