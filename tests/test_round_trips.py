"""On a server, the writes a poller makes all the time wait for the network at most
three times each: ``update_shard``, ``save(task, shards)`` and ``archive``, with their
``BEGIN`` and ``COMMIT``. Counted on the wire by a proxy between the store and its
server (``benchmarks/wire.py``): a round trip is the client sending after the server
last spoke, whatever sent it (a statement, ``BEGIN``, ``COMMIT``, the pool's
``ROLLBACK``). A count, not a timing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from benchmarks.wire import RoundTripProxy, round_trip_proxy
from sqlalchemy import create_engine

from uniqc_taskstore import ShardNotFoundError, TaskInfo, TaskShard, TaskStatus, TaskStore

SERVERS = ("postgresql", "mysql")
MOST = 3


@pytest.fixture(params=SERVERS)
def counted(
    request: pytest.FixtureRequest, fresh_database_url: Callable[[str], str]
) -> Iterator[tuple[TaskStore, RoundTripProxy]]:
    """A store on a fresh server database, reached through a round-trip counting proxy."""
    url = fresh_database_url(request.param)
    TaskStore(url=url).close()  # migrated before counting starts
    with round_trip_proxy(url) as proxy:
        store = TaskStore(url=proxy.url(url))
        try:
            yield store, proxy
        finally:
            store.close()


def _round_trips(proxy: RoundTripProxy, call: Callable[[], Any]) -> int:
    before = proxy.count
    call()
    return proxy.count - before


def _task(n: int, **kwargs: Any) -> TaskInfo:
    return TaskInfo(f"task-{n}", "originq:WK_C180", shots=100, **kwargs)


def _shard(n: int, index: int, status: TaskStatus = TaskStatus.PENDING) -> TaskShard:
    return TaskShard(f"task-{n}", index, f"job-{n}-{index}", "originq:WK_C180", 1, index, status)


def test_a_poll_of_a_shard_takes_at_most_three_round_trips(
    counted: tuple[TaskStore, RoundTripProxy],
) -> None:
    store, proxy = counted
    store.save(_task(1), [_shard(1, 0), _shard(1, 1)])
    poll = _round_trips(proxy, lambda: store.update_shard("task-1", 0, status="running"))
    assert poll <= MOST
    done = _round_trips(
        proxy, lambda: store.update_shard("task-1", 1, status="success", result={"00": 5})
    )
    assert done <= MOST
    stale = _round_trips(proxy, lambda: store.update_shard("task-1", 1, status="running"))
    assert stale <= MOST
    assert store.update_shard("task-1", 1, status="running").applied is False
    with pytest.raises(ShardNotFoundError):
        store.update_shard("task-1", 7, status="running")


def test_saving_a_task_with_its_shards_takes_at_most_three_round_trips(
    counted: tuple[TaskStore, RoundTripProxy],
) -> None:
    store, proxy = counted
    new = _round_trips(proxy, lambda: store.save(_task(2), [_shard(2, 0), _shard(2, 1)]))
    assert new <= MOST
    again = _round_trips(
        proxy,
        lambda: store.save(_task(2, tags={"team": "a"}), [_shard(2, 1), _shard(2, 2)]),
    )
    assert again <= MOST
    assert store.get("task-2") is not None


def test_archiving_a_task_takes_at_most_three_round_trips(
    counted: tuple[TaskStore, RoundTripProxy],
) -> None:
    store, proxy = counted
    store.save(_task(3, tags={"team": "b"}), [_shard(3, 0, TaskStatus.SUCCESS)])
    assert _round_trips(proxy, lambda: store.archive("task-3")) <= MOST
    assert store.get_archived("task-3") is not None
    assert _round_trips(proxy, lambda: store.archive("task-3")) <= MOST  # not live: False


@pytest.mark.parametrize("kind", SERVERS)
def test_the_batched_writes_work_on_a_callers_engine_too(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    """A caller's engine has none of our connection settings (on MariaDB no multiple
    statements per query, autocommit here): the same calls, the same results."""
    engine = create_engine(fresh_database_url(kind), isolation_level="AUTOCOMMIT")
    try:
        with TaskStore(engine=engine) as store:
            store.save(_task(4, tags={"team": "c"}), [_shard(4, 0), _shard(4, 1)])
            assert store.update_shard("task-4", 0, status="success").task_status == (
                TaskStatus.RUNNING
            )
            done = store.update_shard("task-4", 1, status="failed")
            assert (done.applied, done.task_status) == (True, TaskStatus.FAILED)
            assert store.update_shard("task-4", 1, status="running").applied is False
            assert store.archive("task-4") is True
            archived = store.get_archived("task-4")
            assert archived is not None
            assert archived.tags == {"team": "c"}
            assert store.get("task-4") is None
            assert store.archive("task-4") is False
    finally:
        engine.dispose()
