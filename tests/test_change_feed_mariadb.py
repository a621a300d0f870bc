"""MariaDB's change feed without a commit tick (schema version 15): read in ``seq``
order, its horizon found by a dirty read (see ``backends/changefeed.py``). A change
still in flight holds the feed back until it commits, deletions are recorded by
``INSERT ... SELECT`` only, tokens of the tick design read on without loss, and a
server in ``innodb_autoinc_lock_mode`` 2 keeps the tick design."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import mysql

from uniqc_taskstore import (
    ChangesExpiredError,
    TaskInfo,
    TaskStatus,
    TaskStore,
    change_log,
    generate_uniqc_task_id,
)
from uniqc_taskstore.backends import changefeed
from uniqc_taskstore.backends.changefeed import (
    MariaFeed,
    SeqFeed,
    feed_for,
    note_autoinc_lock_mode,
)
from uniqc_taskstore.errors import SchemaTooNewError
from uniqc_taskstore.timestamps import utc_now

MARIADB = pytest.mark.parametrize("backend_kind", ["mysql"])
"""For tests on the ``store`` fixture: its MariaDB side only."""


def task() -> TaskInfo:
    now = datetime.now(UTC).isoformat()
    return TaskInfo(generate_uniqc_task_id(), "dummy", TaskStatus.PENDING, None, 1, now, now)


def _token_tag(token: str) -> str:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    tag: str = json.loads(raw)[0]
    return tag


@MARIADB
def test_the_seq_design_is_used_where_the_server_allows_it(store: TaskStore) -> None:
    # This server runs innodb_autoinc_lock_mode 1 (MariaDB's default).
    assert isinstance(feed_for(store._db.engine.dialect), SeqFeed)
    assert _token_tag(store.changes().token) == "q"
    store.save(task())
    with store._db.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM changes WHERE txid IS NULL")).scalar() == 1
        ticks = conn.execute(text("SELECT COUNT(*) FROM change_marks WHERE name = 'tick'"))
        assert ticks.scalar() == 0


@MARIADB
def test_a_change_in_flight_holds_the_feed_back_until_it_commits(store: TaskStore) -> None:
    start = store.changes().token
    a, b = task(), task()
    store.save(a)
    # A write whose transaction stays open after its change row: the store's own
    # statement path, on a connection of the store's engine.
    held = store._db.engine.connect()
    transaction = held.begin()
    try:
        change_log.record(held, "updated", [a.task_id], utc_now())
        store.save(b)  # a larger seq, committed first
        page = store.changes(start)
        assert [(c.task_id, c.kind) for c in page] == [(a.task_id, "saved")]
        assert list(store.changes(page.token)) == []
        assert not store.wait_for_changes(page.token, 0.1)
        fresh = store.changes().token  # "now" is before the change in flight too
        transaction.commit()
    finally:
        held.close()
    after = [(c.task_id, c.kind) for c in store.changes(page.token)]
    assert after == [(a.task_id, "updated"), (b.task_id, "saved")]
    assert [(c.task_id, c.kind) for c in store.changes(fresh)][:1] == [(a.task_id, "updated")]


@MARIADB
def test_now_is_before_every_change_of_a_transaction_larger_than_a_window(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction in flight whose changes fill more than the newest window (as an
    import with a large batch_size does), committed changes of others between them: a
    fresh token is before all of them, so the follower gets every one once it commits."""
    monkeypatch.setattr(changefeed, "START_WINDOW", 3)
    saved = [task() for _ in range(4)]
    for each in saved:
        store.save(each)  # committed history before it: windows that are all committed
    ids = [t.task_id for t in saved]
    held = store._db.engine.connect()
    transaction = held.begin()
    other = task()
    try:
        change_log.record(held, "tagged", ids, utc_now())
        store.save(other)  # committed between the held transaction's changes
        change_log.record(held, "updated", ids, utc_now())
        fresh = store.changes().token
        transaction.commit()
    finally:
        held.close()
    got = [(c.task_id, c.kind) for c in store.changes(fresh)]
    for kind in ("tagged", "updated"):
        assert [i for i, k in got if k == kind] == ids, f"{kind} changes lost: {got}"
    assert got.index((other.task_id, "saved")) < got.index((ids[0], "updated"))


