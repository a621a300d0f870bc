"""Copy 100,000 tasks with 300,000 shards from a SQLite file to a server database.

Prints how long filling, copying, re-copying and comparing took. Usage:

    python benchmarks/copy_to_server.py postgresql+psycopg://postgres@127.0.0.1/postgres \
        [--tasks 100000] [--shards-per-task 3]

The URL is an admin URL: a fresh database is created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.schema import archived_task_shards, archived_tasks, task_shards, tasks
from uniqc_taskstore.transfer import copy_tasks


def fill(store: TaskStore, n_tasks: int, shards_per_task: int) -> None:
    statuses = list(TaskStatus)
    for start in range(0, n_tasks, 1000):
        batch: list[TaskInfo] = []
        shards: list[TaskShard] = []
        for n in range(start, min(start + 1000, n_tasks)):
            task = TaskInfo(
                task_id=f"uqt_{n:032x}",
                backend=f"originq:WK_C{n % 7}",
                status=statuses[n % 5],
                shots=1000 + n % 3,
                result={"00": n, "11": 1000 - n % 1000} if n % 5 == 2 else None,
                metadata={"n": n, "tag": "bench"},
            )
            batch.append(task)
            shards.extend(
                TaskShard(
                    task.task_id,
                    i,
                    f"job-{n}-{i}",
                    task.backend,
                    2,
                    2 * i,
                    status=task.status,
                    result=[{"0": i}, {"1": i}],
                )
                for i in range(shards_per_task)
            )
        store.save_many(batch, shards)


def rows(store: TaskStore, table: Any, key: Any) -> list[dict[str, Any]]:
    return store._db.read(
        lambda conn: [dict(r) for r in conn.execute(select(table).order_by(*key)).mappings()]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("admin_url")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--shards-per-task", type=int, default=3)
    args = parser.parse_args()
    name = f"uniqc_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = TaskStore(tmp)
            t0 = time.perf_counter()
            fill(source, args.tasks, args.shards_per_task)
            for n in range(2, args.tasks, 10):  # a tenth of the successes archived
                if n % 5 == 2:
                    source.archive(f"uqt_{n:032x}")
            print(f"filled SQLite: {time.perf_counter() - t0:.1f} s")
            dest = TaskStore.from_url(url)
            first = copy_tasks(source, dest)
            print(f"first copy:  {first.seconds:.1f} s  copied {first.copied}")
            second = copy_tasks(source, dest)
            print(f"second copy: {second.seconds:.1f} s  copied {second.copied}")
            t0 = time.perf_counter()
            for table, key in (
                (tasks, [tasks.c.task_id]),
                (task_shards, [task_shards.c.uniqc_task_id, task_shards.c.shard_index]),
                (archived_tasks, [archived_tasks.c.task_id]),
                (
                    archived_task_shards,
                    [archived_task_shards.c.uniqc_task_id, archived_task_shards.c.shard_index],
                ),
            ):
                a, b = rows(source, table, key), rows(dest, table, key)
                assert a == b, f"{table.name} differs"
                print(f"{table.name}: {len(a):,} rows equal field for field")
            print(f"compare: {time.perf_counter() - t0:.1f} s")
            dest.close()
            source.close()
    finally:
        from uniqc_taskstore.engine import _registry

        for database in _registry.values():
            database.dispose()
        force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))


if __name__ == "__main__":
    main()
