"""Writer processes of the fault suite (``tests/test_server_faults.py``).

Not a test module (spawned children import it from ``tests/``, as they do
``reliability_workers``). Each writer keeps ONE :class:`TaskStore` for the whole run
and loops over ``save`` (a new task with two shards), ``update_shard`` (a shard one
step along pending -> running -> success) and ``archive``, on tasks it alone owns,
until the parent creates the stop file. It records:

- what was acknowledged (a call that returned): each task's expected place and
  shard statuses;
- every exception a call raised: its type, whether it is a ``TaskStoreError`` and
  its ``retry_safe``. A failed call that says retrying is safe is made again, as a
  careful caller would, until it succeeds (then it counts as acknowledged); one that
  says the outcome is unknown leaves its task "uncertain": checked only for being
  whole, never for where it is;
- the wall-clock time of every success, from which the parent measures how long the
  writers took to recover after each fault.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore, TaskStoreError, generate_uniqc_task_id

SHARDS = 2
NEXT = {"pending": "running", "running": "success"}


class FaultWriter:
    def __init__(self, store: TaskStore, worker: int, seed: int, stop: Path) -> None:
        self.store = store
        self.worker = worker
        self.rng = random.Random(seed)
        self.stop = stop
        self.expected: dict[str, dict[str, Any]] = {}
        self.uncertain: set[str] = set()
        self.errors: list[dict[str, Any]] = []
        self.successes: list[float] = []
        self.calls = 0
        self.retried = False
        """The last call failed at least once before it succeeded."""

    def _call(self, name: str, task_id: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        """Make ``call`` until it succeeds or fails without a safe retry; return (acked,
        its result). Every failure is recorded."""
        self.retried = False
        while True:
            self.calls += 1
            try:
                result = call()
            except Exception as exc:
                typed = isinstance(exc, TaskStoreError)
                retry_safe = bool(getattr(exc, "retry_safe", False)) if typed else False
                self.errors.append(
                    {
                        "op": name,
                        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                        "typed": typed,
                        "retry_safe": retry_safe,
                        "message": str(exc)[:300],
                        "at": time.time(),
                    }
                )
                if retry_safe and not self.stop.exists():
                    self.retried = True
                    time.sleep(0.05)
                    continue
                self.uncertain.add(task_id)
                return False, None
            self.successes.append(time.time())
            return True, result

    def step(self) -> None:
        live = [
            t for t, e in self.expected.items() if e["where"] == "live" and t not in self.uncertain
        ]
        open_shards = [
            (t, i) for t in live for i, s in enumerate(self.expected[t]["shards"]) if s in NEXT
        ]
        roll = self.rng.random()
        if roll < 0.35 or not live:
            self.save()
        elif roll < 0.85 and open_shards:
            self.update(*self.rng.choice(open_shards))
        else:
            self.archive(self.rng.choice(live))

    def save(self) -> None:
        task = TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"worker": self.worker})
        shards = [
            TaskShard(task.task_id, i, f"job-{task.task_id[4:16]}-{i}", "dummy", sub_index_offset=i)
            for i in range(SHARDS)
        ]
        acked, _ = self._call("save", task.task_id, lambda: self.store.save(task, shards))
        if acked:
            self.expected[task.task_id] = {"where": "live", "shards": ["pending"] * SHARDS}

    def update(self, task_id: str, index: int) -> None:
        status = NEXT[self.expected[task_id]["shards"][index]]
        result = {"counts": {"0": index}} if status == "success" else None
        acked, update = self._call(
            "update_shard",
            task_id,
            lambda: self.store.update_shard(task_id, index, status=status, result=result),
        )
        if acked:
            self.expected[task_id]["shards"][index] = status
            if not update.applied:  # nothing else writes this task: a repeat is applied too
                self.errors.append({"op": "update_shard", "type": "not applied", "typed": True})

    def archive(self, task_id: str) -> None:
        acked, archived = self._call("archive", task_id, lambda: self.store.archive(task_id))
        if acked:
            # Made again by us after a failure whose outcome was unknown, an archive
            # that had been applied finds no live task: False, and archived it is.
            if archived is not True and not (
                self.retried and self.store.get_archived(task_id) is not None
            ):
                self.errors.append({"op": "archive", "type": "returned False", "typed": True})
            self.expected[task_id]["where"] = "archived"


def fault_writer(url: str, worker: int, seed: int, ready: str, stop: str, out: str) -> None:
    """Write until ``stop`` exists; then dump what was acknowledged to ``out``."""
    failure = None
    writer = None
    try:
        store = TaskStore(url=url)
        writer = FaultWriter(store, worker, seed, Path(stop))
        Path(ready).touch()
        while not writer.stop.exists():
            writer.step()
        store.close()
    except Exception as exc:  # outside any call: the run itself broke
        failure = f"{type(exc).__qualname__}: {exc}"[:400]
    data = {
        "worker": worker,
        "failure": failure,
        "calls": writer.calls if writer else 0,
        "expected": writer.expected if writer else {},
        "uncertain": sorted(writer.uncertain) if writer else [],
        "errors": writer.errors if writer else [],
        "successes": writer.successes if writer else [],
    }
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, out)
