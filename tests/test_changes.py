"""The change feed: every committed change, in commit order, resumable by token."""

from __future__ import annotations

import gc
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import (
    ChangeFilter,
    ChangesExpiredError,
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
    timestamps,
)


def task(status: TaskStatus = TaskStatus.PENDING) -> TaskInfo:
    now = datetime.now(UTC).isoformat()
    return TaskInfo(generate_uniqc_task_id(), "dummy", status, submit_time=now, update_time=now)


def shard(task_id: str, index: int = 0, status: TaskStatus = TaskStatus.RUNNING) -> TaskShard:
    now = datetime.now(UTC).isoformat()
    return TaskShard(
        task_id,
        index,
        f"job-{task_id[-6:]}-{index}",
        "dummy",
        status=status,
        submit_time=now,
        update_time=now,
    )


def kinds(store: TaskStore, token: str) -> list[tuple[str, str, str | None]]:
    page = store.changes(token)
    return [(c.task_id, c.kind, c.status and c.status.value) for c in page]


def test_since_none_starts_from_now_and_sees_nothing_before(store: TaskStore) -> None:
    store.save(task())
    page = store.changes()
    assert list(page) == []
    assert page.token
    assert not page.more
    assert list(store.changes(page.token)) == []


def test_every_kind_of_write_is_in_the_feed_with_the_status_after_it(store: TaskStore) -> None:
    start = store.changes().token
    a, b = task(), task()
    store.save(a)
    store.save_many([b])
    store.save_shard(shard(a.task_id))
    store.update_shard(a.task_id, 0, status="success")
    store.set_tags(a.task_id, {"team": "qec"})
    store.update_metadata(a.task_id, {"x": 1})
    store.archive(a.task_id)
    store.restore(a.task_id)
    store.archive_many([b.task_id])
    store.restore_many([b.task_id])
    store.delete(b.task_id)
    store.archive(a.task_id)
    store.delete_archived(a.task_id)
    assert kinds(store, start) == [
        (a.task_id, "saved", "pending"),
        (b.task_id, "saved", "pending"),
        (a.task_id, "updated", "running"),
        (a.task_id, "updated", "success"),
        (a.task_id, "tagged", "success"),
        (a.task_id, "updated", "success"),
        (a.task_id, "archived", "success"),
        (a.task_id, "restored", "success"),
        (b.task_id, "archived", "pending"),
        (b.task_id, "restored", "pending"),
        (b.task_id, "deleted", None),
        (a.task_id, "archived", "success"),
        (a.task_id, "purged", None),
    ]


def test_a_write_that_changes_nothing_is_not_in_the_feed(store: TaskStore) -> None:
    start = store.changes().token
    assert store.delete(generate_uniqc_task_id()) is False
    assert store.archive(generate_uniqc_task_id()) is False
    assert store.delete_many([generate_uniqc_task_id()]).done == []
    assert list(store.changes(start)) == []


def test_pages_resume_by_token_and_each_change_carries_its_own(store: TaskStore) -> None:
    start = store.changes().token
    made = [task() for _ in range(7)]
    for t in made:
        store.save(t)
    seen = []
    token = start
    while True:
        page = store.changes(token, limit=3)
        seen += [c.task_id for c in page]
        token = page.token
        if not page.more:
            break
    assert seen == [t.task_id for t in made]
    third = store.changes(start, limit=3).changes[2]
    assert [c.task_id for c in store.changes(third.token)] == [t.task_id for t in made[3:]]


def test_a_filter_keeps_some_changes_and_the_token_moves_past_the_rest(store: TaskStore) -> None:
    start = store.changes().token
    a, b = task(), task()
    store.save(a)
    store.save(b)
    store.delete(a.task_id)
    page = store.changes(start, filter=ChangeFilter(kinds=["deleted"]))
    assert [(c.task_id, c.kind) for c in page] == [(a.task_id, "deleted")]
    page = store.changes(start, filter=ChangeFilter(task_ids=[b.task_id]))
    assert [c.task_id for c in page] == [b.task_id]
    assert list(store.changes(page.token)) == []


