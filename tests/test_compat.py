"""``uniqc_taskstore.compat``: the original SDK store's names and behaviour, on every
database. The SDK's own tests run on it in ``nox -s sdk`` (``tests/sdk/``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import uniqc_taskstore
from uniqc_taskstore import InvalidInputError, TaskInfo, TaskShard, TaskStatus, compat
from uniqc_taskstore import TaskStore as OurTaskStore

# The original ``uniqc.backend_adapter.task.store.__all__`` plus the names the SDK
# imports from it that are not in ``__all__``.
ORIGINAL_NAMES = {
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_CACHE_DIR",
    "MIGRATIONS",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "TaskInfo",
    "TaskShard",
    "TaskStatus",
    "TaskStore",
    "generate_uniqc_task_id",
    "is_uniqc_task_id",
    "DB_FILENAME",
}
ARCHIVE_METHODS = (
    "archive_task",
    "restore_task",
    "list_archived",
    "get_archived",
    "delete_archived",
    "count_archived",
)


@pytest.fixture
def compat_store(store_location: dict[str, Any]) -> Iterator[compat.TaskStore]:
    """A compat store on each database, built the way the fixture ``store`` is."""
    with compat.TaskStore(**store_location) as opened:
        yield opened


def _finished(task_id: str, backend: str = "dummy:local:simulator") -> TaskInfo:
    return TaskInfo(task_id, backend, status=TaskStatus.SUCCESS, result={"00": 1})


# -- names ------------------------------------------------------------------------------


def test_compat_offers_every_name_the_sdk_imports() -> None:
    missing = {name for name in ORIGINAL_NAMES if not hasattr(compat, name)}
    assert not missing
    assert ORIGINAL_NAMES - {"DB_FILENAME"} <= set(compat.__all__)
    assert all(hasattr(compat.ArchiveStore, method) for method in ARCHIVE_METHODS)


def test_compat_constants_have_the_originals_values() -> None:
    assert compat.DB_FILENAME == "tasks.sqlite"
    assert compat.APPLICATION_ID == 0x554E4943
    assert compat.UNIQC_TASK_ID_PREFIX == "uqt_"
    assert compat.TERMINAL_STATUSES == ("success", "failed", "cancelled")
    assert compat.TaskInfo is uniqc_taskstore.TaskInfo
    assert compat.is_uniqc_task_id is uniqc_taskstore.is_uniqc_task_id


# -- where TaskStore() puts the file ------------------------------------------------------


def test_cache_dir_is_taken_positionally(tmp_path: Path) -> None:
    with compat.TaskStore(tmp_path) as store:
        assert store.cache_dir == tmp_path.resolve()
        assert store.db_path == tmp_path.resolve() / compat.DB_FILENAME
        assert isinstance(store, OurTaskStore)


def test_default_cache_dir_is_read_when_the_store_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "DEFAULT_CACHE_DIR", tmp_path / "first")
    with compat.TaskStore() as first:
        first.save(_finished("t1"))
    monkeypatch.setattr(compat, "DEFAULT_CACHE_DIR", tmp_path / "second")
    with compat.TaskStore("") as second:  # "" means the default, as in the original
        assert second.cache_dir == (tmp_path / "second").resolve()
        assert second.get("t1") is None
    with compat.TaskStore(tmp_path / "first") as again:
        assert again.get("t1") is not None


def test_taskstore_url_variable_wins_over_the_default_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "DEFAULT_CACHE_DIR", tmp_path / "unused")
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", f"sqlite:///{tmp_path / 'team' / 'tasks.sqlite'}")
    with compat.TaskStore() as store:
        assert store.cache_dir == (tmp_path / "team").resolve()
    assert not (tmp_path / "unused").exists()


def test_cache_dir_is_none_without_a_file(
    backend_kind: str, compat_store: compat.TaskStore
) -> None:
    with compat.TaskStore.in_memory() as memory:
        assert isinstance(memory, compat.TaskStore)
        assert memory.cache_dir is None
    assert (compat_store.cache_dir is None) is (backend_kind != "sqlite")


# -- the gateway's ArchiveStore, on every database ------------------------------------------


def test_archive_store_moves_a_task_and_its_shards(compat_store: compat.TaskStore) -> None:
    task = _finished("job-1")
    shard = TaskShard("job-1", 0, "p0", task.backend, status=TaskStatus.SUCCESS)
    compat_store.save(task, [shard])
    archive = compat.ArchiveStore(compat_store)

    assert archive.archive_task("job-1") is True
    assert archive.archive_task("job-1") is False
    assert compat_store.get("job-1") is None
    archived = archive.get_archived("job-1")
    assert archived is not None
    assert archived.archived_at is not None
    assert [t.task_id for t in archive.list_archived()] == ["job-1"]
    assert archive.count_archived() == 1

    assert archive.restore_task("job-1") is True
    assert archive.restore_task("job-1") is False
    assert [s.platform_task_id for s in compat_store.get_shards("job-1")] == ["p0"]


def test_archive_store_filters_counts_and_deletes(compat_store: compat.TaskStore) -> None:
    compat_store.save(_finished("ok"))
    compat_store.save(TaskInfo("bad", "originq:WK_C180", status=TaskStatus.FAILED))
    archive = compat.ArchiveStore(compat_store)
    for task_id in ("ok", "bad"):
        archive.archive_task(task_id)

    assert [t.task_id for t in archive.list_archived(status="success")] == ["ok"]
    assert archive.count_archived(status="failed") == 1
    assert archive.count_archived(backend="originq:WK_C180") == 1
    assert archive.count_archived(backend="not-real") == 0
    assert len(archive.list_archived(limit=-1)) == 2
    assert archive.delete_archived("ok") is True
    assert archive.delete_archived("ok") is False
    assert archive.get_archived("ok") is None
    assert archive.count_archived() == 1


def test_archive_store_defaults_to_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "DEFAULT_CACHE_DIR", tmp_path)
    with compat.TaskStore() as store:
        store.save(_finished("t"))
    assert compat.ArchiveStore().archive_task("t") is True
    with compat.TaskStore(tmp_path) as store:
        assert store.count_archived() == 1


# -- a negative limit means no limit, as in the original ----------------------------------


def test_negative_limit_lists_everything(store: OurTaskStore) -> None:
    for n in range(5):
        store.save(TaskInfo(f"t{n}", "dummy", submit_time=f"2026-01-0{n + 1}T00:00:00+00:00"))
    newest_first = ["t4", "t3", "t2", "t1", "t0"]
    assert [t.task_id for t in store.list(limit=-1)] == newest_first
    assert [t.task_id for t in store.list(limit=-1, offset=2)] == newest_first[2:]
    assert [t.task_id for t in store.list(limit=-100, status="pending")] == newest_first
    assert store.list(limit=0) == []
    page = store.list_page(limit=-1)
    assert [t.task_id for t in page.tasks] == newest_first
    assert page.next_after is None


def test_negative_limit_lists_every_archived_task(store: OurTaskStore) -> None:
    for n in range(3):
        store.save(_finished(f"a{n}"))
        store.archive(f"a{n}")
    assert len(store.list_archived(limit=-1)) == 3
    assert len(store.list_archived(limit=-1, offset=1)) == 2


def test_negative_offset_is_still_refused(store: OurTaskStore) -> None:
    with pytest.raises(InvalidInputError) as raised:
        store.list(offset=-1)
    assert raised.value.field == "offset"
