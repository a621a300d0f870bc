"""The change feed under a race: several writer processes with skewed clocks and
delayed commits, one follower tracking the feed meanwhile. At the end every task's
final state was delivered to the follower: 0 lost, also for archive, restore, delete
and purge."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from changefeed_workers import write_for
from uniqc_taskstore import TaskInfo, TaskStatus, TaskStore, generate_uniqc_task_id


def _race(store: TaskStore, location: dict[str, Any], *, writers: int, seconds: float) -> None:
    ids = [generate_uniqc_task_id() for _ in range(24)]
    now = datetime.now(UTC).isoformat()
    store.save_many(
        [TaskInfo(i, "dummy:race", TaskStatus.PENDING, None, 10, now, now) for i in ids]
    )
    token = store.changes().token
    # What the follower believes each task is, live and archived (a task can be both for
    # a while: a save after its archive makes a live twin, purged from the archive later).
    seen: dict[str, dict[str, str | None]] = {i: {"live": "pending", "archived": None} for i in ids}
    stop = threading.Event()

    def apply(change: Any) -> None:
        state = seen[change.task_id]
        status = None if change.status is None else change.status.value
        if change.kind == "archived":
            state["live"], state["archived"] = None, status
        elif change.kind == "restored":
            state["live"], state["archived"] = status, None
        elif change.kind == "deleted":
            state["live"] = None
        elif change.kind == "purged":
            state["archived"] = None
        else:
            state["live"] = status
        kinds.add(change.kind)

    kinds: set[str] = set()

    def follow() -> None:
        nonlocal token
        while not stop.is_set():
            page = store.changes(token, limit=50)
            for change in page:
                apply(change)
            token = page.token
            if not page.more:
                store.wait_for_changes(token, 0.05)

    follower = threading.Thread(target=follow)
    follower.start()
    skews = [-3600.0, 0.0, 3600.0, -5.0, 7.0, -120.0]
    context = multiprocessing.get_context("spawn")
    where = {k: str(v) for k, v in location.items()}
    with context.Pool(writers) as pool:
        calls = pool.starmap(
            write_for,
            [(where, ids, seconds, skews[n % len(skews)], n) for n in range(writers)],
        )
    stop.set()
    follower.join()
    # Drain what committed after the follower's last page.
    while True:
        page = store.changes(token, limit=500)
        for change in page:
            apply(change)
        token = page.token
        if not page.more:
            break
    assert sum(calls) >= writers  # every writer got calls in, however loaded the machine
    lost = []
    for task_id in ids:
        live, archived = store.get(task_id), store.get_archived(task_id)
        want = {
            "live": None if live is None else live.status.value,
            "archived": None if archived is None else archived.status.value,
        }
        if seen[task_id] != want:
            lost.append((task_id, want, seen[task_id]))
    assert lost == [], f"{len(lost)} of {len(ids)} tasks' last change not delivered: {lost}"
    assert kinds & {"archived", "deleted", "purged", "restored", "saved", "updated"}


def test_follower_misses_no_change_of_racing_writer_processes(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    _race(store, store_location, writers=3, seconds=2.0)


@pytest.mark.reliability
def test_follower_misses_no_change_of_racing_writer_processes_long(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    _race(store, store_location, writers=6, seconds=20.0)
