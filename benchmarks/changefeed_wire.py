"""Round trips of the change feed's reads and of a few writes on one server, counted
on the wire by the proxy of ``benchmarks/wire.py``. Usage (an admin URL: a database is
made for the run and dropped after):

    python -m benchmarks.changefeed_wire --url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id

from .changefeed import _database
from .wire import round_trip_proxy


def _task(now: str) -> TaskInfo:
    return TaskInfo(generate_uniqc_task_id(), "dummy", TaskStatus.PENDING, None, 1, now, now)


def count(url: str) -> dict[str, int]:
    """Round trips of one call of each operation."""
    now = datetime.now(UTC).isoformat()
    found: dict[str, int] = {}
    with round_trip_proxy(url) as proxy:
        store = TaskStore(url=proxy.url(url))
        try:
            a, b, c = _task(now), _task(now), _task(now)
            store.save(a)
            store.save(c)
            shard = TaskShard(
                a.task_id,
                0,
                "job-a",
                "dummy",
                status=TaskStatus.RUNNING,
                submit_time=now,
                update_time=now,
            )
            store.save_shard(shard)
            token = store.changes().token
            store.changes(token)

            def one(name: str, call: Callable[[], Any]) -> None:
                before = proxy.count
                call()
                found[name] = proxy.count - before

            one("save", lambda: store.save(b))
            one("update_shard", lambda: store.update_shard(a.task_id, 0, status="success"))
            one("archive", lambda: store.archive(b.task_id))
            one("delete", lambda: store.delete(c.task_id))
            one("changes(token), 4 new", lambda: store.changes(token))
            latest = store.changes().token
            one("changes(token), none new", lambda: store.changes(latest))
            one("changes() (now)", lambda: store.changes())
            one("wait_for_changes probe", lambda: store.wait_for_changes(latest, 0))
        finally:
            store.close()
    return found


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    url, drop = _database(args.url)
    try:
        found = count(url)
    finally:
        drop()
    for name, trips in found.items():
        print(f"{name}: {trips}")
    return found


if __name__ == "__main__":
    main()
