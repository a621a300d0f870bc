"""One fixture, ``store``, yields a fresh store on every backend: a SQLite file in a
temporary directory, and a freshly created PostgreSQL and MariaDB database.

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
from sqlalchemy import create_engine, text
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


@pytest.fixture
def store_location(
    backend_kind: str, tmp_path: Path, _session_databases: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Keyword arguments of ``TaskStore`` for an empty location on the backend: a new
    SQLite file, or this run's server database with every table emptied."""
    if backend_kind == "sqlite":
        yield {"cache_dir": tmp_path / "cache"}
        return
    url = _session_databases[backend_kind]
    with TaskStore(url=url) as emptied:
        emptied.clear_all()
    yield {"url": url}


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