def test_pruned_changes_make_an_older_token_expire(store: TaskStore) -> None:
    old = store.changes().token
    store.save(task())
    time.sleep(0.01)
    assert store.prune_changes(older_than=0) == 1
    with pytest.raises(ChangesExpiredError):
        store.changes(old)
    # (A token taken between the change and the prune may expire too on PostgreSQL, when
    # its snapshot saw an older transaction still running: README, "The change feed".)
    fresh = store.changes().token
    assert list(store.changes(fresh)) == []
    t = task()
    store.save(t)
    assert [c.task_id for c in store.changes(fresh)] == [t.task_id]


def test_clear_all_expires_older_tokens_and_numbers_go_on(store: TaskStore) -> None:
    old = store.changes().token
    store.save(task())
    store.clear_all()
    with pytest.raises(ChangesExpiredError):
        store.changes(old)
    fresh = store.changes().token
    t = task()
    store.save(t)
    assert [c.task_id for c in store.changes(fresh)] == [t.task_id]


@pytest.mark.parametrize("bad", ["", "nonsense", "eyJ4Ijo", 5, ["x"]])
def test_a_token_not_ours_is_refused(store: TaskStore, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="since"):
        store.changes(bad)  # type: ignore[arg-type]


def test_limits_and_filters_are_checked(store: TaskStore) -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        store.changes(None, limit=0)
    with pytest.raises(InvalidInputError, match="kinds"):
        ChangeFilter(kinds=["exploded"])


