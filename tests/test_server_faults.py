"""The server's bad days, on both servers: 8 writer processes, each keeping one
``TaskStore``, through restarts, kill -9, cut connections, a full server and hung
locks. Nothing acknowledged lost, nothing applied twice, no task half-written, every
failure a ``TaskStoreError`` saying whether retrying is safe, every writer working
again once the server is back.

Each test starts 8 writers (``tests/fault_workers.py``) against a PRIVATE server
(``tests/private_servers.py``: started here in a temporary directory on a free port,
never the shared servers) reached through a :class:`~fault_proxy.FaultProxy`, causes
its fault several times, stops the writers, then checks the database through a plain
SQLAlchemy engine against what each writer recorded. Figures are printed and
collected in RELIABILITY.md. Run with

    .venv/bin/pytest -m reliability -s tests/test_server_faults.py

(``nox -s reliability`` and ``.ci/run`` run it; as root, since PostgreSQL runs as
the ``postgres`` user). The stores use ``retry_budget=1`` so that faults longer than
a second reach the writers as errors, ``statement_timeout=1`` with ``lock_timeout=30``
so that a hung lock ends as a statement timeout, and ``connect_timeout=2`` so that a
connection the server accepted while going down is given up soon.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from fault_proxy import COMMIT, FaultProxy
from fault_workers import SHARDS, fault_writer
from private_servers import PrivateMariaDB, PrivatePostgres, PrivateServer, available
from uniqc_taskstore import TaskStore, aggregate_status

pytestmark = pytest.mark.reliability

SPAWN = multiprocessing.get_context("spawn")
WRITERS = 8
WARM_UP_SECONDS = 0.5
SETTLE_SECONDS = 1.5
STORE_QUERY = "retry_budget=1&statement_timeout=1&lock_timeout=30&connect_timeout=2"


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    why = available()
    if why is not None:
        pytest.fail(f"the fault suite needs private servers: {why}")
    # Not under pytest's own temporary directory, which only root may enter.
    root = Path(tempfile.mkdtemp(prefix=f"uniqc-faults-{request.param}-"))
    root.chmod(0o755)
    try:
        made: PrivateServer = (
            PrivatePostgres(root) if request.param == "postgresql" else PrivateMariaDB(root)
        )
        try:
            yield made
        finally:
            made.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Run:
    """One fault test: its writers' records, the fault windows, the checks."""

    fault: str
    kind: str
    runs: int = 0
    back_at: list[float] = field(default_factory=list)
    """When the server (or the path to it) was whole again after each fault."""
    results: list[dict[str, Any]] = field(default_factory=list)


def _database(server: PrivateServer, name: str) -> str:
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    url = make_url(server.url).set(database=name).render_as_string(False)
    TaskStore(url=url).close()  # migrated before the writers start
    return url


def _run_writers(tmp_path: Path, url: str, fault: Callable[[Run], None], run: Run) -> None:
    stop = tmp_path / "stop"
    outs = [tmp_path / f"writer-{n}.json" for n in range(WRITERS)]
    readies = [tmp_path / f"ready-{n}" for n in range(WRITERS)]
    processes = [
        SPAWN.Process(
            target=fault_writer, args=(url, n, 97 * n + 5, str(readies[n]), str(stop), str(outs[n]))
        )
        for n in range(WRITERS)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in readies):
            assert time.monotonic() < deadline, "writers never became ready"
            dead = [n for n, p in enumerate(processes) if not p.is_alive()]
            assert not dead, f"writer {dead[0]} died before it was ready: {_said(outs[dead[0]])}"
            time.sleep(0.05)
        time.sleep(WARM_UP_SECONDS)
        fault(run)
        time.sleep(SETTLE_SECONDS)
    finally:
        stop.touch()
        for process in processes:
            process.join(120)
            if process.is_alive():
                process.kill()
                process.join()
    run.results = [json.loads(out.read_text(encoding="utf-8")) for out in outs]


def _said(out: Path) -> str:
    """What a writer that ended recorded as its failure."""
    try:
        return str(json.loads(out.read_text(encoding="utf-8"))["failure"])
    except (OSError, ValueError, KeyError) as exc:
        return f"no record ({type(exc).__name__})"


@dataclass
class Check:
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    untyped: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    recovery: float = 0.0


def _stored(engine: Engine) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[str]]]:
    """Every task row (id -> [(place, status)]) and every shard status per task,
    live and archived, read with plain SQL."""
    rows: dict[str, list[tuple[str, str]]] = {}
    shards: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for place, table in (("live", "tasks"), ("archived", "archived_tasks")):
            for task_id, status in conn.execute(text(f"SELECT task_id, status FROM {table}")):
                rows.setdefault(_str(task_id), []).append((place, _str(status)))
        for place, table in (("live", "task_shards"), ("archived", "archived_task_shards")):
            query = text(f"SELECT uniqc_task_id, shard_index, status FROM {table}")
            for task_id, index, status in conn.execute(query):
                shards.setdefault(f"{place}:{_str(task_id)}", []).append(f"{index}:{_str(status)}")
    return rows, shards


