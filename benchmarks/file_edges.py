"""What issue 17's file fixes cost, each against its floor in the same run.

* ``export`` now asks the other side, once per batch of 500, which ids are twins (to
  mark them): an export of N tasks with that lookup, against the same export with the
  lookup answering nothing without a query (the floor).
* ``backup`` now checks the copy with ``integrity_check``: the whole backup, against
  SQLite's online backup with the ``quick_check`` the copy had before (the floor).

Usage (a SQLite file in a temporary directory):

    python benchmarks/file_edges.py [--tasks 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from uniqc_taskstore import (
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    exchange,
    generate_uniqc_task_id,
)
from uniqc_taskstore.exchange import export_tasks
from uniqc_taskstore.maintenance import backup


def fill(store: TaskStore, count: int) -> None:
    batch = []
    for k in range(count):
        task = TaskInfo(
            generate_uniqc_task_id(), "bench:device", status=TaskStatus.SUCCESS, tags={"k": "v"}
        )
        shards = [
            TaskShard(task.task_id, i, f"job-{k}-{i}", task.backend, 1, i, TaskStatus.SUCCESS)
            for i in range(2)
        ]
        for shard in shards:
            shard.result = {"00": 510, "11": 490}
        batch.append((task, shards))
        if len(batch) == 500:
            store.save_many([t for t, _ in batch], [s for _, ss in batch for s in ss])
            batch = []
    if batch:
        store.save_many([t for t, _ in batch], [s for _, ss in batch for s in ss])
    for task in store.list(limit=count // 10, include_results=False):
        store.archive(task.task_id)


def best(runs: int, call: Callable[[], object]) -> tuple[float, float]:
    """The fastest and the median of ``runs`` calls, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def floor_backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    src.backup(dst)
    dst.execute("PRAGMA journal_mode = DELETE")
    assert dst.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    dst.close()
    src.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with TaskStore(root / "store") as store:
            fill(store, args.tasks)
            real_twins = exchange._twins

            def export() -> None:
                export_tasks(store, io.StringIO(), archived=True)

            ours = best(args.runs, export)
            exchange._twins = lambda *a, **k: set()
            try:
                floor = best(args.runs, export)
            finally:
                exchange._twins = real_twins
            print(
                f"export of {args.tasks:,} tasks (10% archived): {ours[0]:.2f} s with twin "
                f"marks, {floor[0]:.2f} s without the lookup: x{ours[0] / floor[0]:.2f}"
            )
            path = store.db_path
            assert path is not None
            counter = iter(range(10**6))
            ours = best(args.runs, lambda: backup(store, root / f"b{next(counter)}.sqlite"))
            floor = best(args.runs, lambda: floor_backup(path, root / f"f{next(counter)}.sqlite"))
            size = path.stat().st_size / 2**20
            print(
                f"backup of a {size:.0f} MiB file: {ours[0]:.2f} s with integrity_check, "
                f"{floor[0]:.2f} s with quick_check only: x{ours[0] / floor[0]:.2f}"
            )


if __name__ == "__main__":
    main()
