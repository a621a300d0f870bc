"""What the status counters cost concurrent writers: 8 writer processes on one database,
with the counting triggers (schema v14) and on a twin database whose triggers were
dropped, alternating, in one run.

Usage::

    python -m benchmarks.counters --db postgresql [--seconds 5] [--rounds 3]

Each writer saves new tasks and changes the status of tasks it saved before (each such
write changes a counter), one call per transaction, for ``--seconds``; the figure is
all writers' calls per second. Server URLs are admin URLs, as for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from uniqc_taskstore import TaskInfo, TaskStatus, TaskStore, generate_uniqc_task_id

from .suite import Place, machine

WRITERS = 8
_DROP = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {n}" for n in ("uniqc_count_insert", "uniqc_count_delete")]
    + ["DROP TRIGGER IF EXISTS uniqc_count_update"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS uniqc_count_insert_delete ON tasks",
        "DROP TRIGGER IF EXISTS uniqc_count_update ON tasks",
    ],
    "mysql": [
        f"DROP TRIGGER IF EXISTS {n}"
        for n in ("uniqc_count_insert", "uniqc_count_delete", "uniqc_count_update")
    ],
}


def _writer(location: dict[str, Any], seconds: float, seed: int, start: Any, out: Any) -> None:
    rng = random.Random(seed)
    statuses = list(TaskStatus)
    store = TaskStore(**location)
    mine: list[str] = []
    calls = 0
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not mine or rng.random() < 0.5:
            task_id = generate_uniqc_task_id()
            store.save(TaskInfo(task_id, "dummy:sim", status=rng.choice(statuses)))
            mine.append(task_id)
        else:
            store.save(TaskInfo(rng.choice(mine), "dummy:sim", status=rng.choice(statuses)))
        calls += 1
    store.close()
    out.put(calls)


def throughput(location: dict[str, Any], seconds: float) -> float:
    """All writers' calls per second over ``seconds``."""
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(WRITERS + 1), ctx.Queue()
    processes = [
        ctx.Process(target=_writer, args=(location, seconds, n, start, out)) for n in range(WRITERS)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.monotonic()
    calls = sum(out.get(timeout=seconds + 120) for _ in processes)
    elapsed = max(seconds, time.monotonic() - began)
    for process in processes:
        process.join(60)
    return float(calls / elapsed)


def _location(store: TaskStore) -> dict[str, Any]:
    if store.cache_dir is not None:
        return {"cache_dir": str(store.cache_dir)}
    url = store._db.backend.url  # type: ignore[attr-defined]
    return {"url": url.render_as_string(hide_password=False)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.counters", description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--url", help="admin URL of the server (default: UNIQC_TEST_*_URL)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two")
    args = parser.parse_args(argv)
    env = {"postgresql": "UNIQC_TEST_POSTGRESQL_URL", "mysql": "UNIQC_TEST_MYSQL_URL"}
    url = args.url or os.environ.get(env.get(args.db, ""), None)
    if args.db != "sqlite" and not url:
        parser.error(f"--db {args.db} needs --url or {env[args.db]}")
    place = Place(args.db, url, Path(tempfile.mkdtemp(prefix="uniqc-counters-")))
    rates: dict[str, list[float]] = {"counted": [], "uncounted": []}
    with place.store("counted") as counted, place.store("uncounted") as uncounted:
        with uncounted._db.engine.begin() as conn:
            for statement in _DROP[args.db]:
                conn.execute(text(statement))
        stores = {"counted": _location(counted), "uncounted": _location(uncounted)}
        for _ in range(args.rounds):
            for name in ("uncounted", "counted"):
                rates[name].append(throughput(stores[name], args.seconds))
    with_counters, without = sum(rates["counted"]), sum(rates["uncounted"])
    result = {
        "db": args.db,
        "machine": machine(),
        "writers": WRITERS,
        "seconds": args.seconds,
        "rounds": rates,
        "ratio": with_counters / without,
    }
    print(f"{args.db}: {result['machine']}")
    print(
        f"{WRITERS} writers, {args.rounds} x {args.seconds:g} s each side: with counters "
        f"{with_counters / args.rounds:,.0f} calls/s, without {without / args.rounds:,.0f} "
        f"calls/s, ratio {result['ratio']:.3f} (drop {100 * (1 - result['ratio']):.1f} %)"
    )
    for name, figures in rates.items():
        print(f"  {name}: " + ", ".join(f"{rate:,.0f}" for rate in figures))
    return result


if __name__ == "__main__":
    main()
