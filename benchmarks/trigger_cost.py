"""What the v13 triggers (platform and name filled in rows the original writes) cost
our own SQLite writes: ``save_many`` batches and single ``save`` calls on a store with
the triggers, against the same store with them dropped, interleaved in one run.

    python benchmarks/trigger_cost.py [--tasks 5000] [--rounds 5]

Prints the median CPU time per task of each (process time: SQLite runs in this
process, and the machine may be shared), and their ratio.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from uniqc_taskstore import TaskInfo, TaskStore, generate_uniqc_task_id


def _store(directory: Path, triggers: bool) -> TaskStore:
    TaskStore(cache_dir=directory).close()
    if not triggers:
        conn = sqlite3.connect(directory / "tasks.sqlite")
        with conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
                conn.execute(f"DROP TRIGGER {name}")
        conn.close()
    return TaskStore(cache_dir=directory)


def _tasks(n: int) -> list[TaskInfo]:
    return [
        TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", metadata={"shots": k})
        for k in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {t: _store(Path(tmp) / str(t), t) for t in (False, True)}
        for _ in range(args.rounds):
            for triggers, store in stores.items():
                batch = _tasks(args.tasks)
                started = time.process_time()
                store.save_many(batch)
                times.setdefault(("save_many", triggers), []).append(
                    (time.process_time() - started) / args.tasks
                )
                single = _tasks(200)
                started = time.process_time()
                for task in single:
                    store.save(task)
                times.setdefault(("save", triggers), []).append(
                    (time.process_time() - started) / len(single)
                )
        for store in stores.values():
            store.close()
    for op in ("save_many", "save"):
        with_, without = (statistics.median(times[(op, t)]) * 1e6 for t in (True, False))
        print(
            f"{op:9} per task: with triggers {with_:8.1f} us, without {without:8.1f} us, "
            f"ratio {with_ / without:.3f}"
        )


if __name__ == "__main__":
    main()
