"""Reaching a server: connect timeouts, logins kept apart, credentials never shown,
fork safety, pool exhaustion, the migration lock wait, and caller-built engines."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from uniqc_taskstore import (
    DatabaseBusyError,
    DatabaseConnectionError,
    TaskInfo,
    TaskStatus,
    TaskStore,
)
from uniqc_taskstore.backends.postgresql import PostgresBackend
from uniqc_taskstore.backends.server import ServerBackend

SERVERS = ("postgresql", "mysql")
SECRET = "Wr0ng-s3cret"
HANG_GUARD_SECONDS = 120
"""Only stops a regression from hanging the suite; no test asserts on time."""


def _run_guarded(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; return what it raised (None if it returned). A call
    still running after the guard fails the test instead of hanging the suite."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_SECONDS)
    assert outcome, f"still blocked after {HANG_GUARD_SECONDS} s"
    return outcome[0]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A local TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    for conn in accepted:
        conn.close()


def _scheme(kind: str) -> str:
    return "postgresql" if kind == "postgresql" else "mysql"


# -- connect timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_silent_server_ends_in_connection_error_within_url_timeout(
    kind: str, silent_server: int
) -> None:
    url = f"{_scheme(kind)}://me:{SECRET}@127.0.0.1:{silent_server}/tasks?connect_timeout=2"
    raised = _run_guarded(lambda: TaskStore.from_url(url))
    assert isinstance(raised, DatabaseConnectionError)
    assert "connect_timeout" in str(raised)
    assert SECRET not in str(raised)


@pytest.mark.parametrize("kind", SERVERS)
def test_silent_server_ends_in_connection_error_by_default(kind: str, silent_server: int) -> None:
    url = f"{_scheme(kind)}://me@127.0.0.1:{silent_server}/tasks"
    raised = _run_guarded(lambda: TaskStore.from_url(url))
    assert isinstance(raised, DatabaseConnectionError)
    assert "connect_timeout=10" in str(raised)


@pytest.mark.parametrize("kind", SERVERS)
def test_statement_may_wait_longer_than_the_connect_timeout(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    short = make_url(url).update_query_dict({"connect_timeout": "1"})
    with TaskStore.from_url(short.render_as_string(hide_password=False)) as store:
        store.save(TaskInfo("locked-task", backend="dummy"))
        locker = create_engine(url)
        try:
            with locker.connect() as conn, conn.begin():
                conn.execute(text("SELECT * FROM tasks WHERE task_id = 'locked-task' FOR UPDATE"))
                writer = threading.Thread(
                    target=store.save, args=(TaskInfo("locked-task", backend="later"),)
                )
                writer.start()
                writer.join(2.5)  # the write waits on the row lock, longer than 1 s
            assert _run_guarded(writer.join) is None
        finally:
            locker.dispose()
        got = store.get("locked-task")
        assert got is not None
        assert got.backend == "later"


# -- logins and credentials ---------------------------------------------------------------


@pytest.fixture
def mysql_login(fresh_database_url: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    """(URL with the right password, the password) of a MariaDB user made for the test."""
    url = make_url(fresh_database_url("mysql"))
    user, password = f"uq_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'"))
            conn.execute(text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'127.0.0.1'"))
        yield url.set(username=user, password=password).render_as_string(False), password
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
        admin.dispose()


def test_wrong_password_is_not_served_by_an_authenticated_engine(
    mysql_login: tuple[str, str],
) -> None:
    right, password = mysql_login
    wrong = make_url(right).set(password=SECRET).render_as_string(hide_password=False)
    with TaskStore.from_url(right) as store:
        store.save(TaskInfo("private", backend="dummy"))
        with pytest.raises(DatabaseConnectionError) as refused:
            TaskStore.from_url(wrong)
    assert SECRET not in str(refused.value)
    assert password not in str(refused.value)


def test_second_postgresql_login_gets_its_own_engine(
    fresh_database_url: Callable[[str], str],
) -> None:
    url = make_url(fresh_database_url("postgresql"))
    role, password = f"uq_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            conn.execute(text(f"GRANT ALL ON DATABASE {url.database} TO {role}"))
            conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
        right = url.set(username=role, password=password).render_as_string(False)
        wrong = url.set(username=role, password=SECRET).render_as_string(False)
        with TaskStore.from_url(right) as first, TaskStore.from_url(wrong) as second:
            # This server may trust local logins; what must hold everywhere is that the
            # second login never borrows the first one's connections.
            assert second._db is not first._db
            assert SECRET not in repr(second)
            assert password not in repr(first)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.mark.parametrize("kind", SERVERS)
def test_repr_location_and_errors_mask_every_credential(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = make_url(fresh_database_url(kind))
    with TaskStore(engine=create_engine(url)) as reachable:
        shown = f"{reachable!r} {reachable.location}"
        assert url.database is not None
        assert url.database in shown
    # A password in the query string, and a TLS key passphrase, on a database that
    # does not exist: the server refuses, and nothing in the error may repeat them.
    missing = url.set(database="uniqc_no_such_db").update_query_dict({"password": SECRET})
    if kind == "postgresql":
        missing = missing.update_query_dict({"sslpassword": SECRET + "2"})
    text_url = missing.render_as_string(hide_password=False)
    with pytest.raises(DatabaseConnectionError) as refused:
        TaskStore.from_url(text_url)
    assert SECRET not in str(refused.value)
    assert "uniqc_no_such_db" in str(refused.value)
    if kind == "postgresql":  # trusting local logins, PostgreSQL accepts any password
        with TaskStore.from_url(url.update_query_dict({"password": SECRET})) as store:
            assert SECRET not in repr(store)
            assert SECRET not in store.location


# -- caller-built engines -----------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_store_on_caller_engine_reads_and_writes(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    engine = create_engine(fresh_database_url(kind))
    try:
        with TaskStore(engine=engine) as store:
            store.save(TaskInfo("t1", backend="ibm:kyiv", status=TaskStatus.SUCCESS))
            assert [task.task_id for task in store.list()] == ["t1"]
        with TaskStore(engine=engine) as again:
            assert again.count(status=TaskStatus.SUCCESS) == 1
    finally:
        engine.dispose()


def test_caller_engine_with_postgresql_schema(fresh_database_url: Callable[[str], str]) -> None:
    url = fresh_database_url("postgresql")
    engine = create_engine(url)
    try:
        with TaskStore(engine=engine, schema="group_e") as store:
            store.save(TaskInfo("in-e", backend="dummy"))
            assert "group_e" in store.location
        with TaskStore.from_url(url, schema="group_e") as same:
            assert same.get("in-e") is not None
        with TaskStore.from_url(url) as public:
            assert public.get("in-e") is None
    finally:
        engine.dispose()


# -- fork ---------------------------------------------------------------------------------

_FORK_SCRIPT = """
import os, sys
from sqlalchemy import create_engine
from uniqc_taskstore import TaskInfo, TaskStore

