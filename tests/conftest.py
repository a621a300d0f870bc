"""One fixture, ``store``, yields an empty store on every backend: a new SQLite file in
a temporary directory, or this run's PostgreSQL / MariaDB database (created once per
run, migrated by the first store opened on it, dropped at the end) with every table
but the schema stamp emptied before the test.

The emptying does not trust the code under test: it finds the tables by inspection
(so tables added by later migrations are included), deletes their rows through a
separate plain SQLAlchemy engine, and asserts with ``SELECT count(*)`` that each one
is empty. A bug in ``TaskStore.clear_all`` therefore cannot leak rows between tests.

Server tests need an admin URL in ``UNIQC_TEST_POSTGRESQL_URL`` /
``UNIQC_TEST_MYSQL_URL`` and are skipped with that reason otherwise, unless
``UNIQC_REQUIRE_SERVERS=1`` (CI), where a missing server fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, delete, func, inspect, select, text
from sqlalchemy.engine import make_url

import uniqc_taskstore.store as store_module
from uniqc_taskstore import TaskStore

BACKENDS = ("sqlite", "postgresql", "mysql")
SERVER_URL_ENV = {"postgresql": "UNIQC_TEST_POSTGRESQL_URL", "mysql": "UNIQC_TEST_MYSQL_URL"}
EXAMPLE_URL = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
_ran: Counter[str] = Counter()


def require_servers() -> bool:
    return os.environ.get("UNIQC_REQUIRE_SERVERS") == "1"


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test ever sees the real user's cache or a configured server URL."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UNIQC_CACHE_DIR", raising=False)
    monkeypatch.delenv("UNIQC_TASKSTORE_URL", raising=False)
    monkeypatch.setattr(store_module, "DEFAULT_CACHE_DIR", home / ".uniqc" / "cache")


def server_admin_url(kind: str) -> str:
    """The admin URL for ``kind``, or skip (fail under UNIQC_REQUIRE_SERVERS=1)."""
    url = os.environ.get(SERVER_URL_ENV[kind])
    if not url:
        reason = f"{kind} tests need {SERVER_URL_ENV[kind]} (e.g. {EXAMPLE_URL[kind]})"
        if require_servers():
            pytest.fail(reason + "; UNIQC_REQUIRE_SERVERS=1 forbids skipping them")
        pytest.skip(reason)
    return url


class _DatabaseMaker:
    """Creates empty databases on the servers and drops them all at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, str]] = []

    def __call__(self, kind: str) -> str:
        admin = server_admin_url(kind)
        name = f"uniqc_t_{uuid.uuid4().hex[:16]}"
        _admin_execute(admin, f"CREATE DATABASE {name}")
        self.made.append((kind, admin, name))
        return make_url(admin).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from uniqc_taskstore.engine import _registry

        for kind, admin, name in self.made:
            for key, database in list(_registry.items()):
                if name in key:
                    database.dispose()
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            _admin_execute(admin, f"DROP DATABASE IF EXISTS {name}{force}")
        self.made.clear()


@pytest.fixture
def fresh_database_url() -> Iterator[Callable[[str], str]]:
    """A factory: ``make(kind)`` creates an empty database on that server and returns
    its URL; every database made is dropped after the test."""
    maker = _DatabaseMaker()
    yield maker
    maker.drop_all()


@pytest.fixture(scope="session")
def _session_databases() -> Iterator[dict[str, str]]:
    """One database per server for the whole run, made on first use: the ``store``
    fixture empties its tables before each test, which is much cheaper than creating
    and migrating a database every time."""
    maker = _DatabaseMaker()
    warm: list[TaskStore] = []  # keeps each server's pooled engine open between tests

    class _Lazy(dict[str, str]):
        def __missing__(self, kind: str) -> str:
            url = self[kind] = maker(kind)
            warm.append(TaskStore(url=url))
            return url

    yield _Lazy()
    for store in warm:
        store.close()
    maker.drop_all()