@MARIADB
def test_the_dirty_read_leaves_the_connection_reading_committed_rows(store: TaskStore) -> None:
    a = task()
    store.save(a)
    engine = store._db.engine
    held = engine.connect()
    transaction = held.begin()
    try:
        change_log.record(held, "updated", [a.task_id], utc_now())  # uncommitted
        with engine.connect() as conn:
            with conn.begin():
                seen = store._db.backend.dirty_read_then_snapshot(
                    conn, "SELECT COUNT(*) FROM changes"
                )
                assert seen == [2]  # the uncommitted row counted: read dirty
                snapshot = conn.execute(text("SELECT COUNT(*) FROM changes")).scalar()
                assert snapshot == 1
            assert conn.execute(text("SELECT @@tx_isolation")).scalar() == "READ-COMMITTED"
            conn.commit()
            with conn.begin():  # the next transaction on it: committed rows only
                assert conn.execute(text("SELECT COUNT(*) FROM changes")).scalar() == 1
    finally:
        transaction.rollback()
        held.close()


@MARIADB
def test_a_change_rolled_back_does_not_stop_the_feed(store: TaskStore) -> None:
    start = store.changes().token
    a, b = task(), task()
    store.save(a)
    held = store._db.engine.connect()
    transaction = held.begin()
    change_log.record(held, "updated", [a.task_id], utc_now())
    store.save(b)
    transaction.rollback()
    held.close()
    assert [(c.task_id, c.kind) for c in store.changes(start)] == [
        (a.task_id, "saved"),
        (b.task_id, "saved"),
    ]


@MARIADB
def test_deletions_are_recorded_by_insert_select_only(store: TaskStore) -> None:
    sent: list[str] = []

    def capture(*args: Any) -> None:
        sent.append(args[2])

    made = [task() for _ in range(4)]
    store.save_many(made)
    engine = store._db.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        store.delete(made[0].task_id)
        store.delete_many([m.task_id for m in made[1:3]])
        store.archive(made[3].task_id)
        store.delete_archived(made[3].task_id)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    inserts = [s for s in sent if s.lstrip().upper().startswith("INSERT INTO CHANGES")]
    # delete, delete_many and delete_archived (archive's batch goes past the events)
    assert len(inserts) == 3
    assert sum("'purged'" in s for s in inserts) == 1
    assert all("VALUES" not in s.upper() and "SELECT" in s.upper() for s in inserts), inserts
    stmt, values = change_log.batch_statement("mysql", "deleted", ["a", "b", "c"], utc_now())
    compiled = str(stmt.compile(dialect=mysql.dialect()))
    assert "VALUES" not in compiled.upper()
    assert compiled.upper().count("SELECT") == 3
    assert sorted(values) == ["change_id_0", "change_id_1", "change_id_2", "changed_at"]


@MARIADB
def test_a_write_on_mariadb_sends_no_extra_statement_for_the_feed(store: TaskStore) -> None:
    one = task()
    assert change_log.statements("mysql", "saved")[:-1] == []
    assert len(change_log.statements("mysql-tick", "saved")) == 2  # the tick, then the rows
    store.save(one)


@MARIADB
def test_the_tick_design_where_autoinc_lock_mode_is_2(store_location: dict[str, Any]) -> None:
    # The choice, on this server, as a server in mode 2 would make it (the design is
    # correct in every mode; only the seq design needs 0 or 1).
    with TaskStore(**store_location) as opened:
        dialect = opened._db.engine.dialect
        note_autoinc_lock_mode(dialect, 2)
        try:
            assert isinstance(feed_for(dialect), MariaFeed)
            token = opened.changes().token
            assert _token_tag(token) == "m"
            made = task()
            opened.save(made)
            opened.delete(made.task_id)
            got = [(c.task_id, c.kind) for c in opened.changes(token)]
            assert got == [(made.task_id, "saved"), (made.task_id, "deleted")]
            note_autoinc_lock_mode(dialect, 1)
            q_token = opened.changes().token
            note_autoinc_lock_mode(dialect, 2)
            with pytest.raises(ChangesExpiredError, match="innodb_autoinc_lock_mode"):
                opened.changes(q_token)
        finally:
            note_autoinc_lock_mode(dialect, 1)


