"""Ours against a raw-driver floor, and every read at a small and a large store.

Usage::

    python -m benchmarks --db sqlite --size 1000000 [--ops 2000] [--json out.json]
    python -m benchmarks --db postgresql --url postgresql+psycopg://postgres@127.0.0.1/postgres

The floor runs the same work with hand-written SQL through the driver itself
(``sqlite3`` / psycopg / PyMySQL) on its own store of the same schema and settings
(SQLite: WAL, ``synchronous = FULL``, one commit per write). Server URLs are admin
URLs: a database is created for each store of the run and dropped after it. SQLite
stores for the scaling table are cached under ``--cache`` by size and schema version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import CURRENT_SCHEMA_VERSION, TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.schema import task_shards, task_tags, tasks
from uniqc_taskstore.timestamps import format_timestamp

from .pages import page_table
from .wire import RoundTripProxy, round_trip_proxy

BASE = datetime(2025, 1, 1, tzinfo=UTC)
STATUSES = [s.value for s in TaskStatus]
SHARDS_PER_TASK = 2


# -- data ------------------------------------------------------------------------------


def backend_of(n: int) -> str:
    """Two platforms, half the tasks each, spread over devices."""
    return f"originq:WK_C{n % 7}" if n % 2 == 0 else f"ibm:dev{n % 3}"


def task_id(n: int) -> str:
    return f"uqt_{n:032x}"


def submit_time(n: int) -> str:
    return format_timestamp(BASE + timedelta(seconds=n))


def rows_for(
    start: int, stop: int, shards_per_task: int = SHARDS_PER_TASK
) -> tuple[list[dict[str, Any]], ...]:
    """Tasks ``start..stop`` with their shards and one tag each, as table rows."""
    task_rows: list[dict[str, Any]] = []
    shard_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    for n in range(start, stop):
        status = STATUSES[n % len(STATUSES)]
        when = submit_time(n)
        task_rows.append(
            {
                "task_id": task_id(n),
                "backend": backend_of(n),
                "platform": backend_of(n).split(":", 1)[0],
                "status": status,
                "shots": 1000,
                "submit_time": when,
                "update_time": when,
                "result_json": {"00": n % 1000, "11": 1000 - n % 1000}
                if status == "success"
                else None,
                "metadata_json": {"n": n},
                "error_message": None,
                "name": None,
            }
        )
        shard_rows.extend(
            {
                "uniqc_task_id": task_id(n),
                "shard_index": i,
                "platform_task_id": f"job-{n}-{i}",
                "backend": backend_of(n),
                "circuit_count": 1,
                "sub_index_offset": i,
                "status": status,
                "result_json": None,
                "error_message": None,
                "submit_time": when,
                "update_time": when,
            }
            for i in range(shards_per_task)
        )
        tag_rows.append(
            {"task_id": task_id(n), "key": "team", "value": f"t{n % 10}", "submit_time": when}
        )
    return task_rows, shard_rows, tag_rows


def fill(
    store: TaskStore, size: int, batch: int = 20_000, shards_per_task: int = SHARDS_PER_TASK
) -> None:
    """``size`` tasks through the store's own bulk insert, a batch per transaction;
    a fill that was interrupted goes on from the batches already committed."""
    bulk = store._db.backend.bulk_insert
    for start in range(store.count(), size, batch):
        t, s, g = rows_for(start, min(size, start + batch), shards_per_task)

        def work(conn: Any, t: Any = t, s: Any = s, g: Any = g) -> None:
            bulk(conn, tasks, t)
            bulk(conn, task_shards, s)
            bulk(conn, task_tags, g)

        store._db.write(work)


# -- stores ----------------------------------------------------------------------------


class Place:
    """Where stores of one kind of database are made."""

    def __init__(self, db: str, url: str | None, cache: Path) -> None:
        self.db, self.admin_url, self.cache = db, url, cache
        self._made: list[str] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="uniqc-bench-"))

    @contextmanager
    def store(self, label: str, size: int = 0, *, cached: bool = False) -> Iterator[TaskStore]:
        """A store holding ``size`` generated tasks (a fresh one unless ``cached``)."""
        if self.db == "sqlite":
            where = (
                self.cache / f"sqlite-{size}-v{CURRENT_SCHEMA_VERSION}"
                if cached
                else self._tmp / f"{label}-{uuid.uuid4().hex[:6]}"
            )
            ready = where / "filled"
            store = TaskStore(where)
            if not ready.exists():
                fill(store, size)
                ready.touch()
            try:
                yield store
            finally:
                store.close()
            return
        assert self.admin_url is not None
        name = f"uniqc_bench_{label}_{uuid.uuid4().hex[:6]}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(self.admin_url).set(database=name)
        store = TaskStore.from_url(url.render_as_string(hide_password=False))
        try:
            fill(store, size)
            # As autovacuum / InnoDB's own statistics would by the time a real store
            # had grown this big: the planner's row estimates match the data, and on
            # PostgreSQL the rows' hint bits and the visibility map are set (else the
            # first read of each row after a bulk load writes its page).
            engine = store._db.engine
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # task_counts: each task the fill wrote updated a counter row (a dead row
                # version on PostgreSQL each, until vacuumed).
                for table in ("tasks", "task_shards", "task_tags", "task_counts"):
                    verb = "VACUUM ANALYZE" if self.db == "postgresql" else "ANALYZE TABLE"
                    conn.exec_driver_sql(f"{verb} {table}")
            yield store
        finally:
            store.close()
            force = " WITH (FORCE)" if self.db == "postgresql" else ""
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
            admin.dispose()


# -- the floor: the driver itself, hand-written SQL -----------------------------------


class Floor:
    """The same operations as the store, written by hand against the driver."""

    def __init__(self, store: TaskStore, db: str) -> None:
        self.db = db
        self.conn: Any
        self.reader: Any
        if db == "sqlite":
            path = store.db_path
            assert path is not None
            self.conn = sqlite3.connect(path, isolation_level=None)
            for pragma in ("foreign_keys = ON", "synchronous = FULL", "busy_timeout = 10000"):
                self.conn.execute(f"PRAGMA {pragma}")
            self.reader = self.conn
            self.p = "?"
        else:
            url = store._db.backend.url  # type: ignore[attr-defined]
            args = {
                "host": url.host,
                "port": url.port,
                "user": url.username,
                "password": url.password or "",
            }
            if db == "postgresql":
                import psycopg

                self.conn = psycopg.connect(dbname=url.database, **args)
                self.reader = psycopg.connect(dbname=url.database, autocommit=True, **args)
            else:
                import pymysql  # type: ignore[import-untyped]

                self.conn = pymysql.connect(database=url.database, **args)
                self.reader = pymysql.connect(database=url.database, autocommit=True, **args)
            self.p = "%s"

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.p)

    def _t(self, value: str) -> Any:
        if self.db == "sqlite":
            return value
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=None) if self.db == "mysql" else moment

    def _write(self, work: Callable[[Any], None]) -> None:
        if self.db == "sqlite":
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            work(cur)
            cur.execute("COMMIT")
        else:
            with self.conn.cursor() as cur:
                work(cur)
            self.conn.commit()

    def _upsert(self, table: str, key: str, columns: list[str], update: list[str]) -> str:
        marks = ", ".join("?" for _ in columns)
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        if self.db == "mysql":
            sets = ", ".join(f"{c} = VALUES({c})" for c in update)
            return self._sql(f"{head} ON DUPLICATE KEY UPDATE {sets}")
        sets = ", ".join(f"{c} = excluded.{c}" for c in update)
        return self._sql(f"{head} ON CONFLICT ({key}) DO UPDATE SET {sets}")

    def save(self, n: int) -> None:
        cols = ["task_id", "backend", "platform", "status", "shots", "submit_time"]
        cols += ["update_time", "metadata_json"]
        kept = ["platform", "status", "update_time", "metadata_json"]
        stmt = self._upsert("tasks", "task_id", cols, kept)
        now = self._t(format_timestamp(datetime.now(UTC)))
        platform = backend_of(n).split(":", 1)[0]
        values = (
            task_id(n),
            backend_of(n),
            platform,
            "pending",
            1000,
            now,
            now,
            json.dumps({"n": n}),
        )
        untag = self._sql("DELETE FROM task_tags WHERE task_id = ?")

        def work(c: Any) -> None:
            c.execute(stmt, values)
            c.execute(untag, (task_id(n),))

        self._write(work)

    def _aggregate(self, c: Any, tid: str, now: Any) -> None:
        c.execute(self._sql("SELECT status FROM task_shards WHERE uniqc_task_id = ?"), (tid,))
        found = {row[0] for row in c.fetchall()}
        status = "running" if found - {"success", "failed", "cancelled"} else "success"
        c.execute(
            self._sql("UPDATE tasks SET status = ?, update_time = ? WHERE task_id = ?"),
            (status, now, tid),
        )

    def save_shards(self, items: list[tuple[int, int]]) -> None:
        cols = ["uniqc_task_id", "shard_index", "platform_task_id", "backend", "circuit_count"]
        cols += ["sub_index_offset", "status", "submit_time", "update_time"]
        stmt = self._upsert(
            "task_shards",
            "uniqc_task_id, shard_index",
            cols,
            ["platform_task_id", "status", "update_time"],
        )
        now = self._t(format_timestamp(datetime.now(UTC)))
        rows = [
            (task_id(n), i, f"fjob-{n}-{i}", backend_of(n), 1, i, "pending", now, now)
            for n, i in items
        ]

        def work(c: Any) -> None:
            c.executemany(stmt, rows)
            for tid in dict.fromkeys(r[0] for r in rows):
                self._aggregate(c, tid, now)

        self._write(work)

    def update_shard(self, n: int) -> None:
        now = self._t(format_timestamp(datetime.now(UTC)))
        stmt = self._sql(
            "UPDATE task_shards SET status = ?, update_time = ? "
            "WHERE uniqc_task_id = ? AND shard_index = ?"
        )

        def work(c: Any) -> None:
            c.execute(stmt, ("running", now, task_id(n), 0))
            self._aggregate(c, task_id(n), now)

        self._write(work)

    def _read(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        if self.db == "sqlite":
            rows: list[Any] = self.reader.execute(statement, params).fetchall()
            return rows
        with self.reader.cursor() as cur:
            cur.execute(statement, params)
            found: list[Any] = cur.fetchall()
            return list(found)

    def get(self, n: int) -> Any:
        rows = self._read(
            self._sql(
                "SELECT t.*, g.key, g.value FROM tasks t LEFT JOIN task_tags g "
                "ON g.task_id = t.task_id WHERE t.task_id = ? ORDER BY g.key"
            ),
            (task_id(n),),
        )
        return [(_loads(r[6]), _loads(r[7]), r) for r in rows]

    def get_shards(self, n: int) -> Any:
        rows = self._read(
            self._sql("SELECT * FROM task_shards WHERE uniqc_task_id = ? ORDER BY shard_index"),
            (task_id(n),),
        )
        return [(_loads(r[7]), r) for r in rows]

    def by_platform_id(self, job: str) -> Any:
        return self._read(
            self._sql(
                "SELECT * FROM task_shards WHERE platform_task_id = ? ORDER BY submit_time "
                "DESC, uniqc_task_id DESC, shard_index DESC LIMIT 1"
            ),
            (job,),
        )

    def offset_page(self, status: str, depth: int, limit: int = 50) -> Any:
        rows = self._read(
            self._sql(
                "SELECT * FROM tasks WHERE status = ? ORDER BY submit_time DESC, task_id DESC "
                f"LIMIT {limit} OFFSET {depth * limit}"
            ),
            (status,),
        )
        return [(_loads(r[6]), _loads(r[7]), r) for r in rows]

    def close(self) -> None:
        self.conn.close()
        if self.reader is not self.conn:
            self.reader.close()


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# -- measuring -------------------------------------------------------------------------


def per_second(call: Callable[[int], Any], ids: list[int]) -> float:
    started = time.perf_counter()
    for n in ids:
        call(n)
    return len(ids) / (time.perf_counter() - started)


def median_ms(call: Callable[[], Any], reps: int) -> float:
    call()  # warm: statement caches, pages in memory
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


@dataclass
class RoundTrips:
    """Round trips of the store's calls, counted on the wire by a proxy between a store
    and its server (``benchmarks/wire.py``): statements, ``BEGIN``, ``COMMIT``, the
    pool's health ping and its reset ``ROLLBACK``, and a batch sent without waiting
    (a psycopg pipeline, a MariaDB multi-statement query) as one."""

    by_op: dict[str, int] = field(default_factory=dict)
    proxy: RoundTripProxy | None = None

    @contextmanager
    def through_proxy(self, store: TaskStore) -> Iterator[TaskStore]:
        """A store on ``store``'s database, reached through a counting proxy."""
        url = store._db.backend.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
        with round_trip_proxy(url) as proxy:
            self.proxy = proxy
            counted = TaskStore(url=proxy.url(url))
            try:
                yield counted
            finally:
                counted.close()
                self.proxy = None

    def measure(self, name: str, call: Callable[[], Any]) -> None:
        assert self.proxy is not None
        before = self.proxy.count
        call()
        self.by_op[name] = self.proxy.count - before


