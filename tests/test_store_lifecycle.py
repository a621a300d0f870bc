"""Opening and closing stores: a caller's engine, in-memory URLs, ``cache_dir``.

A caller's engine is configured once however many stores use it, and the last store
to close leaves it as it found it; ``sqlite://`` and ``sqlite:///:memory:`` are
private in-memory stores like ``TaskStore.in_memory()``; ``cache_dir`` is the
directory holding the SQLite file, or None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from legacy_files import DATABASE_FILENAME
from uniqc_taskstore import TaskInfo, TaskStore, generate_uniqc_task_id

SETTING_WE_CHANGE = {
    "sqlite": "PRAGMA foreign_keys",
    "postgresql": "SHOW lock_timeout",
    "mysql": "SELECT @@SESSION.innodb_lock_wait_timeout",
}
"""A per-connection setting each backend applies to the connections it uses."""


def make_task(**fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend="originq:WK_C180", **fields)


def caller_engine(backend_kind: str, store_location: dict[str, Any]) -> Engine:
    if backend_kind == "sqlite":
        directory: Path = store_location["cache_dir"]
        directory.mkdir(parents=True)
        return create_engine(f"sqlite:///{directory / DATABASE_FILENAME}")
    return create_engine(store_location["url"])


def setting(engine: Engine, backend_kind: str) -> object:
    with engine.connect() as conn:
        return conn.execute(text(SETTING_WE_CHANGE[backend_kind])).scalar()


def test_two_stores_share_a_callers_engine_and_closing_leaves_it_as_found(
    backend_kind: str, store_location: dict[str, Any]
) -> None:
    engine = caller_engine(backend_kind, store_location)
    try:
        as_found = setting(engine, backend_kind)
        first = TaskStore(engine=engine)
        second = TaskStore(engine=engine)
        task = make_task()
        first.save(task)
        assert second.get(task.task_id) == task
        other = make_task()
        second.save(other)
        assert setting(engine, backend_kind) != as_found  # ours while stores are open

        first.close()
        assert second.count() == 2
        second.save(make_task())
        second.close()

        assert setting(engine, backend_kind) == as_found
        with engine.connect() as conn:  # the caller's own use still works
            assert conn.execute(text("SELECT count(*) FROM tasks")).scalar() == 3
        with TaskStore(engine=engine) as again:  # and a store can come back
            assert again.get(other.task_id) == other
        assert setting(engine, backend_kind) == as_found
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_url_is_a_private_store_writing_no_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with TaskStore.from_url(url) as one, TaskStore.from_url(url) as two:
        task = make_task()
        one.save(task)
        assert one.get(task.task_id) == task
        assert two.count() == 0
        assert one.db_path is None
        assert one.cache_dir is None
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_is_the_directory_holding_the_file(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        assert store.cache_dir == (tmp_path / "cache").resolve()
    with TaskStore.from_url(f"sqlite:///{tmp_path / 'elsewhere' / 'mine.sqlite'}") as store:
        assert store.cache_dir == (tmp_path / "elsewhere").resolve()
    with TaskStore.in_memory() as store:
        assert store.cache_dir is None


def test_cache_dir_is_none_only_without_a_file(store: TaskStore, backend_kind: str) -> None:
    if backend_kind == "sqlite":
        assert store.db_path is not None
        assert store.cache_dir == store.db_path.parent
    else:
        assert store.cache_dir is None
