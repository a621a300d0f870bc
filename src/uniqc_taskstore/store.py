"""``TaskStore``: the repository every adapter and the CLI talk to."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Unpack, overload

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from . import bulk, change_log, edits, queries, retention, server_writes, sizes, tags
from . import changes as feed
from . import statements as sql
from .backends import backend_for_url
from .backends.base import Backend
from .backends.fork import guard_after_fork
from .backends.sqlite import DATABASE_FILENAME, SqliteBackend
from .changes import Change, ChangeFilter, ChangePage
from .engine import (
    Database,
    Statements,
    caller_engine_database,
    database_for_url,
    release_caller_engine_database,
    release_database,
    shared_database,
)
from .errors import (
    CorruptRowError,
    InvalidInputError,
    ShardNotFoundError,
    StoreLocationError,
)
from .filters import ARCHIVED, LIVE, FilterArgs, OrderBy, Sort, TaskFilter, TaskTables, make_filter
from .jsoncodec import prepare_json
from .model import (
    TERMINAL_STATUSES,
    BulkResult,
    RetentionResult,
    ShardUpdate,
    TaskInfo,
    TaskPage,
    TaskShard,
    TaskStatus,
    TaskSummary,
    aggregate_status,
    coerce_status,
    validate_callback,
    validate_count,
    validate_flag,
    validate_id,
    validate_items,
    validate_key,
    validate_names,
    validate_optional_key,
    validate_optional_text,
    validate_page,
    validate_path,
    validate_shard,
    validate_statuses,
    validate_tags,
    validate_task,
)
from .queries import CountField
from .retries import retrying_unknown_outcome
from .schema import archived_task_shards, archived_tasks, task_shards, tasks
from .shard_writes import write_shards
from .status_refresh import (
    read_write_state,
    refresh_task_statuses,
    settle_after_shard_update,
    settle_saved,
)
from .timestamps import utc_now
from .twins import archived_twin, live_twin

DEFAULT_CACHE_DIR = Path.home() / ".uniqc" / "cache"
CACHE_DIR_ENV = "UNIQC_CACHE_DIR"
URL_ENV = "UNIQC_TASKSTORE_URL"
_BATCH_ROWS = 500
"""Ids per ``IN (...)`` list: well under every driver's bound-parameter limit."""

OnCorrupt = Callable[[CorruptRowError], object]
"""Called with each stored row a listing cannot read, which is then skipped."""