def _m_token(tick: int, seq: int | None) -> str:
    raw = json.dumps(["m", tick, seq], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_NOW = "2026-12-01 00:00:00.000000"


def test_a_version_14_store_with_tick_rows_reads_on_from_an_old_token(
    fresh_database_url: Callable[[str], str],
) -> None:
    from uniqc_taskstore.backends.mysql import MysqlBackend
    from uniqc_taskstore.migrator import CURRENT_SCHEMA_VERSION, MIGRATIONS, migrate

    url = fresh_database_url("mysql")
    backend = MysqlBackend(url)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:14])
    finally:
        engine.dispose()
    ids = {name: "uqt_" + name * 32 for name in "abcde"}
    raw = create_engine(url)
    # As the tick design wrote them: (seq, tick); the old reader read ticks up to 2 (A,
    # B, E); C and D (ticks 3 and 4, the smaller seq committed later) it had not read.
    rows = {"a": (1, 1), "b": (2, 1), "e": (3, 2), "d": (4, 4), "c": (5, 3)}
    with raw.begin() as conn:
        for name, (seq, tick) in rows.items():
            conn.execute(
                text(
                    "INSERT INTO changes (seq, task_id, kind, status, txid, changed_at) "
                    "VALUES (:seq, :id, 'saved', 'pending', :tick, :at)"
                ),
                {"seq": seq, "id": ids[name], "tick": tick, "at": _NOW},
            )
        conn.execute(text("INSERT INTO change_marks (name, value) VALUES ('tick', 4)"))
    old = _m_token(2, None)
    try:
        with TaskStore(url=url) as opened:
            assert opened.schema_version == CURRENT_SCHEMA_VERSION
            new = task()
            opened.save(new)
            page = opened.changes(old)
            got = [c.task_id for c in page]
            assert got == [ids["d"], ids["c"], new.task_id]
            assert _token_tag(page.token) == "q"
            assert list(opened.changes(page.token)) == []
            # Changes the old token had not read were pruned: it expires.
            with raw.begin() as conn:
                conn.execute(text("DELETE FROM changes WHERE seq <= 6"))
                conn.execute(text("INSERT INTO change_marks VALUES ('pruned_seq', 6)"))
            with pytest.raises(ChangesExpiredError):
                opened.changes(old)
            assert list(opened.changes(page.token)) == []
        # Code of version 14 refuses the store as made by a newer version.
        engine = backend.create_engine()
        try:
            with pytest.raises(SchemaTooNewError):
                migrate(backend, engine, MIGRATIONS[:14])
        finally:
            engine.dispose()
    finally:
        raw.dispose()


@pytest.fixture
def mode_2_server(tmp_path: Path) -> Iterator[str]:
    from private_servers import PrivateMariaDB, available

    missing = available()
    if missing:
        pytest.skip(missing)
    server = PrivateMariaDB(tmp_path, extra_args=["--innodb-autoinc-lock-mode=2"])
    try:
        yield server.url
    finally:
        server.close()


@pytest.mark.reliability
def test_a_mode_2_server_keeps_the_tick_design_and_loses_nothing(mode_2_server: str) -> None:
    from test_change_feed_race import _race

    check = subprocess.run(
        [
            "mariadb",
            "-uroot",
            "-h127.0.0.1",
            f"-P{mode_2_server.split(':')[-1].split('/')[0]}",
            "-N",
            "-e",
            "SELECT @@innodb_autoinc_lock_mode",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert check.stdout.strip() == "2"
    with TaskStore(url=mode_2_server) as opened:
        assert isinstance(feed_for(opened._db.engine.dialect), MariaFeed)
        _race(opened, {"url": mode_2_server}, writers=3, seconds=5.0)