def _str(value: Any) -> str:
    """Text as stored (MariaDB hands binary-collated ids back as bytes)."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _check(run: Run, url: str) -> Check:
    check = Check()
    engine = create_engine(url)
    try:
        rows, shards = _stored(engine)
    finally:
        engine.dispose()
    for result in run.results:
        assert result["failure"] is None, f"writer {result['worker']}: {result['failure']}"
        check.calls += result["calls"]
        for error in result["errors"]:
            kind = error["type"].rsplit(".", 1)[-1]
            check.errors[kind] += 1
            check.examples.setdefault(kind, error.get("message", "")[:160])
            if not error["typed"] or error["type"] in ("not applied", "returned False"):
                check.untyped.append(f"{error['op']}: {error['type']} {error.get('message', '')}")
        uncertain = set(result["uncertain"])
        for task_id, want in result["expected"].items():
            if task_id in uncertain:
                continue
            check.acknowledged += 1
            found = rows.get(task_id, [])
            if not found:
                check.lost.append(f"{task_id}: acknowledged {want['where']}, not stored")
                continue
            if len(found) > 1:
                check.duplicated.append(f"{task_id}: stored {found}")
                continue
            place, _ = found[0]
            stored = sorted(shards.get(f"{place}:{task_id}", []))
            expected = [f"{i}:{s}" for i, s in enumerate(want["shards"])]
            if place != want["where"] or stored != expected:
                check.lost.append(f"{task_id}: {place} {stored}, acknowledged {want}")
    # Every task stored, acknowledged or not: whole (its shards all there, in its
    # place, and its status their aggregate), and in one place only.
    for task_id, found in rows.items():
        if len(found) > 1:
            check.duplicated.append(f"{task_id}: stored {found}")
            continue
        place, status = found[0]
        stored = shards.get(f"{place}:{task_id}", [])
        statuses = [s.split(":", 1)[1] for s in stored]
        if len(stored) != SHARDS or aggregate_status(statuses).value != status:
            check.torn.append(f"{task_id}: {place} {status} with shards {sorted(stored)}")
    orphans = {k.split(":", 1)[1] for k in shards} - set(rows)
    check.torn += [f"{task_id}: shards without their task" for task_id in sorted(orphans)]
    # Recovery: from the moment the server was whole again to each writer's next
    # acknowledged call; the slowest writer counts.
    for back in run.back_at:
        for result in run.results:
            later = [t for t in result["successes"] if t >= back]
            if later:
                check.recovery = max(check.recovery, later[0] - back)
            else:
                check.torn.append(f"writer {result['worker']} never succeeded after a fault")
    return check


def _report(run: Run, check: Check) -> None:
    line = {
        "kind": run.kind,
        "fault": run.fault,
        "runs": run.runs,
        "calls": check.calls,
        "acknowledged": check.acknowledged,
        "lost": len(check.lost),
        "duplicated": len(check.duplicated),
        "torn": len(check.torn),
        "untyped": len(check.untyped),
        "errors": dict(check.errors),
        "examples": check.examples,
        "recovery_seconds": round(check.recovery, 2),
    }
    print(f"\n[fault, {run.kind}] {json.dumps(line)}")
    for problem in (check.lost + check.duplicated + check.torn + check.untyped)[:15]:
        print("   ", problem)


# -- the faults ------------------------------------------------------------------------


def _restarts(server: PrivateServer, proxy: FaultProxy, mode: str) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(3):
            server.stop(mode)
            proxy.cut_all()
            time.sleep(0.5)
            server.start()
            run.back_at.append(time.time())
            run.runs += 1
            time.sleep(1.0)

    return fault


def _cuts(proxy: FaultProxy) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(8):
            proxy.cut_all()
            run.back_at.append(time.time())
            run.runs += 1
            time.sleep(0.3)

    return fault


def _armed(proxy: FaultProxy, marker: bytes, where: Any) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        proxy.arm_always(marker, where, 0.15)
        before = proxy.cuts
        time.sleep(3.0)
        proxy.disarm()
        run.back_at.append(time.time())
        run.runs = proxy.cuts - before

    return fault


def _full_server(server: PrivateServer, proxy: FaultProxy) -> Callable[[Run], None]:
    """Every connection slot taken by a hog for 3 s, the writers' sessions cut so that
    they need new ones meanwhile: once the hog is refused (the server is full), the
    writers are cut and kept away for 0.5 s while the hog takes their slots too."""

    def fault(run: Run) -> None:
        for _ in range(2):
            hog = _Hog(server)
            try:
                assert hog.full.wait(FILL_SECONDS), (
                    f"the server never filled up in {FILL_SECONDS:g} s: {len(hog.taken)} "
                    f"connections taken, other failures: {hog.failures[-3:]}"
                )
                proxy.refuse()
                proxy.cut_all()
                time.sleep(0.5)
                proxy.refuse(False)
                time.sleep(3.0)
            finally:
                # Also when the server never filled: a hog left behind would keep it
                # full for the tests after this one.
                hog.release()
            run.back_at.append(time.time())
            run.runs += 1
            time.sleep(1.0)

    return fault


FILL_SECONDS = 90.0
HOG_CONNECT_SECONDS = 5
"""A hog's connection attempt is given up after this long (a loaded server may accept
the TCP connection and greet it late, or never): the slot is tried again."""


class _Hog:
    """A thread that takes every connection slot the server has, and each one freed,
    until :meth:`release`; ``full`` is set at the first "too many connections"."""

    def __init__(self, server: PrivateServer) -> None:
        self.server = server
        self.taken: list[Any] = []
        self.failures: list[str] = []
        self.full = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                self.taken.append(_raw_connect(self.server))
            except Exception as exc:
                if _too_many_connections(exc):
                    self.full.set()
                else:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.01)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(HOG_CONNECT_SECONDS * 3)
        for conn in self.taken:
            with suppress(Exception):
                conn.close()
        self.taken.clear()
        assert not self._thread.is_alive(), "the hog's connection attempt never ended"


def _too_many_connections(exc: Exception) -> bool:
    """The server refused a connection because it is full: PostgreSQL's SQLSTATE
    53300 (psycopg gives a refused connection no SQLSTATE, only libpq's message),
    MariaDB's error 1040."""
    if getattr(exc, "sqlstate", None) == "53300" or "too many clients" in str(exc):
        return True
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return bool(args) and args[0] == 1040


def _raw_connect(server: PrivateServer) -> Any:
    parsed = make_url(server.url)
    if server.kind == "postgresql":
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=parsed.port,
            user="postgres",
            dbname="postgres",
            connect_timeout=HOG_CONNECT_SECONDS,
        )
    import pymysql  # type: ignore[import-untyped]

    return pymysql.connect(
        host="127.0.0.1",
        port=parsed.port,
        user="root",
        connect_timeout=HOG_CONNECT_SECONDS,
        read_timeout=HOG_CONNECT_SECONDS,
    )


