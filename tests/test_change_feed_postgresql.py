"""PostgreSQL's wake-up for followers (schema version 16): every write that changed
something sends ``NOTIFY uniqc_changes`` right after its ``COMMIT``, on the same
connection (in the same pipeline on the hot paths), never from inside the writing
transaction, where PostgreSQL's notification lock would serialise all writers'
commits. The notification is only a wake-up: a write whose ``NOTIFY`` fails is done
and reported done, and a follower finds its change by reading the log anyway."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.backends.postgresql import (
    CHANGES_CHANNEL,
    FOLLOWER_LOCK,
    FOLLOWERS_CHECKED_EVERY,
    PostgresBackend,
    _NotifyListener,
)
from uniqc_taskstore.changes import PUSH_SAFETY_NET
from uniqc_taskstore.errors import SchemaTooNewError
from uniqc_taskstore.migrator import CURRENT_SCHEMA_VERSION, MIGRATIONS, migrate


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def url(fresh_database_url: Callable[[str], str]) -> str:
    return fresh_database_url("postgresql")


def _follow(conn: psycopg.Connection[Any]) -> None:
    """Say that ``conn`` follows, as a store's listening connection does."""
    conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", FOLLOWER_LOCK)


@pytest.fixture
def listener(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection listening on the store's channel, as a follower's does."""
    TaskStore(url=url).close()  # the database is a store before anyone listens
    conn = psycopg.connect(_libpq(url), autocommit=True)
    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
    _follow(conn)
    try:
        yield conn
    finally:
        conn.close()


def _woken(conn: psycopg.Connection[Any], timeout: float = 5.0) -> int:
    """How many notifications arrive within ``timeout`` s of the first (0: none)."""
    got = list(conn.notifies(timeout=timeout, stop_after=1))
    if got:
        got += list(conn.notifies(timeout=0.2))
    return len(got)


def _triggers(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'changes'::regclass")
                ).scalars()
            )
    finally:
        engine.dispose()


def _task() -> TaskInfo:
    return TaskInfo(f"uqt_{uuid.uuid4().hex}", "dummy", TaskStatus.RUNNING)


def test_every_write_path_wakes_a_listener_once_it_committed(
    url: str, listener: psycopg.Connection[Any]
) -> None:
    assert _triggers(url) == []  # no NOTIFY inside any writing transaction
    with TaskStore(url=url) as store:
        task = _task()
        shard, ok = TaskShard(task.task_id, 0, "j-1", "d"), TaskStatus.SUCCESS
        writes: list[tuple[str, Callable[[], object]]] = [
            ("save (pipeline)", lambda: store.save(task, [shard])),
            ("update_shard (pipeline)", lambda: store.update_shard(task.task_id, 0, status=ok)),
            ("set_tags (generic path)", lambda: store.set_tags(task.task_id, {"run": "a"})),
            ("archive (pipeline)", lambda: store.archive(task.task_id)),
            ("restore (generic path)", lambda: store.restore(task.task_id)),
            ("delete (generic path)", lambda: store.delete(task.task_id)),
        ]
        for name, write in writes:
            write()
            assert _woken(listener) >= 1, f"{name} woke no listener"
        # A write that changed nothing wakes nobody.
        assert store.delete(task.task_id) is False
        assert _woken(listener, timeout=0.5) == 0


def test_writers_notify_only_while_somebody_follows(url: str) -> None:
    """Nobody follows: no NOTIFY (its statement and transaction cost each write about
    a seventh of its CPU). A follower that starts is notified within
    FOLLOWERS_CHECKED_EVERY; once it stops, writers stop notifying within as long."""
    TaskStore(url=url).close()
    conn = psycopg.connect(_libpq(url), autocommit=True)
    try:
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")  # hears, but has not said it follows
        with TaskStore(url=url) as store:
            task = _task()
            store.save(task, [TaskShard(task.task_id, 0, "j-1", "d")])  # pipeline
            store.set_tags(task.task_id, {"run": "a"})  # generic path
            assert _woken(conn, timeout=0.5) == 0
            _follow(conn)
            time.sleep(FOLLOWERS_CHECKED_EVERY + 0.2)
            store.update_shard(task.task_id, 0, status=TaskStatus.SUCCESS)
            assert _woken(conn) == 1
            store.set_tags(task.task_id, {"run": "b"})
            assert _woken(conn) == 1
            conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", FOLLOWER_LOCK)
            time.sleep(FOLLOWERS_CHECKED_EVERY + 0.2)
            store.set_tags(task.task_id, {"run": "c"})
            store.archive(task.task_id)
            assert _woken(conn, timeout=0.5) == 0
            # A store's own follower says it follows, and a lost one stops saying it.
            feed = store.follow(wait=30.0)
            follower = threading.Thread(target=lambda: next(feed), daemon=True)
            follower.start()
            time.sleep(FOLLOWERS_CHECKED_EVERY + 0.2)
            store.restore(task.task_id)
            assert _woken(conn) == 1
            follower.join(timeout=5)
            assert not follower.is_alive()
            feed.close()
            time.sleep(FOLLOWERS_CHECKED_EVERY + 0.2)
            store.set_tags(task.task_id, {"run": "d"})
            assert _woken(conn, timeout=0.5) == 0
    finally:
        conn.close()


def test_a_write_whose_wake_up_fails_is_done_and_its_change_still_followed(url: str) -> None:
    """A role that may not call ``pg_notify``: every write succeeds, reports success
    once, and a follower (who may) still gets each change, from its periodic read."""
    TaskStore(url=url).close()
    role = f"uniqc_t_nonotify_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        conn.execute(text("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC"))
    limited = make_url(url).set(username=role).render_as_string(hide_password=False)
    try:
        with TaskStore(url=url) as watcher, TaskStore(url=limited) as writer:
            feed = watcher.follow(wait=30.0)
            seen: list[tuple[str, str]] = []
            done = threading.Event()

            def follow() -> None:
                for change in feed:
                    seen.append((change.task_id, change.kind))
                    if len(seen) == 3:
                        done.set()
                        return

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            time.sleep(0.3)  # the follower holds its start token
            task = _task()
            started = time.monotonic()
            writer.save(task, [TaskShard(task.task_id, 0, "j-1", "d")])  # pipeline
            writer.update_shard(task.task_id, 0, status="success")  # pipeline
            writer.set_tags(task.task_id, {"run": "a"})  # generic path
            assert done.wait(PUSH_SAFETY_NET + 10), seen
            assert time.monotonic() - started < PUSH_SAFETY_NET + 5
            assert seen == [
                (task.task_id, "saved"),
                (task.task_id, "updated"),
                (task.task_id, "tagged"),
            ]
            got = writer.get(task.task_id)
            assert got is not None
            assert got.status == TaskStatus.SUCCESS
            assert got.tags == {"run": "a"}
            # The connections whose NOTIFY failed are reused: more writes go through,
            # each recorded once.
            start = watcher.changes().token
            for _ in range(5):
                writer.update_shard(task.task_id, 0, status="success")
                writer.set_tags(task.task_id, {"run": "b"})
            kinds = [c.kind for c in watcher.changes(start)]
            assert kinds == ["updated", "tagged"] * 5
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_a_version_15_store_loses_its_trigger_and_version_15_code_refuses_it(
    url: str,
) -> None:
    backend = PostgresBackend(url)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:15])
    finally:
        engine.dispose()
    assert _triggers(url) == ["uniqc_changes_notify"]
    conn = psycopg.connect(_libpq(url), autocommit=True)
    try:
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        _follow(conn)
        with TaskStore(url=url) as store:
            assert store.schema_version == CURRENT_SCHEMA_VERSION
            assert _triggers(url) == []
            store.save(_task())
            # One wake-up per write: the trigger's would have made it two.
            assert _woken(conn) == 1
        engine = backend.create_engine()
        try:
            with pytest.raises(SchemaTooNewError):
                migrate(backend, engine, MIGRATIONS[:15])
        finally:
            engine.dispose()
    finally:
        conn.close()


def test_a_write_whose_connection_drops_before_its_notify_is_done_and_followed(
    url: str,
) -> None:
    """The connection is cut after the COMMIT was answered, before the NOTIFY reaches
    the server (the generic path sends it on its own): the write returns as done, its
    change is followed, and the store goes on with a new connection."""
    from fault_proxy import proxy_for

    TaskStore(url=url).close()
    proxy = proxy_for(url)
    try:
        with TaskStore(url=url) as watcher, TaskStore(url=proxy.url(url)) as writer:
            start = watcher.changes().token
            listener = watcher._db.backend.change_listener(watcher._db.engine)
            assert listener is not None
            try:
                time.sleep(FOLLOWERS_CHECKED_EVERY + 0.2)  # writers know it follows
                task = _task()
                writer.save(task)
                proxy.arm(rb"pg_notify", "before")
                assert writer.set_tags(task.task_id, {"run": "a"}) == {"run": "a"}
                assert not proxy.armed
                assert proxy.cuts >= 1
            finally:
                listener.close()
            assert [c.kind for c in watcher.changes(start)] == ["saved", "tagged"]
            assert writer.set_tags(task.task_id, {"run": "b"}) == {"run": "b"}
    finally:
        proxy.close()


class _InterruptedAt:
    """A listening connection on which a Ctrl-C arrives as ``statement`` is sent."""

    def __init__(self, conn: Any, statement: str) -> None:
        self._conn, self._statement = conn, statement

    def execute(self, sql: str) -> Any:
        if sql.startswith(self._statement):
            raise KeyboardInterrupt
        return self._conn.execute(sql)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _followers(url: str) -> int:
    """Sessions that hold the follower lock, seen from a connection of its own."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = %s AND objsubid = 2",
            FOLLOWER_LOCK,
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("statement", ["UNLISTEN", "SELECT pg_advisory_unlock_shared"])
def test_a_ctrl_c_while_a_follower_stops_leaves_nobody_following(url: str, statement: str) -> None:
    """Ctrl-C while the listener gives its connection back, half way (still listening,
    or still holding the follower lock): the KeyboardInterrupt goes on to the caller,
    and that connection is closed, never pooled, so writers stop notifying."""
    with TaskStore(url=url) as store:
        listener = store._db.backend.change_listener(store._db.engine)
        assert isinstance(listener, _NotifyListener)
        assert _followers(url) == 1
        listener._conn = _InterruptedAt(listener._conn, statement)
        with pytest.raises(KeyboardInterrupt):
            listener.close()
        deadline = time.monotonic() + 5
        while _followers(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _followers(url) == 0
        listener.close()  # closing again is a no-op
        store.save(_task())  # the store goes on
