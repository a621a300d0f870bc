"""Database URLs: what parses, what is refused and how, and that no credential is shown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from uniqc_taskstore import DatabaseError, InvalidInputError, TaskStore, TaskStoreError
from uniqc_taskstore.backends import backend_for_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://me@db.example/tasks", "postgresql+psycopg://me@db.example/tasks"),
        ("postgresql://me@db.example/tasks", "postgresql+psycopg://me@db.example/tasks"),
        ("mysql://me@db.example/tasks", "mysql+pymysql://me@db.example/tasks"),
        ("mariadb://me@db.example/tasks", "mariadb+pymysql://me@db.example/tasks"),
        ("postgresql+psycopg://me@db.example/tasks", "postgresql+psycopg://me@db.example/tasks"),
    ],
)
def test_bare_schemes_mean_our_drivers(url: str, expected: str) -> None:
    described = backend_for_url(url).describe()
    assert described.startswith(f"database {expected}")


@pytest.mark.parametrize(
    "url",
    ["not a url", "postgresql://me:pw@db.example:notaport/tasks", "://nothing", "postgresql//x"],
)
def test_url_that_does_not_parse_is_an_invalid_input_error(url: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        TaskStore.from_url(url)
    assert refused.value.field == "url"


def test_unparseable_url_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", f"postgresql://me:{SECRET}@db.example:port/x")
    with pytest.raises(InvalidInputError) as refused:
        TaskStore()
    assert refused.value.field == "UNIQC_TASKSTORE_URL"
    assert "UNIQC_TASKSTORE_URL" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert SECRET not in repr(refused.value.value)


def test_file_path_given_as_url_says_to_use_cache_dir_or_sqlite_url(tmp_path: Path) -> None:
    for where in (str(tmp_path / "tasks.sqlite"), str(tmp_path), tmp_path):
        with pytest.raises(InvalidInputError) as refused:
            TaskStore.from_url(where)  # type: ignore[arg-type]
        message = str(refused.value)
        assert "cache_dir=" in message
        assert "--cache-dir" in message
        assert "sqlite:///" in message
    assert list(tmp_path.iterdir()) == []


def test_non_text_url_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="url"):
        TaskStore.from_url(None)  # type: ignore[arg-type]


def test_driver_sqlalchemy_does_not_know_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"uniqc-taskstore\[postgresql\]"):
        TaskStore.from_url("postgresql+nosuchdriver://me@127.0.0.1/tasks")


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("postgresql+pg8000://me@127.0.0.1/tasks", "postgresql"),
        ("mysql+mysqldb://me@127.0.0.1/tasks", "mysql"),
    ],
)
def test_driver_not_installed_names_the_extra_to_install(url: str, extra: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        TaskStore.from_url(url)
    assert f"pip install 'uniqc-taskstore[{extra}]'" in str(refused.value)


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql://me@127.0.0.1:1/tasks", "postgresql"),
        ("pymysql", "mysql://me@127.0.0.1:1/tasks", "mysql"),
    ],
)
def test_our_driver_missing_names_the_extra_to_install(module: str, url: str, extra: str) -> None:
    script = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # as if the extra were not installed\n"
        "from uniqc_taskstore import TaskStore, TaskStoreError\n"
        "try:\n"
        f"    TaskStore.from_url({url!r})\n"
        "except TaskStoreError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("DatabaseError ")
    assert f"pip install 'uniqc-taskstore[{extra}]'" in out


def test_schema_is_refused_where_it_would_be_ignored(tmp_path: Path) -> None:
    cases: list[Callable[[], TaskStore]] = [
        lambda: TaskStore(tmp_path / "a", schema="group_a"),
        lambda: TaskStore(schema="group_a"),  # the default SQLite file
        lambda: TaskStore.from_url(f"sqlite:///{tmp_path}/b.sqlite", schema="group_a"),
        lambda: TaskStore.from_url("mysql://me@127.0.0.1:1/tasks", schema="group_a"),
        lambda: TaskStore.from_url("postgresql://me@127.0.0.1:1/tasks", schema=""),
    ]
    for case in cases:
        with pytest.raises(InvalidInputError) as refused:
            case()
        assert refused.value.field == "schema"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://me:{SECRET}@db.example/tasks",
        f"postgresql://me@db.example/tasks?password={SECRET}",
        f"postgresql://me@db.example/tasks?sslmode=require&sslpassword={SECRET}",
        f"postgresql://me@db.example/tasks?sslkey=/home/me/{SECRET}.key",
        f"mysql://me@db.example/tasks?passwd={SECRET}",
        f"mariadb://me@db.example/tasks?charset=utf8mb4&password={SECRET}",
    ],
)
def test_repr_and_location_mask_every_credential(url: str) -> None:
    shown = backend_for_url(url).describe()
    assert SECRET not in shown
    assert "db.example/tasks" in shown


def test_unparseable_url_error_masks_credentials() -> None:
    for url in (
        f"postgresql://me:{SECRET}@db.example:port/tasks",
        f"postgresql://me@db.example:port/tasks?sslpassword={SECRET}",
    ):
        with pytest.raises(TaskStoreError) as refused:
            TaskStore.from_url(url)
        assert SECRET not in str(refused.value)
