"""Where the change feed's cost to a PostgreSQL writer goes: CPU time per
``update_shard``, in the writing process and in its server backend, with the change
log off, on with nobody following (the log's row alone, inserted by the update that
settles the task: writers notify only while somebody follows), and on with a follower
listening (that row and the ``NOTIFY`` sent after the commit).

One writer, so that the figures are CPU time, not throughput: unlike the 8-writer
rounds of ``benchmarks.changefeed`` they barely move with the machine's load. The
server backend's time is read from ``/proc/<pid>/stat`` (the server must run on this
machine). Each variant runs in a process of its own, ``--rounds`` times, in turn.

    python -m benchmarks.changefeed_cpu --url postgresql+psycopg://postgres@127.0.0.1/postgres

The URL is an admin URL: a database is made for the run and dropped after.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from benchmarks.changefeed import _database, _switch_off_change_log, follower
from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore

VARIANTS = ("off", "on", "on, followed")
_TICK = os.sysconf("SC_CLK_TCK")


def _backend_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _measure(url: str, variant: str, calls: int, results: Any) -> None:
    if variant == "off":
        _switch_off_change_log()
    store = TaskStore.from_url(url)
    now = datetime.now(UTC).isoformat()
    ids = [f"uqt_{uuid.uuid4().hex}" for _ in range(20)]
    for task_id in ids:
        store.save(
            TaskInfo(task_id, "bench", TaskStatus.RUNNING, submit_time=now, update_time=now),
            [TaskShard(task_id, 0, f"job-{task_id}", "bench", status=TaskStatus.RUNNING)],
        )
    with store._db.engine.connect() as conn:  # the pool hands this one out again
        pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    statuses = [TaskStatus.RUNNING, TaskStatus.PENDING]
    for n in range(200):  # warm: prepared statements, caches
        store.update_shard(ids[n % 20], 0, status=statuses[n % 2])
    server, client = _backend_seconds(pid), time.process_time()
    for n in range(calls):
        store.update_shard(ids[n % 20], 0, status=statuses[n % 2])
    client, server = time.process_time() - client, _backend_seconds(pid) - server
    store.close()
    results.put((client / calls * 1e6, server / calls * 1e6))


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.changefeed_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    url, drop = _database(args.url)
    context = multiprocessing.get_context("spawn")
    found: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    try:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                results = context.Queue()
                worker = context.Process(target=_measure, args=(url, variant, args.calls, results))
                with follower(url) if variant == "on, followed" else contextlib.nullcontext():
                    worker.start()
                    found[variant].append(results.get(timeout=600))
                    worker.join()
    finally:
        drop()
    base = statistics.median(client + server for client, server in found["off"])
    print(f"CPU µs per update_shard, median of {args.rounds} runs of {args.calls} calls:")
    for variant, runs in found.items():
        client = statistics.median(c for c, _ in runs)
        server = statistics.median(s for _, s in runs)
        total = statistics.median(c + s for c, s in runs)
        print(
            f"  {variant:14s} client {client:5.0f}  server {server:5.0f}  total {total:5.0f}"
            f"  ({total / base:.2f} of off; 8 CPU-bound writers would run at {base / total:.2f})"
        )
    return found


if __name__ == "__main__":
    main()
