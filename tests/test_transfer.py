"""Copying every task between stores: moving a laptop's file up to a server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from uniqc_taskstore import (
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import main
from uniqc_taskstore.transfer import copy_tasks

DESTINATIONS = ("sqlite", "postgresql", "mysql")


def fill(store: TaskStore, n: int) -> list[str]:
    ids = []
    for k in range(n):
        task = TaskInfo(
            generate_uniqc_task_id(),
            backend=f"originq:WK_C{k % 3}",
            status=TaskStatus.SUCCESS if k % 2 else TaskStatus.RUNNING,
            result={k: float("nan"), "amp": complex(k, -1)} if k % 2 else None,
            metadata={"k": k, "unicode": "μ"},
            error_message=None if k % 4 else "boom",
        )
        shards = [
            TaskShard(
                task.task_id,
                i,
                f"job-{k}-{i}",
                task.backend,
                2,
                2 * i,
                status=task.status,
                result=[{"0": i}, {"1": k}] if k % 2 else None,
            )
            for i in range(k % 4)
        ]
        store.save(task, shards)
        ids.append(task.task_id)
    for task_id in ids[1::4]:
        assert store.archive(task_id)
    return ids


def snapshot(store: TaskStore, ids: list[str]) -> dict[str, object]:
    return {
        task_id: (
            store.get(task_id),
            store.get_shards(task_id),
            store.get_archived(task_id),
            store.get_archived_shards(task_id),
        )
        for task_id in ids
    }


def nan_safe(value: object) -> str:
    return repr(value)  # nan != nan, but its repr is stable


@pytest.fixture
def destination(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> TaskStore:
    kind: str = request.param
    if kind == "sqlite":
        return TaskStore(tmp_path / "dest")
    return TaskStore.from_url(fresh_database_url(kind))


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_copy_carries_every_task_and_shard_field_for_field(
    tmp_path: Path, destination: TaskStore
) -> None:
    source = TaskStore(tmp_path / "source")
    ids = fill(source, 23)
    report = copy_tasks(source, destination, batch_size=5)
    assert nan_safe(snapshot(destination, ids)) == nan_safe(snapshot(source, ids))
    assert report.copied == report.source == report.destination
    assert report.copied.archived_tasks == 6


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_second_copy_copies_nothing(tmp_path: Path, destination: TaskStore) -> None:
    source = TaskStore(tmp_path / "source")
    fill(source, 12)
    copy_tasks(source, destination, batch_size=4)
    again = copy_tasks(source, destination, batch_size=4)
    assert (again.copied.tasks, again.copied.shards) == (0, 0)
    assert (again.copied.archived_tasks, again.copied.archived_shards) == (0, 0)
    assert again.destination == again.source


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_interrupted_copy_is_finished_by_running_it_again(
    tmp_path: Path, destination: TaskStore
) -> None:
    source = TaskStore(tmp_path / "source")
    ids = fill(source, 20)

    def interrupt(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_tasks(source, destination, batch_size=4, progress=interrupt)
    partial = destination.count() + destination.count_archived()
    assert 0 < partial < 20
    for task_id in ids:  # never a task without all of its shards
        task = destination.get(task_id)
        if task is not None:
            assert destination.get_shards(task_id) == source.get_shards(task_id)
    finished = copy_tasks(source, destination, batch_size=4)
    assert finished.copied.tasks + finished.copied.archived_tasks == 20 - partial
    assert nan_safe(snapshot(destination, ids)) == nan_safe(snapshot(source, ids))


def test_copy_leaves_tasks_the_destination_already_has(tmp_path: Path) -> None:
    source, dest = TaskStore(tmp_path / "a"), TaskStore(tmp_path / "b")
    task = TaskInfo("shared-id", backend="ibm:kyiv", metadata={"side": "source"})
    source.save(task)
    dest.save(TaskInfo("shared-id", backend="ibm:kyiv", metadata={"side": "dest"}))
    report = copy_tasks(source, dest)
    assert report.copied.tasks == 0
    kept = dest.get("shared-id")
    assert kept is not None
    assert kept.metadata == {"side": "dest"}


def test_copy_onto_itself_is_refused(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    with pytest.raises(InvalidInputError, match="source itself"):
        copy_tasks(store, TaskStore(tmp_path))


def test_copy_command_reports_counts_on_both_sides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = TaskStore(tmp_path / "a")
    fill(source, 8)  # tasks 1 and 5 archived; task k has k % 4 shards
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    rows = {
        line.split()[0]: [int(n) for n in line.split()[1:]]
        for line in capsys.readouterr().out.splitlines()[2:]
    }
    assert rows == {
        "tasks": [6, 6, 6],
        "shards": [10, 10, 10],
        "archived_tasks": [2, 2, 2],
        "archived_shards": [2, 2, 2],
        "tags": [0, 0, 0],
        "archived_tags": [0, 0, 0],
    }
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["copied"] == dict.fromkeys(rows, 0)
    assert report["source"] == report["destination"] == {k: v[1] for k, v in rows.items()}
    assert TaskStore(tmp_path / "b").count() == source.count()


SERVER_PAIRS = [
    ("postgresql", "sqlite"),
    ("mysql", "sqlite"),
    ("postgresql", "mysql"),
    ("mysql", "postgresql"),
]


@pytest.mark.parametrize(
    ("source_kind", "destination"),
    SERVER_PAIRS,
    indirect=["destination"],
    ids=[f"{a}-to-{b}" for a, b in SERVER_PAIRS],
)
def test_copy_from_a_server_carries_every_task_and_shard(
    source_kind: str, destination: TaskStore, fresh_database_url: Callable[[str], str]
) -> None:
    with TaskStore.from_url(fresh_database_url(source_kind)) as source:
        ids = fill(source, 13)
        report = copy_tasks(source, destination, batch_size=4)
        assert nan_safe(snapshot(destination, ids)) == nan_safe(snapshot(source, ids))
    assert report.copied == report.source == report.destination
    assert (report.copied.tasks, report.copied.archived_tasks) == (10, 3)
    destination.close()
