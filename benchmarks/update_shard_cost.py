"""What one ``update_shard`` (and one ``save_shard``) costs on a task with few or many shards.

Prints the median and 90th percentile per call, for a task with 3 shards and one with
100,000, on a SQLite file and on any server URL given. Usage:

    python benchmarks/update_shard_cost.py [--shards 100000] [--calls 200] \
        [postgresql+psycopg://postgres@127.0.0.1/postgres ...]

A server URL is an admin URL: a fresh database is created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id


def task_with_shards(store: TaskStore, count: int) -> str:
    """A running task with ``count`` one-circuit shards, all but the last finished."""
    task = TaskInfo(generate_uniqc_task_id(), "bench:device")
    shards = [
        TaskShard(
            task.task_id,
            i,
            f"{task.task_id}-job-{i}",
            task.backend,
            sub_index_offset=i,
            status=TaskStatus.SUCCESS if i < count - 1 else TaskStatus.RUNNING,
        )
        for i in range(count)
    ]
    for start in range(0, count, 10_000):
        store.save(task, shards[start : start + 10_000])
    return task.task_id


def per_call_ms(calls: int, call: Callable[[int], object]) -> tuple[float, float]:
    """Median and 90th percentile of ``call(n)`` in milliseconds (after 5 warm-up calls)."""
    for n in range(5):
        call(n)
    spent = []
    for n in range(calls):
        started = time.perf_counter()
        call(n)
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), statistics.quantiles(spent, n=10)[-1]


def measure(store: TaskStore, label: str, shard_counts: list[int], calls: int) -> None:
    for count in shard_counts:
        task_id = task_with_shards(store, count)
        last = count - 1

        def poll(n: int, task_id: str = task_id, last: int = last) -> object:
            return store.update_shard(task_id, last, status="running", result={"n": n})

        def resubmit(n: int, task_id: str = task_id, last: int = last) -> None:
            job = TaskShard(task_id, last, f"retry-{n}", "bench:device", sub_index_offset=last)
            store.save_shard(job)

        for name, call in (("update_shard", poll), ("save_shard (resubmission)", resubmit)):
            median, p90 = per_call_ms(calls, call)
            print(
                f"{label:<11} {count:>7,} shards  {name:<26} "
                f"median {median:7.2f} ms   p90 {p90:7.2f} ms"
            )


@contextmanager
def fresh_server_database(admin_url: str) -> Iterator[str]:
    name = f"uniqc_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from uniqc_taskstore.engine import _registry

        for database in _registry.values():
            database.dispose()
        force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server_urls", nargs="*")
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    counts = [3, args.shards]
    with tempfile.TemporaryDirectory() as tmp, TaskStore(tmp) as store:
        measure(store, "sqlite", counts, args.calls)
    for admin_url in args.server_urls:
        with fresh_server_database(admin_url) as url, TaskStore.from_url(url) as store:
            measure(store, make_url(url).get_backend_name(), counts, args.calls)


if __name__ == "__main__":
    main()