class TaskStore:
    """Durable store of tasks and their shards.

    ``TaskStore()`` follows ``UNIQC_TASKSTORE_URL`` if set, else uses the SQLite file
    ``tasks.sqlite`` in ``UNIQC_CACHE_DIR`` or ``~/.uniqc/cache/``. ``cache_dir=`` picks
    the directory, :meth:`from_url` any SQLAlchemy URL, ``engine=`` an engine you
    built. Stores on the same location in one process share one pooled engine, so
    constructing one is cheap; all methods are safe from many threads and processes.
    ``create=False`` opens only a store that exists (else :class:`StoreNotFoundError`),
    creating no directory, file, schema or table: for tools that only read.

    Every method raises only :class:`TaskStoreError` subclasses. An argument of the
    wrong type or out of range is an :class:`InvalidInputError` (also a
    ``ValueError``) naming it, raised before the database is touched. The methods
    taking filter keywords (``**criteria``) raise it too for a keyword that is no
    :class:`TaskFilter` field (``statuses=`` for ``status=``), listing the known ones.
    An exception raised by the caller's own iterable or ``on_corrupt`` callback comes
    out unchanged.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        url: str | URL | None = None,
        schema: str | None = None,
        engine: Engine | None = None,
        create: bool = True,
    ) -> None:
        if sum(x is not None for x in (cache_dir, url, engine)) > 1:
            raise InvalidInputError("cache_dir/url/engine", None, "give at most one location")
        validate_path(cache_dir, "cache_dir")
        if url is not None and not isinstance(url, (str, URL, os.PathLike)):
            raise InvalidInputError("url", url, "must be a database URL string or None")
        validate_optional_key(schema, "schema")
        validate_flag(create, "create")
        if engine is not None and not isinstance(engine, Engine):
            raise InvalidInputError("engine", engine, "must be a SQLAlchemy Engine or None")
        source = "url"
        if cache_dir is None and url is None and engine is None:
            url = os.environ.get(URL_ENV) or None
            source = URL_ENV
        _check_schema(schema, sqlite_file=url is None and engine is None)
        self._key: str | None = None
        self._caller_engine = engine is not None
        self._schema = schema
        if engine is not None:
            guard_after_fork(engine)
            self._db = caller_engine_database(engine, schema)
        elif url is not None and _is_in_memory(backend_for_url(url, schema=schema, source=source)):
            self._db = Database(SqliteBackend(None))  # private, like in_memory()
        elif url is not None:
            self._key, self._db = database_for_url(url, schema, source=source)
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
    def from_url(
        cls, url: str | URL, *, schema: str | None = None, create: bool = True
    ) -> TaskStore:
        """A store on any SQLAlchemy URL: ``sqlite:///path/tasks.sqlite``,
        ``postgresql://user@host/db`` (psycopg 3; ``schema=`` for a group's own schema)
        or ``mysql://user@host/db`` / ``mariadb://…`` (PyMySQL). A file path, a URL
        that does not parse or a driver that is not installed raise a
        :class:`TaskStoreError` saying what to write or install; an unreachable server
        raises :class:`DatabaseConnectionError` after ``connect_timeout`` (10 s unless
        the URL sets it). ``create=False`` opens only an existing store
        (:class:`StoreNotFoundError` otherwise) and creates nothing."""
        if not isinstance(url, (str, URL, os.PathLike)):
            raise InvalidInputError("url", type(url).__name__, "give a database URL as text")
        return cls(url=url, schema=schema, create=create)

    @classmethod
    def in_memory(cls) -> TaskStore:
        """A private, empty store in memory, for adapters' unit tests."""
        return cls(url="sqlite://")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the tasks live, for people (a file path, or a URL with every credential
        masked)."""
        return self._db.backend.describe()

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, or None for a server or in-memory database."""
        return getattr(self._db.backend, "path", None)

    @property
    def cache_dir(self) -> Path | None:
        """The directory holding the SQLite file (also for a ``sqlite:///`` URL), or None
        for a server or in-memory database."""
        path = self.db_path
        return path.parent if path is not None else None

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
        elif self._caller_engine:
            # The last store on a caller's engine leaves it as it found it.
            release_caller_engine_database(self._db, self._schema)
            self._caller_engine = False
        elif self._db.owns_engine:
            self._db.dispose()

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

    def storage_bytes(self) -> int | None:
        """Bytes the store takes on disk: the SQLite file and its WAL, or the store's
        tables and indexes on a server; None for an in-memory store."""
        return sizes.storage_bytes(self._db)

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
        tasks_ = validate_items(tasks_, "tasks")
        for task in tasks_:
            validate_task(task)
        ids = {task.task_id for task in tasks_}
        shard_list = [] if shards is None else validate_items(shards, "shards")
        for shard in shard_list:
            validate_shard(shard)
            if shard.uniqc_task_id not in ids:
                raise InvalidInputError(
                    "uniqc_task_id",
                    shard.uniqc_task_id,
                    "shard does not belong to a task being saved",
                )
        task_rows = [sql.task_row(task) for task in tasks_]
        shard_rows = [sql.shard_row(shard) for shard in shard_list]

        incoming: dict[str, list[TaskStatus]] = {}
        for shard in shard_list:
            incoming.setdefault(shard.uniqc_task_id, []).append(shard.status)

        def work(run: Statements) -> tuple[dict[str, TaskStatus], str]:
            # Stamped inside the transaction, afresh on each attempt: on SQLite it holds
            # the write lock; elsewhere the upsert keeps the later of this and the stored.
            now = _stamp(task_rows, shard_rows)
            if not task_rows:
                return {}, now
            run.run_many(sql.upsert_tasks(self._db.backend), task_rows)
            # Read after the upsert, which locked the rows: nothing changes them now.
            state = read_write_state(run, ids)
            tagged = {task.task_id: task.tags for task in tasks_}
            tags.replace_tags(run, tagged, {i for i, known in state.items() if known.has_tags})
            with_shards = {i for i, known in state.items() if known.has_shards}
            new_jobs = write_shards(run, self._db.backend, shard_list, shard_rows, with_shards)
            settled = settle_saved(run, state, incoming, now, new_jobs=new_jobs)
            change_log.run_record(run, "saved", list(ids), now)
            return settled, now

        if len(tasks_) == 1 and self._db.backend.batched_writes():
            only = tasks_[0]
            status, now = server_writes.save(self._db, only, task_rows[0], shard_list, shard_rows)
            settled = {only.task_id: status}
        else:
            settled, now = self._db.write_statements(work, idempotent=True)
        for task, row in zip(tasks_, task_rows, strict=True):
            task.update_time = now
            task.name = row["name"]
            task.status = settled[task.task_id]
        for shard in shard_list:
            shard.update_time = now

    def get(self, task_id: str) -> TaskInfo | None:
        """The task with this id (with its tags), or None."""
        validate_key(task_id, "task_id")
        return queries.fetch_task(self._db, LIVE, task_id)

    def list(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        include_results: bool = True,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> builtins.list[TaskInfo]:
        """Tasks matching a :class:`TaskFilter` (or its fields as keywords: ``status``,
        ``backend``, ``submitted_after``, ``tags``, ``name``, ``search``, ...), newest
        first by submit time. ``backend`` matches a platform and its devices
        (``originq`` finds ``originq:WK_C180``). ``limit=None`` or a negative limit means
        all (as in the original). ``include_results=False`` skips loading result blobs.
        A stored row that cannot be read raises :class:`CorruptRowError`, unless
        ``on_corrupt`` is given: then that row is skipped and handed to it. Filter
        keywords are checked as :class:`TaskFilter` checks its fields (a naive time
        bound is an :class:`InvalidInputError`, as is a keyword no filter has)."""
        return self._list(
            LIVE,
            filter,
            criteria,
            limit,
            offset,
            include_results,
            Sort(order_by, descending),
            on_corrupt,
        )

    def list_page(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int = 100,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        cursor: str | None = None,
        after: tuple[str, str] | None = None,
        include_results: bool = False,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> TaskPage:
        """One keyset page of the filter's tasks in ``order_by`` order (ties by id). Pass
        the previous page's ``next_cursor`` as ``cursor`` to continue (``next_after`` as
        ``after`` still works for the default order). Pages stay consistent while tasks
        are added, and each costs the same however deep it is (for everything that
        changed since a point, use :meth:`changes`).
        ``on_corrupt`` as in :meth:`list`. :class:`InvalidInputError` for a cursor this
        store did not make or made for another ``order_by``/``descending``, for both
        ``cursor`` and ``after``, and for ``limit=0``."""
        validate_callback(on_corrupt, "on_corrupt")
        return queries.page(
            self._db,
            LIVE,
            make_filter(filter, criteria),
            Sort(order_by, descending),
            limit=limit,
            cursor=cursor,
            after=after,
            include_results=include_results,
            on_corrupt=on_corrupt,
        )

    def count(self, filter: TaskFilter | None = None, **criteria: Unpack[FilterArgs]) -> int:
        """Number of tasks matching the same filters as :meth:`list`."""
        f = make_filter(filter, criteria)
        return self._db.read_one(lambda conn: queries.count(conn, LIVE, f))

    def count_by(
        self,
        field: CountField,
        filter: TaskFilter | None = None,
        *,
        archived: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> dict[str, int]:
        """Matching tasks per ``"status"``, ``"backend"`` or ``"platform"`` (the backend
        before ``:``), in one GROUP BY query; values with no task are absent. Another
        ``field`` is an :class:`InvalidInputError`."""
        f = make_filter(filter, criteria)
        side = _side(archived)
        return self._db.read_one(lambda conn: queries.count_by(conn, side, field, f))

    def summaries(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        archived: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> builtins.list[TaskSummary]:
        """What a list view shows of the matching tasks (name, status, times, tags,
        ``shard_count``, ``has_result``, ...) without reading any result or metadata."""
        limit = _check_page(limit, offset)
        f, sort, side = make_filter(filter, criteria), Sort(order_by, descending), _side(archived)
        return queries.summaries(self._db, side, f, sort, limit=limit, offset=offset)

    @overload
    def iter_tasks(
        self,
        filter: TaskFilter | None = None,
        *,
        include_shards: Literal[False] = False,
        include_results: bool = True,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        archived: bool = False,
        batch_size: int = 500,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> Iterator[TaskInfo]: ...

    @overload
    def iter_tasks(
        self,
        filter: TaskFilter | None = None,
        *,
        include_shards: Literal[True],
        include_results: bool = True,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        archived: bool = False,
        batch_size: int = 500,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> Iterator[tuple[TaskInfo, builtins.list[TaskShard]]]: ...

    def iter_tasks(
        self,
        filter: TaskFilter | None = None,
        *,
        include_shards: bool = False,
        include_results: bool = True,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        archived: bool = False,
        batch_size: int = 500,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> Iterator[Any]:
        """Every matching task in order, read ``batch_size`` at a time by keyset (each
        batch its own snapshot; see README, "Consistency"), so memory stays flat over
        millions of rows. With
        ``include_shards=True`` it yields ``(task, shards)`` pairs. The arguments are
        checked when it is called (:class:`InvalidInputError`, e.g. for a ``batch_size``
        outside 1 to 2**31 - 1), not when the first task is read. ``on_corrupt`` as in
        :meth:`list`."""
        return queries.iter_tasks(
            self._db,
            _side(archived),
            make_filter(filter, criteria),
            Sort(order_by, descending),
            include_shards=include_shards,
            include_results=include_results,
            batch_size=batch_size,
            on_corrupt=on_corrupt,
        )

    def delete(self, task_id: str) -> bool:
        """Delete a task and its shards; True if it existed."""
        validate_key(task_id, "task_id")
        return self._db.write(
            lambda conn: _deleted(
                conn,
                "deleted",
                task_id,
                delete(task_shards).where(task_shards.c.uniqc_task_id == task_id),
                delete(tasks).where(tasks.c.task_id == task_id),
            )
        )

    def clear_completed(
        self, terminal_statuses: Iterable[TaskStatus | str] = TERMINAL_STATUSES
    ) -> int:
        """Delete the tasks in these statuses (default: every final one) with their
        shards; return how many tasks went."""
        wanted = sorted(
            {s.value for s in validate_statuses(terminal_statuses, "terminal_statuses")}
        )
        if not wanted:
            return 0
        doomed = select(tasks.c.task_id).where(tasks.c.status.in_(wanted))

        def work(conn: Connection) -> int:
            ids = builtins.list(conn.execute(doomed.with_for_update()).scalars())
            for batch in _batches(ids):
                conn.execute(delete(task_shards).where(task_shards.c.uniqc_task_id.in_(batch)))
                conn.execute(delete(tasks).where(tasks.c.task_id.in_(batch)))
            change_log.record(conn, "deleted", ids, utc_now())
            return len(ids)

        return self._db.write(work)

    def clear_all(self) -> None:
        """Delete every task and shard, live and archived, in one transaction (all or
        nothing; :class:`DatabaseBusyError` means nothing was deleted). The database
        itself stays: on SQLite the same file, then vacuumed, so every store in every
        process keeps working on it and sees the deletion."""
        self._db.clear_all()

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
        shards = validate_items(shards, "shards")
        for shard in shards:
            validate_shard(shard)
        rows = [sql.shard_row(shard) for shard in shards]
        parents = sorted({shard.uniqc_task_id for shard in shards})

        def work(run: Statements) -> str:
            now = _stamp([], rows)  # in the transaction, afresh on each attempt
            new_jobs = write_shards(run, self._db.backend, shards, rows)
            refresh_task_statuses(run, parents, now, new_jobs=new_jobs, stamp=True)
            change_log.run_record(run, "updated", parents, now)
            return now

        if len(parents) == 1 and self._db.backend.batched_writes():
            now = server_writes.save_shards(self._db, parents[0], shards, rows)
        else:
            now = self._db.write_statements(work, idempotent=True)
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
        validate_count(shard_index, "shard_index")
        prepared = prepare_json(result, "result")
        key = {"key_task": uniqc_task_id, "key_index": shard_index}
        report = sql.update_shard_report(
            result=prepared is not None,
            error=error_message is not None,
            # A non-final report does not replace a stored final status (stale poll).
            guarded=not new_status.is_terminal,
        )

        if self._db.backend.batched_writes():
            return server_writes.update_shard(
                self._db, uniqc_task_id, shard_index, new_status, prepared, error_message
            )

        def _one_status(rows: builtins.list[dict[str, Any]]) -> TaskStatus | None:
            return coerce_status(rows[0]["status"]) if rows else None

        def work(run: Statements) -> ShardUpdate:
            missing = ShardNotFoundError(f"no shard {shard_index} of task {uniqc_task_id!r}")
            parent = None
            if not run.exclusive:
                # The parent's lock first: every shard writer takes it, so the statements
                # after it see every other shard's latest status (no lost aggregate).
                # (A transaction that holds the database's write lock needs none.)
                parent = _one_status(run.rows(sql.lock_task_status(), {"task_id": uniqc_task_id}))
                if parent is None:
                    raise missing
            now = utc_now()
            values = key | {"new_status": new_status.value, "now": now}
            if prepared is not None:
                values["new_result"] = prepared
            if error_message is not None:
                values["new_error"] = error_message
            if run.run(report, values) != 1:
                current = _one_status(run.rows(sql.shard_status(), key))
                if parent is None:
                    parent = _one_status(
                        run.rows(sql.lock_task_status(), {"task_id": uniqc_task_id})
                    )
                if current is None or parent is None:
                    raise missing
                return ShardUpdate(False, current, parent)
            settled = settle_after_shard_update(run, uniqc_task_id, now)
            if settled is None:  # a shard without its task (files from older versions)
                raise missing  # rolls the shard's update back
            change_log.run_record(run, "updated", [uniqc_task_id], now)
            return ShardUpdate(True, new_status, settled)

        return self._db.write_statements(work, idempotent=True)

    def get_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """The task's shards in index order (empty if none)."""
        return self._shards(task_shards, uniqc_task_id)

    def get_shard_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> TaskShard | None:
        """The shard of a platform job id. When several match (platforms reuse ids),
        the newest submitted wins; ``backend`` narrows to one platform or device."""
        validate_key(platform_task_id, "platform_task_id")
        validate_optional_key(backend, "backend")
        return queries.shard_by_platform_id(self._db, platform_task_id, backend)

    def find_uniqc_id_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> str | None:
        """The task id owning a platform job id (same choice as
        :meth:`get_shard_by_platform_id`), or None."""
        shard = self.get_shard_by_platform_id(platform_task_id, backend=backend)
        return shard.uniqc_task_id if shard else None

    def delete_shards(self, uniqc_task_id: str) -> int:
        """Delete a task's shards (not the task); return how many."""
        validate_key(uniqc_task_id, "uniqc_task_id")
        stmt = delete(task_shards).where(task_shards.c.uniqc_task_id == uniqc_task_id)

        def work(conn: Connection) -> int:
            gone = int(conn.execute(stmt).rowcount)
            if gone:
                change_log.record(conn, "updated", [uniqc_task_id], utc_now())
            return gone

        return self._db.write(work)

    @staticmethod
    def aggregate_status(shards: Iterable[TaskShard | TaskStatus | str]) -> TaskStatus:
        """A task's status from its shards (or their statuses); see
        :func:`uniqc_taskstore.model.aggregate_status`."""
        items = validate_items(shards, "shards")
        return aggregate_status(s.status if isinstance(s, TaskShard) else s for s in items)

    # -- archive -----------------------------------------------------------------------------

    def archive(self, task_id: str) -> bool:
        """Move a task (finished or not) and its shards to the archive, stamped
        ``archived_at``; False if no such task. Raises :class:`TaskStateError` if the
        archive already holds a task with this id (an archived task is never replaced).
        A later :meth:`update_shard` for it raises :class:`ShardNotFoundError`;
        :meth:`restore` brings it back."""
        validate_key(task_id, "task_id")
        if self._db.backend.batched_writes():
            return server_writes.archive(self._db, task_id)

        def work(conn: Connection) -> bool:
            found = conn.execute(
                select(tasks.c.task_id).where(tasks.c.task_id == task_id).with_for_update()
            ).first()
            if found is None:
                # Repeating an archive that may have been applied: archived is done.
                return retrying_unknown_outcome() and _archived(conn, task_id)
            # Read after the lock (every writer of the task's rows takes it): current.
            contents = conn.execute(sql.archive_contents(task_id)).mappings().one()
            if contents["archived_task"]:
                raise archived_twin(task_id)
            now = utc_now()
            for stmt in sql.archive_one_statements(task_id, now, contents):
                conn.execute(stmt)
            change_log.record(conn, "archived", [task_id], now)
            return True

        return self._db.write(work, idempotent=True)

    def restore(self, task_id: str) -> bool:
        """Move an archived task and its shards back to the live tables; False if not
        archived. Raises :class:`TaskStateError` if a live task has the same id (also
        when a concurrent save creates it while the restore runs)."""
        validate_key(task_id, "task_id")

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
                raise live_twin(task_id)
            try:
                for stmt in sql.restore_statements(task_id):
                    conn.execute(stmt)
            except IntegrityError as exc:  # a save created the live task after our check
                raise live_twin(task_id) from exc
            change_log.record(conn, "restored", [task_id], utc_now())
            return True

        return self._db.write(work)

    def get_archived(self, task_id: str) -> TaskInfo | None:
        """The archived task with this id (``archived_at`` set, with its tags), or None."""
        validate_key(task_id, "task_id")
        return queries.fetch_task(self._db, ARCHIVED, task_id)

    def get_archived_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """An archived task's shards in index order."""
        return self._shards(archived_task_shards, uniqc_task_id)

    def list_archived(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        include_results: bool = True,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        on_corrupt: OnCorrupt | None = None,
        **criteria: Unpack[FilterArgs],
    ) -> builtins.list[TaskInfo]:
        """Archived tasks newest first by submit time, with :meth:`list`'s filters and
        ``on_corrupt``."""
        return self._list(
            ARCHIVED,
            filter,
            criteria,
            limit,
            offset,
            include_results,
            Sort(order_by, descending),
            on_corrupt,
        )

    def count_archived(
        self, filter: TaskFilter | None = None, **criteria: Unpack[FilterArgs]
    ) -> int:
        """Number of archived tasks matching the filters."""
        f = make_filter(filter, criteria)
        return self._db.read_one(lambda conn: queries.count(conn, ARCHIVED, f))

    def delete_archived(self, task_id: str) -> bool:
        """Delete an archived task and its shards; True if it existed."""
        validate_key(task_id, "task_id")
        return self._db.write(
            lambda conn: _deleted(conn, "purged", task_id, *sql.delete_archived_statements(task_id))
        )

    # -- tags and edits ----------------------------------------------------------------------

    def set_tags(self, task_id: str, tags_: Mapping[str, str]) -> dict[str, str]:
        """Add or overwrite these tags of a live task, keeping its others, atomically;
        return its tags afterwards. :class:`TaskNotFoundError` if there is no such task;
        :class:`InvalidInputError` unless ``tags_`` maps non-empty strings (at most 255
        characters, no NUL) to strings (at most 255 characters, no NUL)."""
        validate_id(task_id, "task_id")
        checked = validate_tags(tags_)
        return self._db.write(lambda conn: tags.set_tags(conn, task_id, checked))

    def remove_tags(self, task_id: str, keys: Iterable[str]) -> dict[str, str]:
        """Remove these tag keys from a live task (absent ones are ignored), atomically;
        return its tags afterwards. ``keys`` is any iterable of keys but one string
        (:class:`InvalidInputError`, as for a key that is not a usable id)."""
        validate_id(task_id, "task_id")
        wanted = validate_names(keys, "keys")
        return self._db.write(lambda conn: tags.remove_tags(conn, task_id, wanted))

    def update_metadata(
        self, task_id: str, patch: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Merge ``patch`` into a live task's metadata and drop the ``remove`` keys, under
        the write lock, so concurrent patches all survive; return the new metadata.
        :class:`InvalidInputError` for a patch that is not a mapping with string keys,
        a value that cannot be stored as JSON, or ``remove`` that is not an iterable of
        strings (one string is refused, not read as its characters)."""
        validate_id(task_id, "task_id")
        checked, keys = edits.check_patch(patch, remove)
        return self._db.write(lambda conn: edits.update_metadata(conn, task_id, checked, keys))

    def finalize(self, task_id: str) -> TaskInfo:
        """Once every shard is final, write the per-circuit results
        (:func:`assemble_results`, None for circuits of shards without a result) into
        the task's ``result`` and the shards' errors into its ``error_message``
        (``"shard 1: ...; shard 3: ..."``; left as it was when no shard has one), in
        one transaction; return the task. :class:`TaskStateError` while a shard is
        unfinished or when the task has no shards."""
        validate_id(task_id, "task_id")
        return self._db.write(lambda conn: edits.finalize(conn, task_id))

    # -- bulk and retention -------------------------------------------------------------------

    def archive_many(self, task_ids: Iterable[str]) -> BulkResult:
        """Archive these live tasks (any status) with their shards and tags, 500 per
        transaction. Ids not live are ``missing`` (or ``refused`` if already archived).
        ``task_ids`` is any iterable of ids (read once) but one string; a non-string or
        unusable id is an :class:`InvalidInputError` and nothing is archived."""
        return bulk.archive_many(self._db, task_ids)

    def restore_many(self, task_ids: Iterable[str]) -> BulkResult:
        """Restore these archived tasks, 500 per transaction. An id that is also live is
        ``refused``; one not archived is ``missing``. ``task_ids`` as in
        :meth:`archive_many`."""
        return bulk.restore_many(self._db, task_ids)

    def delete_many(self, task_ids: Iterable[str], *, archived: bool = False) -> BulkResult:
        """Delete these live tasks (``archived=True``: archived ones) with their shards
        and tags, 500 per transaction; ids not there are ``missing``. ``task_ids`` as in
        :meth:`archive_many`."""
        return bulk.delete_many(self._db, task_ids, archived=archived)

    def archive_older_than(
        self,
        age: timedelta | float,
        filter: TaskFilter | None = None,
        *,
        statuses: Iterable[TaskStatus | str] | None = TERMINAL_STATUSES,
        by: Literal["update_time", "submit_time"] = "update_time",
        dry_run: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> RetentionResult:
        """Archive tasks in ``statuses`` (default: finished; None: any) whose ``by`` time
        is more than ``age`` (a timedelta, or seconds) ago, in batches of 500 that each
        hold the write lock briefly. A ``status=`` filter narrows ``statuses`` (both must
        hold). With ``dry_run`` nothing changes and the result lists which tasks would
        go. A negative, NaN or infinite ``age`` (or a bool) is an
        :class:`InvalidInputError`; one longer than the calendar matches no task."""
        f = make_filter(filter, criteria)
        return retention.archive_older_than(
            self._db, age, statuses=statuses, by=by, dry_run=dry_run, f=f
        )

    def purge_archived(
        self,
        filter: TaskFilter | None = None,
        *,
        older_than: timedelta | float,
        dry_run: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> RetentionResult:
        """Delete archived tasks archived more than ``older_than`` ago (with their shards
        and tags), in batches of 500; ``dry_run`` only reports which. ``older_than`` is
        checked as :meth:`archive_older_than`'s ``age``."""
        f = make_filter(filter, criteria)
        return retention.purge_archived(self._db, older_than, dry_run=dry_run, f=f)

    # -- change feed ---------------------------------------------------------------------------

    def changes(
        self,
        since: str | None = None,
        *,
        filter: ChangeFilter | None = None,
        limit: int = feed.DEFAULT_LIMIT,
    ) -> ChangePage:
        """Every change committed after the token ``since`` (None: a token for now, and no
        changes), in commit order, at most ``limit`` (1 to 10,000) per page: each with
        the task id, its kind (``saved``, ``updated``, ``tagged``, ``archived``,
        ``restored``, ``deleted``, ``purged``), the task's status after it and the token
        just after it. Pass ``page.token`` next time to miss nothing, across restarts;
        ``page.more`` says the page was cut at ``limit``. ``filter``
        (:class:`ChangeFilter`) keeps only some task ids or kinds, the token still moving
        past the rest. :class:`ChangesExpiredError` if retention or :meth:`clear_all`
        deleted changes after the token; :class:`InvalidInputError` for a token this kind
        of store did not make."""
        f = feed.check_filter(filter)
        return feed.read_changes(self._db, since, f, feed.check_limit(limit))

    def wait_for_changes(self, token: str, timeout: float = 30.0) -> bool:
        """Wait until a change commits after ``token`` (True) or ``timeout`` seconds pass
        (False): PostgreSQL is woken by the ``NOTIFY`` each writer sends after its
        commit, SQLite and MariaDB probe the log's newest position at a short interval."""
        limit = feed.check_timeout(timeout)
        feed.check_token(self._db, token)
        return feed.wait_for_changes(self._db, token, limit)

    def follow(
        self,
        since: str | None = None,
        *,
        filter: ChangeFilter | None = None,
        wait: float = 30.0,
    ) -> Generator[Change, None, None]:
        """Every change after ``since`` (None: from now) as it commits, without end: pages
        of :meth:`changes`, with :meth:`wait_for_changes` between them. Keep the last
        change's ``token`` to resume. Arguments are checked when it is called."""
        f = feed.check_filter(filter)
        pause = feed.check_timeout(wait, "wait")
        if since is not None:
            feed.check_token(self._db, since)
        return feed.follow(self._db, since, f, wait=pause)

    def prune_changes(self, older_than: timedelta | float | None = None) -> int:
        """Delete changes older than ``older_than`` (a timedelta, or seconds; default 7
        days) from the change log; return how many went. A follower whose token is
        older then gets :class:`ChangesExpiredError`."""
        return feed.prune_changes(self._db, older_than)

    def _list(
        self,
        side: TaskTables,
        filter: TaskFilter | None,
        criteria: Mapping[str, Any],
        limit: int | None,
        offset: int | None,
        include_results: bool,
        sort: Sort,
        on_corrupt: OnCorrupt | None,
    ) -> builtins.list[TaskInfo]:
        limit = _check_page(limit, offset)
        validate_flag(include_results, "include_results")
        validate_callback(on_corrupt, "on_corrupt")
        return queries.list_tasks(
            self._db,
            side,
            make_filter(filter, criteria),
            sort,
            limit=limit,
            offset=offset,
            include_results=include_results,
            on_corrupt=on_corrupt,
        )

    def _shards(self, table: Any, uniqc_task_id: str) -> builtins.list[TaskShard]:
        validate_key(uniqc_task_id, "uniqc_task_id")
        return queries.get_shards(self._db, table, uniqc_task_id)


def _archived(conn: Connection, task_id: str) -> bool:
    stmt = select(archived_tasks.c.task_id).where(archived_tasks.c.task_id == task_id)
    return conn.execute(stmt).first() is not None


def _deleted(conn: Connection, kind: change_log.Kind, task_id: str, *statements: Any) -> bool:
    """Run child deletes then the parent's, and record the change: True if the parent
    row existed."""
    *children, parent = statements
    for child in children:
        conn.execute(child)
    if not conn.execute(parent).rowcount:
        return False
    change_log.record(conn, kind, [task_id], utc_now())
    return True


def _stamp(*rows: Sequence[dict[str, Any]]) -> str:
    """Stamp these rows' ``update_time`` with the current time; return it."""
    now = utc_now()
    for group in rows:
        for row in group:
            row["update_time"] = now
    return now


def _check_schema(schema: str | None, *, sqlite_file: bool) -> None:
    """Refuse a schema name that would be ignored or cannot name a schema."""
    if schema is None:
        return
    if not isinstance(schema, str) or not schema.strip():
        raise InvalidInputError("schema", schema, "a schema name is non-empty text")
    if sqlite_file:
        raise InvalidInputError(
            "schema",
            schema,
            "only PostgreSQL databases take a schema name; this store is a SQLite file "
            f"(give a postgresql:// URL, or set {URL_ENV})",
        )


def _database_path(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        env = os.environ.get(CACHE_DIR_ENV)
        directory = Path(env).expanduser() if env else DEFAULT_CACHE_DIR
    else:
        directory = Path(cache_dir).expanduser()
    try:
        return directory.resolve() / DATABASE_FILENAME
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, Python < 3.13
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise StoreLocationError(
            f"cannot use {directory} for the task store ({reason}); choose another "
            f"directory with {CACHE_DIR_ENV} or TaskStore(cache_dir=...)."
        ) from exc


def _is_in_memory(backend: Backend) -> bool:
    return isinstance(backend, SqliteBackend) and backend.path is None


def _side(archived: bool) -> TaskTables:
    if not isinstance(archived, bool):
        raise InvalidInputError("archived", archived, "must be True or False")
    return ARCHIVED if archived else LIVE


def _check_page(limit: int | None, offset: int | None) -> int | None:
    """The limit to apply: a negative ``limit`` means no limit, as it did in the
    original (SQLite's ``LIMIT -1``, which callers rely on); the same on every database."""
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInputError(name, value, "must be an integer or None")
    if offset is not None and offset < 0:
        raise InvalidInputError("offset", offset, "must be a non-negative integer or None")
    validate_page(None if limit is None or limit < 0 else limit, offset)
    return None if limit is None or limit < 0 else limit


def _batches(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _BATCH_ROWS):
        yield items[start : start + _BATCH_ROWS]
