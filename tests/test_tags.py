"""Tags: written with their task, changed atomically, filtered by index, moved and copied."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from uniqc_taskstore import (
    InvalidInputError,
    TaskFilter,
    TaskInfo,
    TaskNotFoundError,
    TaskStatus,
    TaskStore,
)
from uniqc_taskstore.transfer import copy_tasks


def test_save_writes_the_tag_set_and_get_reads_it(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy", tags={"team": "qec", "run": "7"}))
    got = store.get("a")
    assert got is not None
    assert got.tags == {"team": "qec", "run": "7"}
    got.tags = {"team": "qec"}
    store.save(got)  # the object's tags replace the stored set
    again = store.get("a")
    assert again is not None
    assert again.tags == {"team": "qec"}
    assert [t.tags for t in store.list()] == [{"team": "qec"}]


def test_set_and_remove_tags_change_only_the_named_keys(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy", tags={"team": "qec", "run": "7"}))
    assert store.set_tags("a", {"run": "8", "owner": "ana"}) == {
        "team": "qec",
        "run": "8",
        "owner": "ana",
    }
    assert store.remove_tags("a", ["team", "absent"]) == {"run": "8", "owner": "ana"}
    got = store.get("a")
    assert got is not None
    assert got.tags == {"run": "8", "owner": "ana"}


def test_concurrent_set_tags_all_survive(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy"))

    def tag(k: int) -> None:
        for j in range(5):
            store.set_tags("a", {f"k{k}-{j}": str(j)})

    threads = [threading.Thread(target=tag, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = store.get("a")
    assert got is not None
    assert len(got.tags) == 20


def test_tag_calls_on_a_missing_task_raise(store: TaskStore) -> None:
    with pytest.raises(TaskNotFoundError):
        store.set_tags("nope", {"a": "b"})
    with pytest.raises(TaskNotFoundError):
        store.remove_tags("nope", ["a"])


@pytest.mark.parametrize(
    "tags",
    [{"": "x"}, {"k": 3}, {"k": "x" * 256}, {"k" * 256: "x"}, {"k": "a\x00b"}, ["k"]],
)
def test_unstorable_tags_are_refused_and_nothing_written(store: TaskStore, tags: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.save(TaskInfo("a", "dummy", tags=tags))  # type: ignore[arg-type]
    assert caught.value.field.startswith("tags")
    assert store.get("a") is None


def test_tag_filter_needs_every_pair_and_none_means_present(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("a", "dummy", tags={"team": "qec", "run": "7"}),
            TaskInfo("b", "dummy", tags={"team": "qec"}),
            TaskInfo("c", "dummy", tags={"team": "QEC", "run": ""}),
        ]
    )
    assert sorted(t.task_id for t in store.list(tags={"team": "qec"})) == ["a", "b"]
    assert [t.task_id for t in store.list(tags={"team": "qec", "run": "7"})] == ["a"]
    assert sorted(t.task_id for t in store.list(tags={"run": None})) == ["a", "c"]
    assert store.count(TaskFilter(tags={"run": ""})) == 1
    assert store.count(tags={"missing": None}) == 0


def test_tags_move_with_archive_and_restore_and_go_with_delete(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("a", "dummy", status=TaskStatus.SUCCESS, tags={"keep": "1"}),
            TaskInfo("b", "dummy", status=TaskStatus.SUCCESS, tags={"keep": "2"}),
        ]
    )
    assert store.archive("a")
    assert store.count(tags={"keep": None}) == 1
    assert store.count_archived(tags={"keep": "1"}) == 1
    archived = store.get_archived("a")
    assert archived is not None
    assert archived.tags == {"keep": "1"}
    assert store.restore("a")
    got = store.get("a")
    assert got is not None
    assert got.tags == {"keep": "1"}
    assert store.count_archived(tags={"keep": None}) == 0
    assert store.delete("b")
    store.save(TaskInfo("b", "dummy"))  # a new task with the old id has no old tags
    again = store.get("b")
    assert again is not None
    assert again.tags == {}
    assert store.archive("a")
    assert store.delete_archived("a")
    store.save(TaskInfo("a", "dummy", status=TaskStatus.SUCCESS))
    assert store.archive("a")
    gone = store.get_archived("a")
    assert gone is not None
    assert gone.tags == {}


def test_copy_carries_tags_of_live_and_archived_tasks(store: TaskStore, tmp_path: Path) -> None:
    with TaskStore(tmp_path / "source") as source:
        source.save_many(
            [
                TaskInfo("a", "dummy", status=TaskStatus.SUCCESS, tags={"x": "1"}),
                TaskInfo("b", "dummy", status=TaskStatus.SUCCESS, tags={"y": "2", "z": ""}),
            ]
        )
        assert source.archive("b")
        report = copy_tasks(source, store)
    assert report.copied.tags == 1
    assert report.copied.archived_tags == 2
    got, archived = store.get("a"), store.get_archived("b")
    assert got is not None
    assert got.tags == {"x": "1"}
    assert archived is not None
    assert archived.tags == {"y": "2", "z": ""}
