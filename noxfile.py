"""Sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s reliability``,
``nox -s coverage`` (branch coverage of ``src/``, fails under ``fail_under``),
``nox -s sdk`` (the SDK's own task tests on ``uniqc_taskstore.compat``), ``nox -s sdk-e2e``
(the SDK's workflows on this store), ``nox -s nightly``.

Server tests run when UNIQC_TEST_POSTGRESQL_URL / UNIQC_TEST_MYSQL_URL are set
(see README); they are skipped, with that reason, otherwise.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "sdk"]
PYTHON = ["3.11"]
SDK_VERSION = "0.1.1"
"""The ``unified-quantum`` release whose shipped tests are our compatibility contract."""


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on SQLite (and on the servers, when configured)."""
    session.install("-e", ".[test,postgresql,mysql]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def coverage(session: nox.Session) -> None:
    """The default suite under coverage (CLI subprocesses included); fails below the
    ``fail_under`` branch coverage of ``src/`` set in pyproject.toml. Set the server
    URLs (and UNIQC_REQUIRE_SERVERS=1): the figure counts the PostgreSQL and MariaDB code."""
    session.install("-e", ".[test,postgresql,mysql]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report", "--sort=miss")


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """Only the reliability figures: concurrent writers, kill -9 and racing pollers, and
    the server faults (restarts, kill -9, cut connections, a full server, hung locks)
    on private PostgreSQL and MariaDB servers it starts itself (run as root)."""
    session.install("-e", ".[test,postgresql,mysql]")
    session.run("pytest", "-m", "reliability", "-s", *session.posargs)


@nox.session(python=PYTHON)
def nightly(session: nox.Session) -> None:
    """The stateful model test with a large budget (500 runs of up to 60 steps per backend)."""
    session.install("-e", ".[test,postgresql,mysql]")
    session.env.setdefault("UNIQC_STATEFUL_EXAMPLES", "500")
    session.env.setdefault("UNIQC_STATEFUL_STEPS", "60")
    session.run("pytest", "-s", "tests/test_store_stateful.py", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, migrations, tests and this file."""
    session.install("-e", ".[test,postgresql,mysql,dev]")
    session.run("mypy")


@nox.session(python=PYTHON)
def sdk(session: nox.Session) -> None:
    """The SDK's shipped task, gateway, CLI and doctor tests, with its store and archive
    modules pointed at ``uniqc_taskstore.compat``. Fails on an unexpected failure and on
    an unexpected pass of a test listed in tests/sdk/expected_failures.txt."""
    session.install(f"unified-quantum=={SDK_VERSION}", "pytest", "httpx")
    session.install(".")  # not editable: a reused environment gets this tree's code
    session.run("python", "tests/sdk/run_sdk_tests.py", *session.posargs)


@nox.session(name="sdk-e2e", python=PYTHON)
def sdk_e2e(session: nox.Session) -> None:
    """The SDK's workflows as its users drive them (``uniqc submit``, ``task list/show``,
    ``uniqc result``, the Python task manager, the gateway's HTTP API) on its own store,
    then after ``uniqc-tasks sdk enable`` on SQLite and on PostgreSQL (a fresh database on
    UNIQC_TEST_POSTGRESQL_URL), then ``sdk disable``; and a file written in turn by the
    original store and ours (tests/sdk/e2e_workflows.py)."""
    session.install(f"unified-quantum=={SDK_VERSION}", "pytest>=9.0")
    session.install(".[postgresql]")  # not editable: a reused environment gets this tree's code
    session.run("pytest", "-p", "no:cacheprovider", "tests/sdk/e2e_workflows.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite: ``nox -s bench -- --db sqlite|postgresql|mysql --size 1e6``
    (ours next to a raw-driver floor, and the 10k-vs-large scaling table; see BENCHMARKS.md)."""
    session.install("-e", ".[postgresql,mysql]")
    session.run("python", "-m", "benchmarks", *session.posargs)
