"""The dashboard's counts at 10,000 and 1,000,000 tasks, both stores open at once and
measured in alternating rounds, so that a slow spell of a shared machine falls on both
sizes alike (issue 22, goal 2: growth ≤ 1.5).

    python -m benchmarks.counts --db sqlite
    python -m benchmarks.counts --db postgresql --url postgresql+psycopg://postgres@127.0.0.1/postgres
    python -m benchmarks.counts --db mysql --url mysql+pymysql://root@127.0.0.1/test

Stores are made as ``python -m benchmarks`` makes them (the same fill, vacuumed and
analysed on the servers; SQLite stores cached under ``--cache``). Each figure is the
median over ``--rounds`` rounds of the median of ``--calls`` calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from uniqc_taskstore import TaskStore

from .suite import Place, machine

COUNTS: dict[str, Callable[[TaskStore], Any]] = {
    "count()": lambda store: store.count(),
    'count(status="success")': lambda store: store.count(status="success"),
    'count_by("status")': lambda store: store.count_by("status"),
}


def _median_ms(count: Callable[[TaskStore], Any], store: TaskStore, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        count(store)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(stores: dict[int, TaskStore], rounds: int, calls: int) -> dict[str, dict[int, float]]:
    """Median ms of each count on each store, rounds alternating between the stores."""
    seen: dict[str, dict[int, list[float]]] = {name: {n: [] for n in stores} for name in COUNTS}
    for store in stores.values():  # warm: statements compiled, pages cached
        for count in COUNTS.values():
            count(store)
    for _ in range(rounds):
        for n, store in stores.items():
            for name, count in COUNTS.items():
                seen[name][n].append(_median_ms(count, store, calls))
    return {
        name: {n: statistics.median(values) for n, values in by_size.items()}
        for name, by_size in seen.items()
    }


def main(argv: list[str] | None = None) -> dict[str, dict[int, float]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.counts", description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--url", help="admin URL of the server (default: UNIQC_TEST_*_URL)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e6])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "uniqc-bench")
    args = parser.parse_args(argv)
    env = {"postgresql": "UNIQC_TEST_POSTGRESQL_URL", "mysql": "UNIQC_TEST_MYSQL_URL"}
    url = args.url or (os.environ.get(env[args.db]) if args.db in env else None)
    if args.db != "sqlite" and not url:
        parser.error(f"--db {args.db} needs --url or {env[args.db]}")
    sizes = sorted(int(n) for n in args.sizes)
    place = Place(args.db, url, args.cache)
    print(f"{args.db}: {machine()}")
    with ExitStack() as stack:
        stores = {n: stack.enter_context(place.store(f"c{n}", n, cached=True)) for n in sizes}
        found = measure(stores, args.rounds, args.calls)
    small, large = sizes[0], sizes[-1]
    print(f"\n| count | {small:,} | {large:,} | growth |\n|---|---|---|---|")
    for name, by_size in found.items():
        growth = by_size[large] / by_size[small]
        print(f"| `{name}` | {by_size[small]:.3f} | {by_size[large]:.3f} | {growth:.2f} |")
    return found


if __name__ == "__main__":
    main()
