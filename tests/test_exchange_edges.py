"""Export and import at their edges: bad arguments, per-shard CSV, progress in batches,
results kept on the task rather than its shards, and import lines that cannot be stored."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import (
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.exchange import circuit_results, export_tasks, import_tasks

HEADER = json.dumps({"uniqc_export": 1}) + "\n"


def task_with_shards(store: TaskStore, shard_count: int = 2) -> TaskInfo:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS)
    shards = [
        TaskShard(
            task.task_id, i, f"job-{i}", "dummy", 1, i, status=TaskStatus.SUCCESS, result={"0": i}
        )
        for i in range(shard_count)
    ]
    store.save(task, shards)
    return task


class OneWayStream(io.StringIO):
    """A pipe: readable once, not seekable."""

    def seekable(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"format": "xml"}, "format"), ({"format": "csv", "csv_rows": "cell"}, "csv_rows")],
)
def test_export_refuses_an_unknown_format_or_csv_layout(
    tmp_path: Path, arguments: dict[str, Any], named: str
) -> None:
    stream = io.StringIO()
    with TaskStore(tmp_path / "s") as store, pytest.raises(InvalidInputError) as raised:
        export_tasks(store, stream, **arguments)
    assert raised.value.field == named
    assert stream.getvalue() == ""


def test_csv_per_shard_has_one_row_per_shard_with_its_task(store: TaskStore) -> None:
    task = task_with_shards(store, 3)
    stream = io.StringIO()
    report = export_tasks(store, stream, format="csv", csv_rows="shard")
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert report.rows == report.shards == 3
    assert [(r["task_id"], r["shard_index"]) for r in rows] == [
        (task.task_id, "0"),
        (task.task_id, "1"),
        (task.task_id, "2"),
    ]


def test_export_reports_progress_after_every_batch_and_at_the_end(tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    with TaskStore(tmp_path / "s") as store:
        for _ in range(5):
            store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
        export_tasks(store, io.StringIO(), batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_jsonl_export_without_shards_leaves_them_out(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "s") as store:
        task_with_shards(store)
        stream = io.StringIO()
        report = export_tasks(store, stream, shards=False)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()[1:]]
    assert report.tasks == 1
    assert [sorted(line) for line in lines] == [["task"]]


@pytest.mark.parametrize(
    ("result", "expected"),
    [(None, []), ([{"0": 1}, {"1": 2}], [{"0": 1}, {"1": 2}]), ({"00": 3}, [{"00": 3}])],
    ids=["none", "list_per_circuit", "one_circuit"],
)
def test_circuit_results_without_shards_come_from_the_task(
    result: Any, expected: list[Any]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS, result=result)
    assert circuit_results(task, []) == expected


def test_circuit_results_of_shards_that_do_not_tile_fall_back_to_the_task() -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", result=["a", "b", "c"])
    # one shard claiming circuits 5..6 of a batch whose first circuits no shard covers
    gapped = TaskShard(task.task_id, 0, "j", "dummy", 2, 5, result=[1, 2])
    assert circuit_results(task, [gapped]) == ["a", "b", "c"]


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5])
def test_import_refuses_a_batch_size_that_is_not_a_positive_integer(
    tmp_path: Path, batch_size: Any
) -> None:
    with TaskStore(tmp_path / "s") as store, pytest.raises(InvalidInputError):
        import_tasks(store, io.StringIO(HEADER), batch_size=batch_size)


def test_import_skips_blank_lines_and_reads_a_pipe(tmp_path: Path) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    line = json.dumps({"task": task.to_dict()}) + "\n"
    seen: list[tuple[int, int | None]] = []
    with TaskStore(tmp_path / "s") as store:
        report = import_tasks(
            store,
            OneWayStream(HEADER + "\n" + line + "   \n"),
            progress=lambda d, t: seen.append((d, t)),
        )
        assert store.get(task.task_id) == task
    assert report.tasks == 1
    assert seen[0] == (0, None)


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2]",
        json.dumps({"shards": []}),
        json.dumps({"task": {"backend": "dummy"}}),
    ],
    ids=["not_an_object", "no_task", "task_without_id"],
)
def test_import_names_a_line_that_is_not_a_task_line(tmp_path: Path, line: str) -> None:
    with (
        TaskStore(tmp_path / "s") as store,
        pytest.raises(InvalidInputError, match=r"line 2.*not a task line"),
    ):
        import_tasks(store, io.StringIO(HEADER + line + "\n"))
    with TaskStore(tmp_path / "s") as store:
        assert store.count() == 0


def test_import_refuses_a_shard_listed_under_another_task(tmp_path: Path) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    stray = TaskShard(generate_uniqc_task_id(), 0, "j", "dummy", 1, 0)
    line = json.dumps({"task": task.to_dict(), "shards": [stray.to_dict()]})
    with TaskStore(tmp_path / "s") as store:
        with pytest.raises(InvalidInputError, match="shard of another task"):
            import_tasks(store, io.StringIO(HEADER + line + "\n"))
        assert store.count() == 0