def ops_table(place: Place, ops: int, rt: RoundTrips | None) -> list[dict[str, Any]]:
    """Throughput of each operation, ours and the floor, on fresh stores."""
    rows: list[dict[str, Any]] = []
    with place.store("ours") as store, place.store("floor") as floor_store:
        floor = Floor(floor_store, place.db)
        ids = list(range(ops))
        batch = 10_000
        per_task = max(1, batch // ops)
        items = [(n, i) for n in ids for i in range(1, per_task + 1)][:batch]

        def shard(n: int, i: int) -> TaskShard:
            return TaskShard(task_id(n), i, f"job-{n}-{i}", backend_of(n), 1, i)

        pairs: dict[str, tuple[Callable[[int], Any], Callable[[int], Any]]] = {
            "save (one task, one commit)": (
                lambda n: store.save(TaskInfo(task_id(n), backend_of(n), shots=1000)),
                floor.save,
            ),
            "save_shard": (
                lambda n: store.save_shard(shard(n, 0)),
                lambda n: floor.save_shards([(n, 0)]),
            ),
            "update_shard": (
                lambda n: store.update_shard(task_id(n), 0, status="running"),
                floor.update_shard,
            ),
            "get by id": (lambda n: store.get(task_id(n)), floor.get),
            "get_shards": (lambda n: store.get_shards(task_id(n)), floor.get_shards),
            "shard by platform job id": (
                lambda n: store.get_shard_by_platform_id(f"job-{n}-0"),
                lambda n: floor.by_platform_id(f"fjob-{n}-0"),
            ),
        }
        for name, (mine, theirs) in pairs.items():
            # Interleaved in blocks, so that a slow spell of the shared disk (fsync) or
            # CPU falls on both sides alike.
            spent = {"ours": 0.0, "floor": 0.0}
            for start in range(0, len(ids), 100):
                block = ids[start : start + 100]
                spent["floor"] += len(block) / per_second(theirs, block)
                spent["ours"] += len(block) / per_second(mine, block)
            rows.append(
                {"operation": name, "floor": ops / spent["floor"], "ours": ops / spent["ours"]}
            )
        # The caller holds its shard objects before it saves them, as the floor holds
        # its items: building them is not the store's work (about 4 µs a TaskShard).
        objects = [shard(n, i) for n, i in items]
        floor_rate = len(items) / _seconds(lambda: floor.save_shards(items))
        our_rate = len(items) / _seconds(lambda: store.save_shards(objects))
        rows.append(
            {
                "operation": f"{len(items):,} shards in one save_shards",
                "floor": floor_rate,
                "ours": our_rate,
            }
        )
        if rt is not None:
            with rt.through_proxy(store) as counted:
                n = ops + 1
                counted.save(TaskInfo(task_id(n), backend_of(n)))
                rt.measure("save", lambda: counted.save(TaskInfo(task_id(n), backend_of(n))))
                rt.measure(
                    "save(task, shards)",
                    lambda: counted.save(
                        TaskInfo(task_id(n), backend_of(n)), [shard(n, 0), shard(n, 1)]
                    ),
                )
                rt.measure("save_shard", lambda: counted.save_shard(shard(n, 2)))
                rt.measure(
                    "update_shard", lambda: counted.update_shard(task_id(n), 0, status="running")
                )
                rt.measure("get", lambda: counted.get(task_id(n)))
                rt.measure("get_shards", lambda: counted.get_shards(task_id(n)))
                rt.measure(
                    "shard by platform id", lambda: counted.get_shard_by_platform_id("job-1-0")
                )
                rt.measure("list_page", lambda: counted.list_page(limit=50))
                rt.measure("count", lambda: counted.count())
                done = TaskInfo(task_id(n + 1), backend_of(n), status=TaskStatus.SUCCESS)
                counted.save(done, [shard(n + 1, 0)])
                counted.update_shard(done.task_id, 0, status="success")
                rt.measure("archive", lambda: counted.archive(done.task_id))
        floor.close()
    return rows


def _seconds(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def reads(store: TaskStore, size: int, reps: int) -> dict[str, float]:
    """Median milliseconds of each read on a store of ``size`` generated tasks."""
    rng = random.Random(7)
    ns = [rng.randrange(size) for _ in range(reps)]
    it = iter(ns * 1000)
    lo, hi = submit_time(size // 2), submit_time(size // 2 + max(size // 10, 1))
    filters: dict[str, dict[str, Any]] = {
        "status": {"status": "success"},
        "backend": {"backend": "ibm"},
        "device": {"backend": "ibm:dev1"},
        "tag": {"tags": {"team": "t3"}},
        "time range": {"submitted_after": lo, "submitted_before": hi},
    }
    out = {
        "get": median_ms(lambda: store.get(task_id(next(it))), reps),
        "get_shards": median_ms(lambda: store.get_shards(task_id(next(it))), reps),
        "shard by platform id": median_ms(
            lambda: store.get_shard_by_platform_id(f"job-{next(it)}-1"), reps
        ),
    }
    page_reps = max(5, reps // 10)
    for label, criteria in filters.items():
        out[f"first page, {label}"] = median_ms(
            partial(store.list_page, limit=50, **criteria), page_reps
        )
        cursor = None
        for _ in range(20):
            cursor = store.list_page(limit=50, cursor=cursor, **criteria).next_cursor
        out[f"page 21, {label}"] = median_ms(
            partial(store.list_page, limit=50, cursor=cursor, **criteria), page_reps
        )
    out["count()"] = median_ms(store.count, page_reps)
    out["count(status)"] = median_ms(lambda: store.count(status="success"), page_reps)
    out["count_by(status)"] = median_ms(lambda: store.count_by("status"), page_reps)
    # Any other filter: index-served, one entry per counted task (issue 22, goal 3).
    out["count(status, platform)"] = median_ms(
        lambda: store.count(status="success", backend="ibm"), page_reps
    )
    out["count(tag)"] = median_ms(lambda: store.count(tags={"team": "t3"}), page_reps)
    out["count_by(status, platform)"] = median_ms(
        lambda: store.count_by("status", backend="ibm"), page_reps
    )
    return out


def explain(store: TaskStore, size: int) -> dict[str, str]:
    """The database's plan for each list query (first page and a keyset page), and the
    platform-id lookup: which index serves it, and whether it sorts."""
    from uniqc_taskstore.filters import LIVE, Sort, TaskFilter
    from uniqc_taskstore.queries import _shard_by_platform_id, select_tasks

    engine = store._db.engine
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN ", "mysql": "EXPLAIN "}
    middle = submit_time(size // 2)
    lo, hi = submit_time(size // 2), submit_time(size // 2 + max(size // 10, 1))
    cases: dict[str, Any] = {}
    filters: dict[str, dict[str, Any]] = {
        "status": {"status": "success"},
        "backend (platform)": {"backend": "ibm"},
        "backend (device)": {"backend": "ibm:dev1"},
        "tag": {"tags": {"team": "t3"}},
        "time range": {"submitted_after": lo, "submitted_before": hi},
        "all": {},
    }
    for label, criteria in filters.items():
        f = TaskFilter(**criteria)
        cases[f"first page, {label}"] = select_tasks(LIVE, f, Sort(), limit=51)
        cases[f"keyset page, {label}"] = select_tasks(
            LIVE, f, Sort(), limit=51, position=(middle, task_id(size // 2))
        )
    cases["shard by platform id"] = _shard_by_platform_id(False).params(platform_task_id="job-1-0")
    plans: dict[str, str] = {}
    with engine.connect() as conn:
        for name, stmt in cases.items():
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            rows = conn.exec_driver_sql(prefix[store._db.backend.name] + sql).all()
            if store._db.backend.name == "sqlite":
                plans[name] = " | ".join(str(r[-1]) for r in rows)
            elif store._db.backend.name == "postgresql":
                plans[name] = " | ".join(str(r[0]).strip() for r in rows)
            else:
                plans[name] = " | ".join(
                    f"{r._mapping['table']}: key={r._mapping['key']} {r._mapping['Extra']}"
                    for r in rows
                )
    return plans


def depth_table(store: TaskStore, floor: Floor, size: int, reps: int) -> list[dict[str, Any]]:
    """A deep page of a status: our keyset page against the floor's OFFSET page."""
    from uniqc_taskstore.filters import LIVE, Sort, TaskFilter, encode_cursor, filter_fingerprint

    rows = []
    successes = size // len(STATUSES)
    for depth in (20, 200, 2000):
        if (depth + 1) * 50 > successes:
            break
        last = store.list(status="success", limit=1, offset=depth * 50 - 1)[0]
        made_for = filter_fingerprint(TaskFilter(status="success"), LIVE.tasks.name)
        cursor = encode_cursor(Sort(), made_for, last.submit_time, last.task_id)
        mine = median_ms(partial(store.list_page, limit=50, cursor=cursor, status="success"), reps)
        theirs = median_ms(partial(floor.offset_page, "success", depth), reps)
        rows.append(
            {
                "operation": f"page {depth + 1} of a status (floor: OFFSET {depth * 50:,})",
                "floor": 1000 / theirs,
                "ours": 1000 / mine,
            }
        )
    return rows


def peak_rss_mb(code: str, *args: str) -> float:
    """Peak resident memory of a child Python running ``code``."""
    script = code + HIGH_WATER
    out = subprocess.run(
        [sys.executable, "-c", script, *args], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


HIGH_WATER = """
import re
from pathlib import Path
print(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
"""
"""The child's own peak resident set (kB). Not ``ru_maxrss``: Linux carries that over
from the parent through fork and exec, so a child of a big parent reports the parent."""

ITER_CODE = """
import sys
from uniqc_taskstore import TaskStore
store = TaskStore(sys.argv[1]) if "://" not in sys.argv[1] else TaskStore.from_url(sys.argv[1])
n = sum(1 for _ in store.iter_tasks(include_shards=True))
"""


COPY_CODE = """
import sys, time
from uniqc_taskstore import TaskStore
from uniqc_taskstore.transfer import copy_tasks
source, dest = TaskStore(sys.argv[1]), TaskStore.from_url(sys.argv[2])
first = copy_tasks(source, dest)
second = copy_tasks(source, dest)
assert second.copied.tasks == 0 and second.copied.shards == 0
assert first.destination == first.source, (first.destination, first.source)
print(first.seconds, second.seconds, first.copied.tasks, first.copied.shards)
"""

COPY_FLOOR_CODE = """
import sqlite3, sys, time
from sqlalchemy.engine import make_url
source, url = sys.argv[1], make_url(sys.argv[2])
args = {"host": url.host, "port": url.port, "user": url.username, "password": url.password or ""}
db = sqlite3.connect(source + "/tasks.sqlite")
started = time.perf_counter()
if url.get_backend_name() == "postgresql":
    import psycopg
    conn = psycopg.connect(dbname=url.database, **args)
    def write(table, rows):
        with conn.cursor() as cursor, cursor.copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
else:
    import pymysql
    conn = pymysql.connect(database=url.database, charset="utf8mb4", **args)
    def write(table, rows):
        # DATETIME(6) takes the UTC text without its T and offset
        cut = lambda v: v[:10] + " " + v[11:26] if type(v) is str and v[10:11] == "T" else v
        values = ",".join("(" + ",".join(conn.escape(cut(v)) for v in r) + ")" for r in rows)
        with conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES " + values)
KEYS = (("tasks", "task_id"), ("task_shards", "uniqc_task_id"), ("task_tags", "task_id"))
last = ""
while True:
    ids = [r[0] for r in db.execute(
        "SELECT task_id FROM tasks WHERE task_id > ? ORDER BY task_id LIMIT 1000", (last,))]
    if not ids:
        break
    bounds = (ids[0], ids[-1])
    for table, key in KEYS:
        rows = db.execute(f"SELECT * FROM {table} WHERE {key} BETWEEN ? AND ?", bounds).fetchall()
        if rows:
            write(table, rows)
    conn.commit()
    last = ids[-1]
print(time.perf_counter() - started)
"""
"""The floor of a copy: the same batches (1,000 tasks with their shards and tags, one
transaction each) read with ``sqlite3`` and written by hand with the driver (psycopg
``COPY``, PyMySQL multi-row ``INSERT``), no checks against the destination."""


def copy_figures(place: Place, size: int) -> dict[str, Any]:
    """Copy ``size`` tasks with 3 shards each from a SQLite file into a fresh server
    database, in a child process: seconds for the first copy and a re-run (which
    copies nothing), and the child's peak resident memory; then the floor
    (:data:`COPY_FLOOR_CODE`) into another fresh database, for the ratio."""
    source_dir = place.cache / f"copy-source-{size}-v{CURRENT_SCHEMA_VERSION}"
    source = TaskStore(source_dir)
    if not (source_dir / "filled").exists():
        fill(source, size, shards_per_task=3)
        (source_dir / "filled").touch()
    source.close()
    outputs = []
    for label, script in (("copy", COPY_CODE + HIGH_WATER), ("copyfloor", COPY_FLOOR_CODE)):
        with place.store(label, 0) as dest:
            url = dest._db.backend.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
            dest.close()
            outputs.append(
                subprocess.run(
                    [sys.executable, "-c", script, str(source_dir), url],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
            )
    out, floor = outputs
    return {
        "tasks": size,
        "shards": 3 * size,
        "first_copy_s": float(out[0]),
        "second_copy_s": float(out[1]),
        "copied_tasks": int(out[2]),
        "copied_shards": int(out[3]),
        "peak_rss_mb": int(out[4]) / 1024,
        "floor_s": float(floor[0]),
        "ratio": float(floor[0]) / float(out[0]),
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        ram = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except OSError:
        ram = "unknown"
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "ram": ram,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_ratio_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n")
    print("| operation | floor /s | ours /s | ours / floor |")
    print("|---|---|---|---|")
    for row in rows:
        row["ratio"] = row["ours"] / row["floor"]
        figures = f"{row['floor']:,.0f} | {row['ours']:,.0f} | {row['ratio']:.2f}"
        print(f"| {row['operation']} | {figures} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--url", help="admin URL of the server (default: UNIQC_TEST_*_URL)")
    parser.add_argument("--size", type=float, default=1e6, help="tasks in the large store")
    parser.add_argument("--small", type=float, default=1e4, help="tasks in the small store")
    parser.add_argument("--ops", type=int, default=2000, help="calls per operation")
    parser.add_argument("--reps", type=int, default=200, help="repetitions per point read")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "uniqc-bench")
    parser.add_argument("--json", type=Path, default=Path("benchmark-results.json"))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--copy", type=float, default=0, help="servers: copy this many tasks from SQLite"
    )
    parser.add_argument("--skip-ops", action="store_true", help="only the scaling table")
    parser.add_argument(
        "--pages", type=int, default=300, help="list pages of 50 per kind (0: skip them)"
    )
    args = parser.parse_args(argv)
    env = {"postgresql": "UNIQC_TEST_POSTGRESQL_URL", "mysql": "UNIQC_TEST_MYSQL_URL"}
    url = args.url or (os.environ.get(env[args.db]) if args.db in env else None)
    if args.db != "sqlite" and not url:
        parser.error(f"--db {args.db} needs --url or {env[args.db]}")
    size, small = int(args.size), min(int(args.small), int(args.size))
    place = Place(args.db, url, args.cache)
    result: dict[str, Any] = {"db": args.db, "machine": machine(), "ops": args.ops}
    print(f"{args.db}: {result['machine']}")

    rt = RoundTrips() if args.db != "sqlite" else None
    ops = [] if args.skip_ops else ops_table(place, args.ops, rt)
    result["operations"] = ops
    scaling: dict[str, dict[str, float]] = {}
    for n in sorted({small, size}):
        with place.store(f"s{n}", n, cached=True) as store:
            if n == small and args.pages:
                floor = Floor(store, args.db)
                pages = page_table(store, floor.reader, floor.p, args.pages)
                floor.close()
                result["pages"] = pages
                print_ratio_table(
                    f"Pages of 50 on {n:,} tasks ({args.pages} each, interleaved; load "
                    f"{os.getloadavg()[0]:.2f})",
                    pages,
                )
            scaling[str(n)] = reads(store, n, args.reps)
            if n == size:
                floor = Floor(store, args.db)
                ops += depth_table(store, floor, n, max(5, args.reps // 10))
                floor.close()
                result["plans"] = explain(store, n)
                if not args.skip_memory:
                    where = str(store.db_path.parent) if store.db_path else None
                    if where is None:
                        backend_url = store._db.backend.url  # type: ignore[attr-defined]
                        where = backend_url.render_as_string(hide_password=False)
                    result["iter_tasks_peak_rss_mb"] = peak_rss_mb(ITER_CODE, where)
    print_ratio_table(f"Operations ({args.ops:,} calls each; load {os.getloadavg()[0]:.2f})", ops)
    if rt is not None:
        result["round_trips"] = rt.by_op
        print("\nRound trips per call (health ping if due + statements + BEGIN/COMMIT + reset)\n")
        for name, count in rt.by_op.items():
            print(f"- {name}: {count}")
    print(f"\nScaling: median ms per read, {small:,} vs {size:,} tasks\n")
    print(f"| read | {small:,} | {size:,} | growth |")
    print("|---|---|---|---|")
    rows = []
    for name in scaling[str(small)]:
        a, b = scaling[str(small)][name], scaling[str(size)][name]
        rows.append({"read": name, "small_ms": a, "large_ms": b, "growth": b / a})
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    result["scaling"] = {"small": small, "large": size, "reads": rows}
    print("\nPlans on the large store\n")
    for name, plan in result.get("plans", {}).items():
        print(f"- {name}: {plan}")
    if "iter_tasks_peak_rss_mb" in result:
        print(
            f"\niter_tasks over {size:,} tasks (with shards): peak RSS "
            f"{result['iter_tasks_peak_rss_mb']:.0f} MB"
        )
    result["max_rss_mb_parent"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.copy and args.db != "sqlite":
        result["copy"] = figures = copy_figures(place, int(args.copy))
        print(
            f"\ncopy of {figures['tasks']:,} tasks and {figures['shards']:,} shards from "
            f"SQLite: {figures['first_copy_s']:.1f} s (re-run: {figures['second_copy_s']:.1f} "
            f"s), peak RSS {figures['peak_rss_mb']:.0f} MB; floor (the driver by hand) "
            f"{figures['floor_s']:.1f} s, floor / ours {figures['ratio']:.2f}"
        )
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")
    return result