def test_update_time_never_goes_backwards_whatever_the_writer_clock(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = task()
    store.save(t)
    stored = store.get(t.task_id)
    assert stored is not None
    seen = stored.update_time
    past = "2000-01-01T00:00:00.000000+00:00"
    for module in ("store", "server_writes", "tags", "edits"):
        monkeypatch.setattr(f"uniqc_taskstore.{module}.utc_now", lambda: past)
    monkeypatch.setattr(timestamps, "utc_now", lambda: past)
    store.save(t)
    store.save_shard(shard(t.task_id))
    store.update_shard(t.task_id, 0, status="success")
    store.set_tags(t.task_id, {"a": "b"})
    store.update_metadata(t.task_id, {"k": 1})
    after = store.get(t.task_id)
    assert after is not None
    assert after.update_time >= seen
    assert store.get_shards(t.task_id)[0].update_time >= past


def test_wait_for_changes_returns_when_another_thread_writes(store: TaskStore) -> None:
    token = store.changes().token
    assert store.wait_for_changes(token, 0.05) is False
    t = task()
    timer = threading.Timer(0.2, lambda: store.save(t))
    timer.start()
    started = time.monotonic()
    assert store.wait_for_changes(token, 10) is True
    assert time.monotonic() - started < 5
    timer.join()


def _interrupted_within(seconds: float, call: Callable[[], object], after: float) -> float:
    """Run ``call`` in this (the main) thread while another sends it SIGINT (Ctrl-C)
    ``after`` seconds in, as a terminal does; how long the call went on after that.
    Fails if the call ended without raising the KeyboardInterrupt."""
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    assert main is not None
    sent: list[float] = []

    def interrupt() -> None:
        sent.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    # CPython ignores (prints) a KeyboardInterrupt raised while the garbage collector
    # runs a finaliser or weakref callback, such as SQLAlchemy's for the engines of
    # earlier tests: collect now and not during the call, so that the signal lands in
    # the call's own code.
    gc.collect()
    gc.disable()
    timer = threading.Timer(after, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
        ended = time.monotonic()
    finally:
        timer.cancel()
        timer.join()
        gc.enable()
    assert sent
    assert ended - sent[0] < seconds
    return ended - sent[0]


def _polling(store: TaskStore, token: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        store.changes(token)


def test_ctrl_c_ends_wait_for_changes_follow_and_changes_at_once(store: TaskStore) -> None:
    """Wherever the interruption lands (sleeping between probes, in the driver's socket
    read of a probe, on PostgreSQL in the LISTEN wait), it leaves the call at once and
    is never retried as a lost connection: on MariaDB, PyMySQL closes the socket it
    was reading and the ROLLBACK on the way out failed on it, and that error (a
    "lost connection") was retried in place of the Ctrl-C, which was lost."""
    token = store.changes().token
    rng = random.Random(19)
    calls: list[Callable[[], object]] = [
        lambda: store.wait_for_changes(token, timeout=30),
        lambda: next(store.follow(token, wait=30)),
        lambda: _polling(store, token),
    ]
    for call in calls:
        for _ in range(6):
            _interrupted_within(3.0, call, after=rng.uniform(0.05, 0.3))
    # and the store still works afterwards
    t = task()
    store.save(t)
    assert [c.task_id for c in store.changes(token)] == [t.task_id]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("nth_read", [1, 2, 3, 5])
def test_an_interruption_inside_pymysqls_socket_read_is_raised_not_retried(
    store: TaskStore,
    backend_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    interruption: type[BaseException],
    nth_read: int,
) -> None:
    """What a Ctrl-C during a probe's socket read does, made exact: PyMySQL closes the
    socket and lets the interruption through; it must leave ``wait_for_changes``."""
    if backend_kind != "mysql":
        pytest.skip("PyMySQL's socket read")
    import pymysql.connections  # type: ignore[import-untyped]

    token = store.changes().token
    real = pymysql.connections.Connection._read_bytes
    reads = [0]

    def read_bytes(self: Any, count: int) -> Any:
        reads[0] += 1
        if reads[0] == nth_read:
            self._force_close()  # as PyMySQL does on any BaseException in the read
            raise interruption()
        return real(self, count)

    monkeypatch.setattr(pymysql.connections.Connection, "_read_bytes", read_bytes)
    started = time.monotonic()
    with pytest.raises(interruption):
        store.wait_for_changes(token, timeout=30)
    assert time.monotonic() - started < 3
    assert reads[0] == nth_read
    monkeypatch.undo()
    assert store.wait_for_changes(token, timeout=0) is False  # the store goes on


def test_a_driver_error_that_replaced_an_interruption_is_never_retried() -> None:
    """The rule, whatever the driver: a driver error raised while an interruption was
    on its way out (a failed ROLLBACK) raises the interruption again, at once."""
    from sqlalchemy.exc import OperationalError

    from uniqc_taskstore.backends.base import BusyPolicy
    from uniqc_taskstore.retries import with_retries

    class Lost(Exception):
        pass

    class Backend:
        def describe(self) -> str:
            return "a database"

        def is_busy(self, exc: object) -> bool:
            return False

        def is_stale_session(self, exc: object) -> bool:
            return False

        def is_connection_failure(self, exc: object) -> bool:
            return True

        def is_login_refused(self, exc: object) -> bool:
            return False

    for interruption in (KeyboardInterrupt, SystemExit):
        attempts = [0]

        def attempt(
            interruption: type[BaseException] = interruption, attempts: list[int] = attempts
        ) -> None:
            attempts[0] += 1
            try:
                raise interruption()
            except BaseException:
                raise OperationalError(
                    "ROLLBACK", None, Lost(), connection_invalidated=True
                ) from None

        with pytest.raises(interruption):
            with_retries(Backend(), BusyPolicy(), attempt, budget=30.0, idempotent=True)  # type: ignore[arg-type]
        assert attempts == [1]


def test_a_call_made_while_handling_a_ctrl_c_is_retried_as_any_call() -> None:
    """A store call in an ``except KeyboardInterrupt:`` block (marking tasks cancelled
    on the way out) whose connection fails is retried as any call is: the Ctrl-C being
    handled is older than the call, not an interruption of it."""
    from sqlalchemy.exc import OperationalError

    from uniqc_taskstore.backends.base import BusyPolicy
    from uniqc_taskstore.retries import with_retries

    class Lost(Exception):
        pass

    class Backend:
        def describe(self) -> str:
            return "a database"

        def is_busy(self, exc: object) -> bool:
            return False

        def is_stale_session(self, exc: object) -> bool:
            return False

        def is_connection_failure(self, exc: object) -> bool:
            return True

        def is_login_refused(self, exc: object) -> bool:
            return False

    attempts = [0]

    def attempt() -> str:
        attempts[0] += 1
        if attempts[0] == 1:
            raise OperationalError("UPDATE tasks", None, Lost(), connection_invalidated=True)
        return "saved"

    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        try:
            done = with_retries(Backend(), BusyPolicy(), attempt, budget=30.0, idempotent=True)  # type: ignore[arg-type]
        except KeyboardInterrupt:
            pytest.fail("the Ctrl-C being handled came out of the call made after it")
    assert done == "saved"
    assert attempts == [2]


def test_follow_from_a_token_sees_what_was_written_after_it(store: TaskStore) -> None:
    token = store.changes().token
    made = [task() for _ in range(3)]

    def write() -> None:
        for t in made:
            store.save(t)

    writer = threading.Timer(0.1, write)
    writer.start()
    feed = store.follow(token, wait=0.2)
    got = [next(feed).task_id for _ in made]
    feed.close()
    writer.join()
    assert got == [t.task_id for t in made]


def test_a_version_11_file_opens_and_its_writes_reach_the_feed(tmp_path: Path) -> None:
    from uniqc_taskstore.backends.sqlite import SqliteBackend
    from uniqc_taskstore.migrator import MIGRATIONS, migrate

    path = tmp_path / "tasks.sqlite"
    backend = SqliteBackend(path)
    backend.prepare()
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:11])
    finally:
        engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (11,)
        conn.execute(
            "INSERT INTO tasks (task_id, backend, platform, status, shots, submit_time,"
            " update_time, metadata_json) VALUES (?, 'dummy', 'dummy', 'pending', 1, ?, ?, '{}')",
            (
                "uqt_" + "c" * 32,
                "2026-01-01T00:00:00.000000+00:00",
                "2026-01-01T00:00:00.000000+00:00",
            ),
        )
    with TaskStore(tmp_path) as opened:
        assert opened.schema_version >= 12
        token = opened.changes().token
        old = opened.get("uqt_" + "c" * 32)
        assert old is not None
        opened.save(old)
        assert [(c.task_id, c.kind) for c in opened.changes(token)] == [(old.task_id, "saved")]


def test_a_write_that_waited_for_a_lock_is_stamped_after_the_lock_was_released(
    store: TaskStore, raw_database: Any
) -> None:
    t = task()
    store.save(t)
    store.save_shard(shard(t.task_id))
    engine = raw_database.engine
    with engine.connect() as holder:
        if engine.dialect.name == "sqlite":
            holder.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            holder.begin()
            holder.exec_driver_sql(
                "SELECT task_id FROM tasks WHERE task_id = %s FOR UPDATE", (t.task_id,)
            )
        writers = [
            threading.Thread(target=lambda: store.save(t)),
            threading.Thread(target=lambda: store.update_shard(t.task_id, 0, status="success")),
        ]
        for writer in writers:
            writer.start()
        time.sleep(0.5)
        released = timestamps.utc_now()
        if engine.dialect.name == "sqlite":
            holder.exec_driver_sql("COMMIT")
        else:
            holder.commit()
        for writer in writers:
            writer.join()
    stored = store.get(t.task_id)
    assert stored is not None
    assert stored.update_time >= released
    assert store.get_shards(t.task_id)[0].update_time >= released


def _end_listeners(url: str) -> int:
    """Terminate the server sessions LISTENing for the feed on ``url``'s database (as a
    server restart or a network cut would end them); how many there were."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                        " AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("call", ["wait_for_changes", "follow"])
def test_a_lost_listen_connection_is_listened_again_and_no_change_is_missed(
    fresh_database_url: Callable[[str], str], call: str
) -> None:
    """PostgreSQL: the connection a wait LISTENs on is cut mid-wait. No driver error
    leaves the call; it listens again and still returns the change written after."""
    url = fresh_database_url("postgresql")
    with TaskStore.from_url(url) as store, TaskStore.from_url(url) as writer:
        token = store.changes().token
        t = task()
        ended: list[int] = []

        def cut_then_write() -> None:
            deadline = time.monotonic() + 5
            while not ended or ended[-1] == 0:
                ended.append(_end_listeners(url))
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            writer.save(t)

        thread = threading.Thread(target=cut_then_write)
        thread.start()
        try:
            if call == "wait_for_changes":
                assert store.wait_for_changes(token, 20) is True
                assert [c.task_id for c in store.changes(token).changes] == [t.task_id]
            else:
                change = next(store.follow(since=token, wait=20))
                assert change.task_id == t.task_id
        finally:
            thread.join()
        assert ended[-1] >= 1  # a listening session was there, and was cut
