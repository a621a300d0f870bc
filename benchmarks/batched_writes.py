"""The server writes sent in batches (``server_writes``) against the same calls on the
generic path and against the raw-driver floor, interleaved in one run.

For ``save``, ``update_shard``, ``save(task, shards)`` and ``archive`` on one server
database: blocks of calls taken in turn by the floor (where the suite has one), the
generic path (``Backend.batched_writes`` off) and the batched path, so that a slow
spell of the shared disk falls on all three; then each path's round trips, counted by
the proxy of ``benchmarks/wire.py``. Usage:

    python -m benchmarks.batched_writes --url postgresql+psycopg://postgres@127.0.0.1/postgres
    python -m benchmarks.batched_writes --url mysql+pymysql://root@127.0.0.1/test --calls 1000

The URL is an admin URL: a database is made for the run and dropped after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore

from .suite import Floor, Place, backend_of, task_id
from .wire import round_trip_proxy

BLOCK = 50


@contextmanager
def generic(store: TaskStore, on: bool) -> Iterator[None]:
    """``store`` on the generic write path while ``on``."""
    backend = store._db.backend
    if on:
        backend.batched_writes = lambda: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        if on:
            del backend.batched_writes


def _shard(n: int, index: int, status: TaskStatus = TaskStatus.PENDING) -> TaskShard:
    return TaskShard(task_id(n), index, f"job-{n}-{index}", backend_of(n), 1, index, status)


def calls(store: TaskStore, base: int) -> dict[str, Callable[[int], Any]]:
    """Each measured call, on task ``base + n`` (fresh per path for saves with shards and
    for archive, which cannot repeat on one task)."""
    return {
        "save (one task, one commit)": lambda n: store.save(
            TaskInfo(task_id(n), backend_of(n), shots=1000)
        ),
        "update_shard": lambda n: store.update_shard(task_id(n), 0, status="running"),
        "save(task, shards)": lambda n: store.save(
            TaskInfo(task_id(base + n), backend_of(n)), [_shard(base + n, 0), _shard(base + n, 1)]
        ),
        "archive": lambda n: store.archive(task_id(base + n)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="admin URL of the server")
    parser.add_argument("--calls", type=int, default=600, help="calls per path and operation")
    args = parser.parse_args(argv)
    db = "postgresql" if args.url.startswith("postgres") else "mysql"
    place = Place(db, args.url, Path(tempfile.gettempdir()))
    n_calls = args.calls
    print(f"{db}, {n_calls} calls per path; load {os.getloadavg()[0]:.2f}")
    with place.store("ab") as store, place.store("abfloor") as floor_store:
        floor = Floor(floor_store, db)
        for n in range(n_calls):
            store.save(TaskInfo(task_id(n), backend_of(n)), [_shard(n, 0)])
            floor.save(n)
            floor.save_shards([(n, 0)])
        floors: dict[str, Callable[[int], Any]] = {
            "save (one task, one commit)": floor.save,
            "update_shard": floor.update_shard,
        }
        paths = {"generic": 10 * n_calls, "batched": 20 * n_calls}
        spent: dict[tuple[str, str], float] = {}
        for name in calls(store, 0):
            for start in range(0, n_calls, BLOCK):
                block = range(start, min(n_calls, start + BLOCK))
                if name in floors:
                    spent[name, "floor"] = spent.get((name, "floor"), 0.0) + _time(
                        floors[name], block
                    )
                for path, base in paths.items():
                    if name == "archive":  # archive what the saves with shards made
                        base -= 10 * n_calls
                    with generic(store, path == "generic"):
                        spent[name, path] = spent.get((name, path), 0.0) + _time(
                            calls(store, base)[name], block
                        )
        floor.close()
        trips = round_trips(store, n_calls)
    print(
        "\n| operation | floor /s | generic /s | batched /s | generic / floor | batched / floor "
        "| batched / generic | round trips generic → batched |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in calls(store, 0):
        rate = {path: n_calls / spent[name, path] for path in ("generic", "batched")}
        has_floor = (name, "floor") in spent
        floor_rate = n_calls / spent[name, "floor"] if has_floor else None
        cells = [
            f"{floor_rate:,.0f}" if floor_rate else "-",
            f"{rate['generic']:,.0f}",
            f"{rate['batched']:,.0f}",
            f"{rate['generic'] / floor_rate:.2f}" if floor_rate else "-",
            f"{rate['batched'] / floor_rate:.2f}" if floor_rate else "-",
            f"{rate['batched'] / rate['generic']:.2f}",
            f"{trips[name, 'generic']} → {trips[name, 'batched']}",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def round_trips(store: TaskStore, n_calls: int) -> dict[tuple[str, str], int]:
    """Round trips of one call of each operation on each path, counted on the wire."""
    url = store._db.backend.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    found: dict[tuple[str, str], int] = {}
    with round_trip_proxy(url) as proxy:
        counted = TaskStore(url=proxy.url(url))
        try:
            for path, base in (("generic", 30 * n_calls), ("batched", 40 * n_calls)):
                with generic(counted, path == "generic"):
                    counted.save(TaskInfo(task_id(base), backend_of(0)), [_shard(base, 0)])
                    # Each call on task n: one with a shard, a new one for the save with shards.
                    on = dict.fromkeys(calls(counted, 0), base) | {"save(task, shards)": base + 1}
                    for name, call in calls(counted, 0).items():
                        before = proxy.count
                        call(on[name])
                        found[name, path] = proxy.count - before
        finally:
            counted.close()
    return found


def _time(call: Callable[[int], Any], ids: range) -> float:
    started = time.perf_counter()
    for n in ids:
        call(n)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
