"""Child-process writers of the change-feed race test (``tests/test_change_feed_race.py``).

Not a test module. Each writer runs with its own skewed clock (every ``utc_now`` the
store takes is shifted by ``skew`` seconds) and delays some of its commits after its
change rows are written (the server batch's COMMIT is sent apart, after a pause; on
the generic path the pause comes after the change rows), so that rows numbered
earlier commit later: what a feed that trusts numbers or times would lose.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import uniqc_taskstore.change_log as change_log
from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, TaskStoreError

_MODULES = ("timestamps", "store", "server_writes", "tags", "edits", "bulk", "retention")
_STATUSES = list(TaskStatus)


def _skew_clock(skew: float) -> None:
    import importlib

    def shifted() -> str:
        moment = datetime.now(UTC) + timedelta(seconds=skew)
        return moment.isoformat(timespec="microseconds")

    for name in _MODULES:
        module = importlib.import_module(f"uniqc_taskstore.{name}")
        if hasattr(module, "utc_now"):
            module.utc_now = shifted  # type: ignore[attr-defined]


class _DelayedBatch:
    """A driver batch whose COMMIT goes apart, after a pause, now and then."""

    def __init__(self, inner: Any, rng: random.Random) -> None:
        self._inner = inner
        self._rng = rng

    @property
    def finished(self) -> bool:
        return bool(self._inner.finished)

    @property
    def commit_sent(self) -> bool:
        return bool(self._inner.commit_sent)

    @property
    def discard(self) -> bool:
        return bool(self._inner.discard)

    def send(self, steps: Any, *, commit: bool = False) -> Any:
        if commit and steps and self._rng.random() < 0.3:
            out = self._inner.send(steps)
            time.sleep(self._rng.uniform(0.005, 0.05))
            self._inner.send([], commit=True)
            return out
        return self._inner.send(steps, commit=commit)

    def end(self) -> None:
        self._inner.end()


def _delay_commits(store: TaskStore, rng: random.Random) -> None:
    backend = store._db.backend
    original = backend.driver_batch
    delayed: Any = lambda conn: _DelayedBatch(original(conn), rng)  # noqa: E731
    backend.driver_batch = delayed  # type: ignore[method-assign]
    record, run_record = change_log.record, change_log.run_record

    def slow_record(*args: Any, **kwargs: Any) -> None:
        record(*args, **kwargs)
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.005, 0.05))

    def slow_run_record(*args: Any, **kwargs: Any) -> None:
        run_record(*args, **kwargs)
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.005, 0.05))

    change_log.record = slow_record
    change_log.run_record = slow_run_record


def write_for(
    location: dict[str, Any], ids: list[str], seconds: float, skew: float, seed: int
) -> int:
    """Random writes (save, shard reports, tags, archive, restore, delete, purge) to the
    tasks ``ids`` for ``seconds``; the number of calls made."""
    rng = random.Random(seed)
    _skew_clock(skew)
    store = TaskStore(**location)
    _delay_commits(store, rng)
    calls = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            task_id = rng.choice(ids)
            op = rng.random()
            calls += 1
            try:
                if op < 0.3:
                    now = datetime.now(UTC).isoformat()
                    store.save(
                        TaskInfo(task_id, "dummy:race", rng.choice(_STATUSES), None, 10, now, now)
                    )
                elif op < 0.5:
                    store.update_shard(task_id, 0, status=rng.choice(_STATUSES))
                elif op < 0.6:
                    now = datetime.now(UTC).isoformat()
                    shard = TaskShard(
                        task_id,
                        0,
                        f"job-{rng.randrange(3)}",
                        "dummy:race",
                        status=rng.choice(_STATUSES),
                        submit_time=now,
                        update_time=now,
                    )
                    store.save_shard(shard)
                elif op < 0.7:
                    store.set_tags(task_id, {"n": str(rng.randrange(100))})
                elif op < 0.8:
                    store.archive(task_id)
                elif op < 0.88:
                    store.restore(task_id)
                elif op < 0.94:
                    store.delete(task_id)
                else:
                    store.delete_archived(task_id)
            except TaskStoreError:
                pass  # missing, archived meanwhile, a live twin...: the race, not a fault
    finally:
        store.close()
    return calls