def _admin_execute(admin_url: str, statement: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


SCHEMA_STAMP_TABLE = "uniqc_schema"
"""The one table the ``store`` fixture keeps: it says which schema the database holds."""


class _Emptier:
    """Empties every table but the schema stamp of one server database, through its own
    engine and tables reflected from the database itself (not from ``schema.py``)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        self.metadata = MetaData()
        self.reflected: frozenset[str] = frozenset()

    def empty(self) -> None:
        present = frozenset(inspect(self.engine).get_table_names()) - {SCHEMA_STAMP_TABLE}
        if present != self.reflected:
            self.metadata = MetaData()
            self.metadata.reflect(self.engine, only=sorted(present))
            self.reflected = present
        children_first = list(reversed(self.metadata.sorted_tables))
        with self.engine.begin() as conn:
            for table in children_first:
                conn.execute(delete(table))
        with self.engine.connect() as conn:
            left = {
                table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in children_first
            }
        assert set(left.values()) <= {0}, f"rows left after emptying: {left}"
        assert left, "found no tables to empty: the database was never migrated"


@pytest.fixture(scope="session")
def _emptiers() -> Iterator[dict[str, _Emptier]]:
    made: dict[str, _Emptier] = {}
    yield made
    for emptier in made.values():
        emptier.engine.dispose()


@pytest.fixture
def store_location(
    backend_kind: str,
    tmp_path: Path,
    _session_databases: dict[str, str],
    _emptiers: dict[str, _Emptier],
) -> Iterator[dict[str, Any]]:
    """Keyword arguments of ``TaskStore`` for an empty location on the backend: a new
    SQLite file, or this run's server database with every table but the schema stamp
    emptied by plain SQL (see the module docstring)."""
    if backend_kind == "sqlite":
        yield {"cache_dir": tmp_path / "cache"}
        return
    url = _session_databases[backend_kind]
    if backend_kind not in _emptiers:
        _emptiers[backend_kind] = _Emptier(url)
    _emptiers[backend_kind].empty()
    yield {"url": url}


class RawDatabase:
    """The store's database seen through a plain SQLAlchemy engine of its own, for
    checks that must not go through the code under test."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def snapshot(self) -> dict[str, Any]:
        """Every row of every table (schema stamp included), as sorted ``repr`` strings
        (PostgreSQL cannot order by a JSON column); on SQLite also the
        ``user_version`` and ``application_id`` stamps."""
        metadata = MetaData()
        metadata.reflect(self.engine)
        with self.engine.connect() as conn:
            dump: dict[str, Any] = {
                table.name: sorted(map(repr, conn.execute(select(table))))
                for table in metadata.sorted_tables
            }
            if self.engine.dialect.name == "sqlite":
                for pragma in ("user_version", "application_id"):
                    dump[pragma] = conn.exec_driver_sql(f"PRAGMA {pragma}").scalar_one()
        return dump


@pytest.fixture
def raw_database(store_location: dict[str, Any]) -> Iterator[RawDatabase]:
    """The ``store`` fixture's database through a separate plain engine."""
    if "url" in store_location:
        url = store_location["url"]
    else:
        url = f"sqlite:///{Path(store_location['cache_dir']) / 'tasks.sqlite'}"
    raw = RawDatabase(url)
    yield raw
    raw.engine.dispose()


@pytest.fixture
def store(store_location: dict[str, Any], backend_kind: str) -> Iterator[TaskStore]:
    """An empty store on each backend (SQLite file, PostgreSQL, MariaDB)."""
    with TaskStore(**store_location) as opened:
        yield opened
    _ran[backend_kind] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ran:
        figures = ", ".join(f"{kind}: {_ran[kind]}" for kind in BACKENDS)
        terminalreporter.write_line(f"store-fixture tests run per backend: {figures}")
    # One line per server whose tests were skipped, instead of a line per test (.ci/run
    # fails on these lines).
    reasons = [str(report.longrepr[-1]) for report in terminalreporter.stats.get("skipped", [])]
    for kind, env in SERVER_URL_ENV.items():
        skipped = sum(f"{kind} tests need {env}" in reason for reason in reasons)
        if skipped:
            terminalreporter.write_line(
                f"{kind}: {skipped} test{'s' * (skipped != 1)} skipped; set {env} "
                f"(e.g. {EXAMPLE_URL[kind]}) to run them"
            )
