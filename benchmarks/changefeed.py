"""What the change feed costs writers, and how soon ``follow`` sees a commit.

1. Write throughput with 8 concurrent writer processes (``update_shard`` on tasks of
   their own, the hot write), with the change log written as every write does and
   with it switched off (the floor: the writes without their change-log statements),
   in alternating rounds so that a slow spell of the shared machine falls on both.
2. Commit-to-delivery latency of ``follow``: a writer saves a task every 20 ms and
   notes when ``save`` returned (its commit done); a follower thread notes when the
   change came out of ``follow``. Median and p99 over the run.

Usage (a server URL is an admin URL: a database is made for the run and dropped after):

    python -m benchmarks.changefeed --url sqlite:///tmp/cf/tasks.sqlite
    python -m benchmarks.changefeed --url postgresql+psycopg://postgres@127.0.0.1/postgres
    python -m benchmarks.changefeed --url mysql+pymysql://root@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore

WRITERS = 8
TASKS_PER_WRITER = 20


def _switch_off_change_log() -> None:
    """The floor: every write without its change-log statements."""
    from uniqc_taskstore import change_log, server_writes

    change_log.record = lambda *args, **kwargs: None
    change_log.run_record = lambda *args, **kwargs: None
    change_log.folded = lambda *args, **kwargs: None  # each write's update alone
    server_writes._changes = lambda *args, **kwargs: []


def _writer(
    url: str, ids: list[str], seconds: float, log_on: bool, ready: Any, results: Any
) -> None:
    if not log_on:
        _switch_off_change_log()
    store = TaskStore.from_url(url)
    store.get(ids[0])  # connected and migrated before the clock starts
    statuses = [TaskStatus.RUNNING, TaskStatus.PENDING]
    calls = 0
    ready.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.update_shard(ids[calls % len(ids)], 0, status=statuses[calls % 2])
        calls += 1
    store.close()
    results.put(calls)


def throughput(url: str, seconds: float, rounds: int) -> dict[str, Any]:
    store = TaskStore.from_url(url)
    now = datetime.now(UTC).isoformat()
    groups = []
    for _ in range(WRITERS):
        ids = [f"uqt_{uuid.uuid4().hex}" for _ in range(TASKS_PER_WRITER)]
        for task_id in ids:
            store.save(
                TaskInfo(task_id, "bench", TaskStatus.RUNNING, submit_time=now, update_time=now),
                [TaskShard(task_id, 0, f"job-{task_id}", "bench", status=TaskStatus.RUNNING)],
            )
        groups.append(ids)
    store.close()
    labels = ["off", "on"] + (["followed"] if _is_postgresql(url) else [])
    figures: dict[str, list[float]] = {label: [] for label in labels}
    context = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        for label in labels:
            ready = context.Barrier(WRITERS)
            results = context.Queue()
            writers = [
                context.Process(
                    target=_writer, args=(url, ids, seconds, label != "off", ready, results)
                )
                for ids in groups
            ]
            with follower(url) if label == "followed" else contextlib.nullcontext():
                for writer in writers:
                    writer.start()
                calls = [results.get(timeout=600) for _ in writers]
                for writer in writers:
                    writer.join()
            figures[label].append(sum(calls) / seconds)
    on, off = statistics.median(figures["on"]), statistics.median(figures["off"])
    found = {"writes_per_s_on": on, "writes_per_s_off": off, "ratio": on / off, "rounds": figures}
    if "followed" in figures:
        followed = statistics.median(figures["followed"])
        found |= {"writes_per_s_followed": followed, "ratio_followed": followed / off}
    return found


def _is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


@contextlib.contextmanager
def follower(url: str) -> Iterator[None]:
    """PostgreSQL: a follower's listening connection, the store's own (it says it
    follows, so writers send their NOTIFY; with nobody following they do not), its
    notifications read as they come."""
    store = TaskStore.from_url(url)
    listener = store._db.backend.change_listener(store._db.engine)
    assert listener is not None
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            listener.wait(0.2)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    time.sleep(1.2)  # longer than a writer keeps its "nobody follows"
    try:
        yield
    finally:
        stop.set()
        reader.join()
        listener.close()
        store.close()


def latency(url: str, count: int) -> dict[str, float]:
    store = TaskStore.from_url(url)
    committed: dict[str, float] = {}
    delivered: dict[str, float] = {}
    feed = store.follow(wait=1.0)
    ready = threading.Event()

    def follow() -> None:
        ready.set()
        for change in feed:
            delivered.setdefault(change.task_id, time.perf_counter())
            if len(delivered) >= count:
                return

    # Take the feed's start token before any write (a generator starts on first next()).
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    ready.wait()
    time.sleep(0.5)
    for _ in range(count):
        task = TaskInfo(f"uqt_{uuid.uuid4().hex}", "bench", TaskStatus.PENDING)
        store.save(task)
        committed[task.task_id] = time.perf_counter()
        time.sleep(0.02)
    follower.join(timeout=30)
    waits = sorted((delivered[i] - committed[i]) * 1000 for i in committed if i in delivered)
    store.close()
    return {
        "median_ms": statistics.median(waits),
        "p99_ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        "delivered": float(len(waits)),
        "of": float(count),
    }


def _database(url: str) -> tuple[str, Any]:
    """A fresh database on the server of ``url`` (dropped by the returned callable)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url, lambda: None
    name = f"cf_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deliveries", type=int, default=200)
    args = parser.parse_args(argv)
    url, drop = _database(args.url)
    try:
        found: dict[str, Any] = {"latency": latency(url, args.deliveries)}
        if args.rounds:
            found["throughput"] = throughput(url, args.seconds, args.rounds)
    finally:
        drop()
    print(found)
    return found


if __name__ == "__main__":
    main()