def _hung_lock(server: PrivateServer, url: str) -> Callable[[Run], None]:
    """Another session holds the tasks table locked for 3 s, three times: past the
    writers' 1 s statement timeout, within their 30 s lock timeout."""

    def fault(run: Run) -> None:
        engine = create_engine(url)
        try:
            for _ in range(3):
                with engine.connect() as conn:
                    _lock_tasks(conn, server.kind)
                    time.sleep(3.0)
                    conn.rollback()
                run.back_at.append(time.time())
                run.runs += 1
                time.sleep(1.0)
        finally:
            engine.dispose()

    return fault


def _lock_tasks(conn: Any, kind: str) -> None:
    """Lock the tasks table (PostgreSQL) or every task row (MariaDB: each update_shard
    and archive then waits), trying again if the server picks this as a deadlock's
    victim."""
    for _ in range(50):
        try:
            if kind == "postgresql":
                conn.execute(text("LOCK TABLE tasks IN EXCLUSIVE MODE"))
            else:
                conn.execute(text("SELECT task_id FROM tasks FOR UPDATE"))
            return
        except DBAPIError:
            conn.rollback()
            time.sleep(0.05)
    raise AssertionError("could not lock the tasks")


FAULTS = [
    "restart (fast shutdown)",
    "kill -9 of the server",
    "connections cut mid-transaction",
    "connections cut mid-batch",
    "cut after COMMIT sent",
    "max_connections reached",
    "statement hung on a lock",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_writers_survive_the_fault(server: PrivateServer, fault: str, tmp_path: Path) -> None:
    name = f"faults_{FAULTS.index(fault)}_{int(time.time() * 1000) % 10**9}"
    direct = _database(server, name)
    proxy = FaultProxy("127.0.0.1", make_url(server.url).port or 0)
    try:
        url = f"{proxy.url(direct)}{'&' if '?' in proxy.url(direct) else '?'}{STORE_QUERY}"
        faults: dict[str, Callable[[Run], None]] = {
            FAULTS[0]: _restarts(server, proxy, "fast"),
            FAULTS[1]: _restarts(server, proxy, "kill"),
            FAULTS[2]: _cuts(proxy),
            FAULTS[3]: _armed(proxy, rb"INSERT INTO|UPDATE task_shards", "half"),
            FAULTS[4]: _armed(proxy, COMMIT, "after"),
            FAULTS[5]: _full_server(server, proxy),
            FAULTS[6]: _hung_lock(server, direct),
        }
        run = Run(fault, server.kind)
        _run_writers(tmp_path, url, faults[fault], run)
    finally:
        proxy.close()
    check = _check(run, direct)
    _report(run, check)
    assert run.runs > 0
    assert check.acknowledged > 0
    assert (check.lost, check.duplicated, check.torn, check.untyped) == ([], [], [], [])
