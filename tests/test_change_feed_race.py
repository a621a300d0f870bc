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
    delivered: dict[str, tuple[str, str | None]] = {}
    stop = threading.Event()

    def follow() -> None:
        nonlocal token
        while not stop.is_set():
            page = store.changes(token, limit=50)
            for change in page:
                delivered[change.task_id] = (
                    change.kind,
                    None if change.status is None else change.status.value,
                )
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
            delivered[change.task_id] = (
                change.kind,
                None if change.status is None else change.status.value,
            )
        token = page.token
        if not page.more:
            break
    assert sum(calls) >= writers  # every writer got calls in, however loaded the machine
    lost = []
    for task_id in ids:
        live, archived = store.get(task_id), store.get_archived(task_id)
        got = delivered.get(task_id)
        if live is not None:
            want: tuple[str, ...] = ("live", live.status.value)
        elif archived is not None:
            want = ("archived", archived.status.value)
        else:
            want = ("gone",)
        if got is None:
            seen: tuple[str, ...] = ("live", "pending")  # untouched since the start
        elif got[0] == "archived":
            seen = ("archived", str(got[1]))
        elif got[0] in ("deleted", "purged"):
            seen = ("gone",)
        else:
            seen = ("live", str(got[1]))
        if seen != want:
            lost.append((task_id, want, got))
    assert lost == [], f"{len(lost)} of {len(ids)} tasks' last change not delivered: {lost}"
    kinds = {kind for kind, _ in delivered.values()}
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
