"""Server pools: a pooled connection the server closed is replaced before use, and
MariaDB's pool leaves no transaction (nor its metadata locks) open on a returned
connection, though it skips the ROLLBACK after our COMMIT."""

from __future__ import annotations

import select
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from uniqc_taskstore import TaskInfo, TaskStore


def _server(store: TaskStore, backend_kind: str) -> None:
    if backend_kind == "sqlite":
        pytest.skip("server pools only")


def _pooled(store: TaskStore) -> list[Any]:
    """The driver connections idle in the store's pool."""
    records = list(store._db.engine.pool._pool.queue)  # type: ignore[attr-defined]
    assert records, "the store holds no pooled connection"
    return [record.dbapi_connection for record in records]


def _session(driver: Any) -> int:
    """A driver connection's server session id (read without a round trip)."""
    pid = getattr(getattr(driver, "info", None), "backend_pid", None)
    return int(pid) if pid is not None else int(driver.thread_id())


def _socket(driver: Any) -> int:
    sock = getattr(driver, "_sock", None)
    return int(sock.fileno()) if sock is not None else int(driver.fileno())


def _wait_until_closed_by_server(drivers: list[Any]) -> None:
    """Until the server's closing has reached every one of these sockets."""
    for driver in drivers:
        readable: list[Any] = []
        for _ in range(500):
            readable, _, _ = select.select([_socket(driver)], [], [], 0.01)
            if readable:
                break
        assert readable, "the server's closing never reached the client"


def _kill_sessions(url: str, kind: str, sessions: list[int]) -> None:
    """Have the server end these sessions, and wait until it has."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    listed = ", ".join(str(int(s)) for s in sessions)
    if kind == "postgresql":
        alive = f"SELECT pid FROM pg_stat_activity WHERE pid IN ({listed})"
        kill = "SELECT pg_terminate_backend({})"
    else:
        alive = f"SELECT id FROM information_schema.processlist WHERE id IN ({listed})"
        kill = "KILL {}"
    try:
        with engine.connect() as conn:
            for session in sessions:
                conn.execute(text(kill.format(int(session))))
            for _ in range(500):  # until the server has closed them
                if not conn.execute(text(alive)).first():
                    break
                time.sleep(0.01)
    finally:
        engine.dispose()


@pytest.mark.parametrize("op", ["get", "save"])
def test_connection_killed_by_server_is_replaced_before_use(
    store: TaskStore, backend_kind: str, store_location: dict[str, Any], op: str
) -> None:
    _server(store, backend_kind)
    store._db.engine.dispose()  # from here the pool holds only this test's connections
    store.save(TaskInfo("t1", "originq:WK_C180"))
    drivers = _pooled(store)
    _kill_sessions(store_location["url"], backend_kind, [_session(d) for d in drivers])
    _wait_until_closed_by_server(drivers)
    if op == "get":
        got = store.get("t1")
        assert got is not None
        assert got.task_id == "t1"
    else:
        store.save(TaskInfo("t2", "originq:WK_C180"))
        assert store.get("t2") is not None


def test_connection_idle_past_the_limit_is_pinged(
    store: TaskStore, backend_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _server(store, backend_kind)
    store._db.engine.dispose()  # one fresh connection, used just now by each call
    store.save(TaskInfo("t1", "originq:WK_C180"))
    backend = store._db.backend
    pings: list[int] = []
    real = backend.ping  # type: ignore[attr-defined]

    def counted(*args: Any) -> bool:
        pings.append(1)
        return bool(real(*args))

    monkeypatch.setattr(backend, "ping", counted)
    store.get("t1")
    assert pings == []  # just used: no round trip spent on a ping
    monkeypatch.setattr(backend, "idle_ping_seconds", -1.0)
    assert store.get("t1") is not None
    assert pings == [1]


def test_mariadb_pool_rolls_back_only_what_we_did_not_commit(
    store: TaskStore, backend_kind: str, store_location: dict[str, Any]
) -> None:
    if backend_kind != "mysql":
        pytest.skip("MariaDB's pool reset")
    engine = store._db.engine
    engine.dispose()  # from here on the pool holds the one connection calls reuse
    store.save(TaskInfo("t1", "originq:WK_C180"))
    raw = engine.raw_connection()
    driver: Any = raw.dbapi_connection
    real_rollback = driver.rollback
    rollbacks: list[int] = []

    def counted_rollback() -> None:
        rollbacks.append(1)
        real_rollback()

    driver.rollback = counted_rollback
    session = driver.thread_id()
    raw.close()  # a checkout nobody committed: rolled back
    assert rollbacks == [1]
    store.save(TaskInfo("t2", "originq:WK_C180"))  # committed: no ROLLBACK after it
    assert rollbacks == [1]
    # A point read runs outside any transaction of ours; the pool ends the read-only
    # transaction MariaDB opened for it, so its metadata locks do not outlive it.
    assert store.get("t1") is not None
    assert rollbacks == [1, 1]
    other = create_engine(store_location["url"])
    try:
        with other.connect() as conn:
            open_transactions = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.innodb_trx "
                    "WHERE trx_mysql_thread_id = :id"
                ),
                {"id": session},
            ).scalar_one()
            assert open_transactions == 0
            conn.execute(text("SET SESSION lock_wait_timeout = 2"))
            conn.execute(text("ALTER TABLE tasks COMMENT = ''"))  # no metadata lock held
    finally:
        other.dispose()