url, writes = sys.argv[1], int(sys.argv[2])
engine = create_engine(url, pool_size=1, max_overflow=0)
store = TaskStore(engine=engine)
store.save(TaskInfo("before-fork", backend="dummy"))  # the pool now holds a connection
pid = os.fork()
who = "child" if pid == 0 else "parent"
acknowledged = 0
try:
    for i in range(writes):
        store.save(TaskInfo(f"{who}-{i}", backend="dummy"))
        acknowledged += 1
finally:
    if pid == 0:
        os._exit(0 if acknowledged == writes else 1)
_, status = os.waitpid(pid, 0)
print(acknowledged, os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("kind", SERVERS)
def test_parent_and_child_both_write_after_fork_on_a_caller_engine(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    writes = 50
    TaskStore.from_url(url).close()  # migrated before the race
    run = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, url, str(writes)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        start_new_session=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(writes), "0"]  # parent's writes, child's exit code
    with TaskStore.from_url(url) as store:
        stored = {task.task_id for task in store.list()}
    expected = {"before-fork"} | {f"{who}-{i}" for who in ("parent", "child") for i in range(50)}
    assert stored == expected


# -- pool exhaustion ----------------------------------------------------------------------


def _hold_row_lock(url: str, task_id: str) -> tuple[Engine, Any]:
    engine = create_engine(url)
    conn = engine.connect()
    conn.begin()
    conn.execute(text("SELECT * FROM tasks WHERE task_id = :id FOR UPDATE"), {"id": task_id})
    return engine, conn


@pytest.mark.parametrize("kind", SERVERS)
def test_pool_exhausted_by_lock_waiters_is_busy_and_writes_nothing(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        with TaskStore(engine=engine) as store:
            store.save(TaskInfo("contended", backend="dummy"))
            locker, held = _hold_row_lock(url, "contended")
            try:
                waiter = threading.Thread(
                    target=store.save, args=(TaskInfo("contended", backend="waited"),)
                )
                waiter.start()  # takes the only pooled connection, waits on the row lock
                while engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
                    waiter.join(0.01)
                with pytest.raises(DatabaseBusyError, match="nothing was written"):
                    store.save(TaskInfo("crowded-out", backend="dummy"))
            finally:
                held.rollback()
                held.close()
                locker.dispose()
            assert _run_guarded(waiter.join) is None
            assert store.get("crowded-out") is None
            waited = store.get("contended")
            assert waited is not None
            assert waited.backend == "waited"
    finally:
        engine.dispose()


# -- the migration lock -------------------------------------------------------------------


def _hold_migration_lock(kind: str, url: str) -> tuple[Engine, Any, int]:
    """A connection holding the migration lock of ``url``'s database, and its id."""
    holder_url = make_url(url)
    if kind == "postgresql":
        holder_url = holder_url.update_query_dict({"application_name": "stuck-migrator"})
    engine = create_engine(holder_url, isolation_level="AUTOCOMMIT")
    conn = engine.connect()
    if kind == "postgresql":
        key = PostgresBackend(url)._lock_key()
        conn.execute(select(func.pg_advisory_lock(key)))
        ident = conn.execute(select(func.pg_backend_pid())).scalar_one()
    else:
        name = f"uniqc_taskstore.migrate:{holder_url.database}"
        assert conn.execute(select(func.get_lock(name, 0))).scalar() == 1
        ident = conn.execute(select(func.connection_id())).scalar_one()
    return engine, conn, int(ident)


@pytest.mark.parametrize("kind", SERVERS)
def test_migration_lock_held_elsewhere_ends_in_busy_error_naming_the_holder(
    kind: str, fresh_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ServerBackend, "migration_lock_timeout", 1)
    url = fresh_database_url(kind)
    engine, holder, ident = _hold_migration_lock(kind, url)
    try:
        raised = _run_guarded(lambda: TaskStore.from_url(url))
    finally:
        holder.close()
        engine.dispose()
    assert isinstance(raised, DatabaseBusyError)
    assert str(ident) in str(raised)
    if kind == "postgresql":
        assert "stuck-migrator" in str(raised)
    with TaskStore.from_url(url) as store:  # once the holder is gone, it opens
        assert store.count() == 0


@pytest.mark.parametrize("kind", SERVERS)
def test_current_schema_opens_while_the_migration_lock_is_held(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    with TaskStore.from_url(url) as first:
        first.save(TaskInfo("already-here", backend="dummy"))
    engine, holder, _ = _hold_migration_lock(kind, url)
    try:
        opened: list[TaskStore] = []
        assert _run_guarded(lambda: opened.append(TaskStore.from_url(url))) is None
        with opened[0] as store:
            assert store.get("already-here") is not None
    finally:
        holder.close()
        engine.dispose()
