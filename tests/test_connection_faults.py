"""A server connection cut, refused or slow: typed errors that say whether retrying is
safe, the store's own retries of what is safe, and the same store working again.

Each test puts a :class:`~fault_proxy.FaultProxy` between a store and this run's
PostgreSQL or MariaDB database, and cuts there: the shared servers themselves are
never touched (the fault suite with restarts and kills of a private server is
``tests/test_server_faults.py``, in the reliability suite).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from fault_proxy import COMMIT, FaultProxy, proxy_for
from uniqc_taskstore import (
    ConnectionLostError,
    DatabaseConnectionError,
    InvalidInputError,
    OutcomeUnknownError,
    StatementTimeoutError,
    TaskInfo,
    TaskShard,
    TaskStore,
    TaskStoreError,
    generate_uniqc_task_id,
)

SERVERS = ["postgresql", "mysql"]


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest, fresh_database_url: Callable[[str], str]) -> str:
    url: str = fresh_database_url(request.param)
    TaskStore(url=url).close()  # migrated here, not through the proxy
    return url


@pytest.fixture
def proxy(server_url: str) -> Iterator[FaultProxy]:
    proxy = proxy_for(server_url)
    yield proxy
    proxy.close()


def _with(url: str, **query: Any) -> str:
    joined = "&".join(f"{key}={value}" for key, value in query.items())
    return f"{url}{'&' if '?' in url else '?'}{joined}"


def _task(shards: int = 2) -> tuple[TaskInfo, list[TaskShard]]:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"n": 1})
    return task, [
        TaskShard(task.task_id, i, f"job-{task.task_id[-8:]}-{i}", "dummy", sub_index_offset=i)
        for i in range(shards)
    ]


def test_server_gone_raises_a_typed_retry_safe_error_and_the_store_recovers(
    server_url: str, proxy: FaultProxy
) -> None:
    # Before the fix, batch_write took its connection outside the error translation:
    # the driver's own OperationalError ("connection refused") reached the caller.
    with TaskStore(url=_with(proxy.url(server_url), retry_budget=0.5)) as store:
        first, first_shards = _task()
        store.save(first, first_shards)
        proxy.refuse()
        proxy.cut_all()
        for call in (
            lambda: store.save(*_task()),
            lambda: store.update_shard(first.task_id, 0, status="running"),
            lambda: store.archive(first.task_id),
            lambda: store.get(first.task_id),
            lambda: store.delete(first.task_id),
        ):
            with pytest.raises(TaskStoreError) as caught:
                call()
            assert isinstance(caught.value, DatabaseConnectionError), repr(caught.value)
            assert caught.value.retry_safe
        proxy.refuse(False)
        # The same object, without being recreated, works again.
        update = store.update_shard(first.task_id, 0, status="running")
        assert update.applied
        assert store.archive(first.task_id) is True
    with TaskStore(url=server_url) as check:
        assert check.get(first.task_id) is None
        archived = check.get_archived(first.task_id)
        assert archived is not None
        assert archived.status.value == "running"


def test_a_call_waits_for_the_server_within_its_retry_budget(
    server_url: str, proxy: FaultProxy
) -> None:
    with TaskStore(url=_with(proxy.url(server_url), retry_budget=20)) as store:
        store.save(*_task())
        proxy.refuse()
        proxy.cut_all()
        threading.Timer(1.0, proxy.refuse, args=(False,)).start()
        task, shards = _task()
        started = time.monotonic()
        store.save(task, shards)  # retried until the server is back
        assert time.monotonic() - started >= 0.9
        assert [s.shard_index for s in store.get_shards(task.task_id)] == [0, 1]


@pytest.mark.parametrize("where", ["before", "half"])
def test_a_write_cut_before_its_commit_is_retried_and_applied_once(
    server_url: str, proxy: FaultProxy, where: Any
) -> None:
    with TaskStore(url=proxy.url(server_url)) as store:
        task, shards = _task()
        store.save(task, shards)
        proxy.arm(rb"UPDATE task_shards", where)  # the shard's report: mid-transaction
        update = store.update_shard(task.task_id, 1, status="success", result={"c": 1})
        assert proxy.cuts >= 1
        assert not proxy.armed
        assert (update.applied, update.task_status.value) == (True, "running")
        proxy.arm(rb"DELETE", where)  # delete is not idempotent, but nothing was sent
        assert store.delete(task.task_id) is True
        assert store.get(task.task_id) is None


def test_after_commit_sent_idempotent_writes_are_retried_others_say_outcome_unknown(
    server_url: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), TaskStore(url=proxy.url(server_url)) as store:
        task, shards = _task()
        proxy.arm(COMMIT, "after")
        store.save(task, shards)  # cut after its COMMIT was sent: retried, once
        assert not proxy.armed
        proxy.arm(COMMIT, "after")
        update = store.update_shard(task.task_id, 0, status="running")
        assert not proxy.armed
        assert update.applied
        proxy.arm(COMMIT, "after")
        assert store.archive(task.task_id) is True  # archived now, whoever did it
        assert not proxy.armed
        proxy.arm(COMMIT, "after")
        with pytest.raises(OutcomeUnknownError) as caught:
            store.delete_archived(task.task_id)
        assert caught.value.retry_safe is False
        assert "may or may not have been applied" in str(caught.value)
        # The same store goes on; the delete did commit (the server had all of it),
        # once the server has run the COMMIT it read before the cut: under load, a
        # read on a new connection can come first.
        deadline = time.monotonic() + 30
        while store.get_archived(task.task_id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get_archived(task.task_id) is None
    with TaskStore(url=server_url) as check:
        assert check.count() == 0
        assert check.count_archived() == 0
    # Before: psycopg logged "error ignored terminating Pipeline" for each cut batch.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


def test_an_idempotent_write_that_stays_unknown_says_retry_is_safe(
    server_url: str, proxy: FaultProxy
) -> None:
    with TaskStore(url=_with(proxy.url(server_url), retry_budget=0.3)) as store:
        task, shards = _task()
        store.save(task, shards)
        proxy.arm(COMMIT, "after")
        proxy.refuse()  # and the server stays away past the budget
        with pytest.raises(OutcomeUnknownError) as caught:
            store.update_shard(task.task_id, 0, status="running")
        assert caught.value.retry_safe is True
        proxy.refuse(False)
        assert store.update_shard(task.task_id, 0, status="running").applied


def test_lost_connection_without_budget_is_connection_lost(
    server_url: str, proxy: FaultProxy
) -> None:
    with TaskStore(url=_with(proxy.url(server_url), retry_budget=0)) as store:
        task, shards = _task()
        store.save(task, shards)
        proxy.arm(rb"DELETE", "before")  # delete: statement by statement, COMMIT apart
        with pytest.raises(ConnectionLostError) as caught:
            store.delete(task.task_id)
        assert caught.value.retry_safe
        assert store.get(task.task_id) is not None


def test_statement_past_the_statement_timeout_raises_statement_timeout_error(
    server_url: str,
) -> None:
    url = _with(server_url, statement_timeout=0.5, lock_timeout=30)
    with TaskStore(url=url) as store:
        task, shards = _task()
        store.save(task, shards)
        for _ in range(6):  # psycopg prepares what it ran five times
            store.update_shard(task.task_id, 1, status="running")
        holder = create_engine(server_url)
        try:
            with holder.connect() as conn:
                conn.execute(
                    text("SELECT task_id FROM tasks WHERE task_id = :t FOR UPDATE"),
                    {"t": task.task_id},
                )
                started = time.monotonic()
                with pytest.raises(StatementTimeoutError) as caught:
                    store.update_shard(task.task_id, 0, status="running")
                waited = time.monotonic() - started
                conn.rollback()
        finally:
            holder.dispose()
        assert caught.value.retry_safe
        assert waited < 10
        assert "statement_timeout" in str(caught.value)
        # Later calls work, on connections whose prepared statements (psycopg prepares
        # what it ran five times) a cancelled pipeline may have put out of step.
        for _ in range(3):
            assert store.update_shard(task.task_id, 0, status="running").applied


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_store_options_in_the_url_are_checked(kind: str, value: str) -> None:
    url = f"{kind}://user@127.0.0.1:1/db?retry_budget=1&statement_timeout={value}"
    with pytest.raises(InvalidInputError, match="statement_timeout"):
        TaskStore(url=url)
