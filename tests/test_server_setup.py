"""Pointing the store at a server: URLs, the environment variable, schemas, refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, inspect, text

from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    ForeignDatabaseError,
    InvalidInputError,
    SchemaTooNewError,
    StoreNotFoundError,
    TaskInfo,
    TaskStore,
)

SERVERS = ("postgresql", "mysql")


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", SERVERS)
def test_store_follows_url_environment_variable(
    kind: str, fresh_database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_database_url(kind)
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", url)
    with TaskStore() as store:
        store.save(TaskInfo("env-task", backend="quafu:ScQ-P10"))
        assert store.db_path is None
    with TaskStore.from_url(url) as same:
        assert same.get("env-task") is not None


def test_explicit_cache_dir_wins_over_url_variable(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TaskStore(str(tmp_path)) as store:
        assert store.db_path is not None


def test_postgresql_schemas_keep_groups_apart(fresh_database_url: Callable[[str], str]) -> None:
    url = fresh_database_url("postgresql")
    with (
        TaskStore.from_url(url, schema="group_a") as a,
        TaskStore.from_url(url, schema="group_b") as b,
    ):
        a.save(TaskInfo("only-in-a", backend="ibm:kyiv"))
        assert b.get("only-in-a") is None
        assert b.count() == 0
        assert a.count() == 1
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names(schema="group_a"))
            assert {"tasks", "task_shards", "uniqc_schema"} <= names
            assert "tasks" not in inspect(conn).get_table_names(schema="public")
    finally:
        engine.dispose()


def test_schema_name_is_refused_outside_postgresql(tmp_path: object) -> None:
    with pytest.raises(InvalidInputError, match="schema"):
        TaskStore.from_url(f"sqlite:///{tmp_path}/tasks.sqlite", schema="group_a")


def test_unsupported_database_url_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unsupported database"):
        TaskStore.from_url("oracle://scott@localhost/orcl")


@pytest.mark.parametrize("kind", SERVERS)
def test_server_database_with_foreign_tasks_table_is_refused_untouched(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    _execute(
        url,
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title VARCHAR(20))",
        "INSERT INTO tasks VALUES (1, 'water the plants')",
    )
    with pytest.raises(ForeignDatabaseError, match="left untouched"):
        TaskStore.from_url(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"tasks"}
            assert conn.execute(text("SELECT title FROM tasks")).scalar() == "water the plants"
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", SERVERS)
def test_server_database_newer_than_the_code_is_refused(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    TaskStore.from_url(url).close()
    newer = CURRENT_SCHEMA_VERSION + 1
    _execute(url, f"UPDATE uniqc_schema SET schema_version = {newer}")
    with pytest.raises(SchemaTooNewError) as refused:
        TaskStore.from_url(url)
    assert (refused.value.found, refused.value.supported) == (newer, CURRENT_SCHEMA_VERSION)
    assert str(newer) in str(refused.value)
    assert str(CURRENT_SCHEMA_VERSION) in str(refused.value)


@pytest.mark.parametrize("kind", SERVERS)
def test_server_database_is_stamped_with_current_version(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    with TaskStore.from_url(url) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT application_id, schema_version FROM uniqc_schema"))
            assert tuple(row.one()) == (0x554E4943, CURRENT_SCHEMA_VERSION)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_opening_without_create_refuses_an_empty_server_database_and_creates_nothing(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    schema = "absent_group" if kind == "postgresql" else None
    with pytest.raises(StoreNotFoundError, match="no task store at"):
        TaskStore.from_url(url, schema=schema, create=False)
    with pytest.raises(StoreNotFoundError):
        TaskStore.from_url(url, create=False)
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        assert inspector.get_table_names() == []
        if kind == "postgresql":
            assert "absent_group" not in inspector.get_schema_names()
    finally:
        engine.dispose()
    with TaskStore.from_url(url):
        pass
    with TaskStore.from_url(url, create=False) as opened:
        assert opened.count() == 0
