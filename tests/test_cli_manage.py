"""``uniqc-tasks delete / archive / restore / prune / tag`` through the entry point, on
every backend: what they change in the store, what they print, their exit status."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pty_output import read_until_closed
from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")


def where(store_location: dict[str, Any]) -> list[str]:
    """The CLI options naming the ``store`` fixture's location."""
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add(
    store: TaskStore,
    status: TaskStatus = TaskStatus.SUCCESS,
    *,
    submitted: str | None = None,
    **fields: Any,
) -> str:
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", status=status, **fields)
    if submitted is not None:
        task.submit_time = submitted
    store.save(task)
    return task.task_id


def summary_counts(out: str, verb: str) -> tuple[int, int]:
    """``deleted 2 of 3 tasks`` -> (2, 3)."""
    match = re.search(rf"^{verb} ([\d,]+) of ([\d,]+) tasks?$", out, re.MULTILINE)
    assert match, out
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def test_delete_removes_the_tasks_and_reports_the_missing_with_exit_1(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    keep, gone = add(store), add(store)
    code, out, err = run(capsys, *where(store_location), "delete", gone, "uqt_nope", "--yes")
    assert code == EXIT_REFUSED
    assert summary_counts(out, "deleted") == (1, 2)
    assert re.search(r"^missing\s+uqt_nope$", out, re.MULTILINE)
    assert err.count("\n") == 1
    assert err.startswith("uniqc-tasks: 1 of 2 not deleted (1 missing)")
    assert store.get(gone) is None
    assert store.get(keep) is not None


def test_delete_json_lists_done_and_missing(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [add(store) for _ in range(3)]
    code, out, _ = run(capsys, *where(store_location), "delete", *ids, "uqt_x", "-y", "--json")
    assert code == EXIT_REFUSED
    assert json.loads(out) == {
        "action": "deleted",
        "done": ids,
        "missing": ["uqt_x"],
        "refused": [],
    }
    assert store.count() == 0


def test_deleting_several_without_a_terminal_needs_yes_and_deletes_nothing(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [add(store), add(store)]
    code, out, err = run(capsys, *where(store_location), "delete", *ids)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert "add --yes" in err
    assert store.count() == 2


def test_deleting_one_task_needs_no_confirmation(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store)
    code, out, _ = run(capsys, *where(store_location), "delete", task_id)
    assert code == EXIT_OK
    assert summary_counts(out, "deleted") == (1, 1)
    assert store.count() == 0


def test_delete_archived_deletes_from_the_archive_and_hints_when_it_is_not_there(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    archived, live = add(store), add(store)
    store.archive(archived)
    code, out, _ = run(capsys, *where(store_location), "delete", archived)
    assert code == EXIT_REFUSED
    assert summary_counts(out, "deleted") == (0, 1)
    assert "add --archived" in out
    code, out, _ = run(capsys, *where(store_location), "delete", "--archived", archived, live, "-y")
    assert code == EXIT_REFUSED
    assert summary_counts(out, "deleted") == (1, 2)
    assert re.search(rf"^missing\s+{live}\s+\(live, not archived", out, re.MULTILINE)
    assert store.get_archived(archived) is None
    assert store.get(live) is not None


def test_archive_moves_tasks_of_any_status_and_refuses_archived_ones(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    running, done = add(store, TaskStatus.RUNNING), add(store)
    store.archive(done)
    code, out, err = run(capsys, *where(store_location), "archive", running, done, "uqt_nope")
    assert code == EXIT_REFUSED
    assert summary_counts(out, "archived") == (1, 3)
    assert re.search(rf"^refused\s+{done}\s+\(already archived\)$", out, re.MULTILINE)
    assert "1 missing, 1 refused" in err
    assert store.get(running) is None
    archived = store.get_archived(running)
    assert archived is not None
    assert archived.status is TaskStatus.RUNNING


def test_restore_brings_tasks_back_and_csv_names_each_outcome(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, live = add(store), add(store), add(store)
    store.archive_many([first, second])
    code, out, _ = run(
        capsys, *where(store_location), "restore", first, second, live, "--format", "csv"
    )
    assert code == EXIT_REFUSED
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["task_id"], r["outcome"]) for r in rows] == [
        (first, "restored"),
        (second, "restored"),
        (live, "missing"),
    ]
    assert store.count() == 3
    assert store.count_archived() == 0


def test_restore_of_everything_there_exits_0(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store)
    store.archive(task_id)
    code, out, err = run(capsys, *where(store_location), "restore", task_id)
    assert (code, err) == (EXIT_OK, "")
    assert summary_counts(out, "restored") == (1, 1)


def _aged(store: TaskStore) -> dict[str, str]:
    """Tasks submitted in 2020 (old) or now (new), finished or not."""
    return {
        "old_done": add(store, submitted="2020-01-01T00:00:00+00:00"),
        "old_failed": add(store, TaskStatus.FAILED, submitted="2020-01-02T00:00:00+00:00"),
        "old_running": add(store, TaskStatus.RUNNING, submitted="2020-01-03T00:00:00+00:00"),
        "new_done": add(store),
    }


def test_prune_dry_run_lists_old_finished_tasks_and_changes_nothing(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = _aged(store)
    code, out, err = run(
        capsys,
        *where(store_location),
        "prune",
        "--older-than",
        "30d",
        "--by",
        "submit_time",
        "--dry-run",
    )
    assert code == EXIT_OK
    assert sorted(out.split()) == sorted([tasks["old_done"], tasks["old_failed"]])
    assert "would archive 2 tasks" in err
    assert store.count() == 4
    assert store.count_archived() == 0


def test_prune_archives_old_finished_tasks_after_yes(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = _aged(store)
    args = [*where(store_location), "prune", "--older-than", "4w", "--by", "submit_time"]
    code, _, err = run(capsys, *args)
    assert code == EXIT_USAGE
    assert "add --yes" in err
    assert store.count_archived() == 0
    code, out, _ = run(capsys, *args, "--yes", "--json")
    assert code == EXIT_OK
    printed = json.loads(out)
    assert {k: v for k, v in printed.items() if k != "task_ids"} == {
        "action": "archived",
        "count": 2,
        "dry_run": False,
        "kept_live": [],
    }
    assert set(printed["task_ids"]) == {tasks["old_done"], tasks["old_failed"]}
    assert {t.task_id for t in store.list_archived()} == {tasks["old_done"], tasks["old_failed"]}


def test_prune_status_picks_which_statuses_go(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = _aged(store)
    code, out, _ = run(
        capsys,
        *where(store_location),
        "prune",
        "--older-than",
        "1d",
        "--by",
        "submit_time",
        "--status",
        "running,failed",
        "--yes",
    )
    assert code == EXIT_OK
    assert out == "archived 2 tasks\n"
    assert {t.task_id for t in store.list_archived()} == {
        tasks["old_running"],
        tasks["old_failed"],
    }


def test_prune_archived_deletes_from_the_archive_for_good(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    failed, done, live = add(store, TaskStatus.FAILED), add(store), add(store)
    store.archive_many([failed, done])
    base = [*where(store_location), "prune", "--archived", "--older-than", "0s"]
    code, out, _ = run(capsys, *base, "--status", "failed", "--dry-run", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["task_ids"] == [failed]
    code, out, _ = run(capsys, *base, "--status", "failed")  # one task: no confirmation
    assert (code, out) == (EXIT_OK, "deleted 1 task\n")
    assert [t.task_id for t in store.list_archived()] == [done]
    assert store.get(live) is not None


@pytest.mark.parametrize(
    ("option", "value"),
    [("--older-than", "30 dayz"), ("--older-than", "-2d"), ("--older-than", "2")],
)
def test_a_bad_duration_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(tmp_path), "prune", option, value)
    assert code == EXIT_USAGE
    assert out == ""
    assert f"Invalid value for '{option}'" in err
    assert repr(value) in err


def test_tag_sets_removes_and_prints_the_tags(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store, tags={"team": "qec"})
    code, out, _ = run(capsys, *where(store_location), "tag", task_id, "run=7", "note=a=b")
    assert code == EXIT_OK
    assert out.splitlines() == ["note=a=b", "run=7", "team=qec"]
    code, out, _ = run(capsys, *where(store_location), "tag", task_id, "-k", "run", "--json")
    assert code == EXIT_OK
    assert json.loads(out) == {"team": "qec", "note": "a=b"}
    task = store.get(task_id)
    assert task is not None
    assert task.tags == {"team": "qec", "note": "a=b"}


def test_tag_on_an_archived_task_says_to_restore_it(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store)
    store.archive(task_id)
    code, out, err = run(capsys, *where(store_location), "tag", task_id, "a=1")
    assert code == EXIT_REFUSED
    assert out == ""
    assert err.count("\n") == 1
    assert "restore" in err


@pytest.mark.parametrize("pair", ["novalue", "=v"])
def test_tag_without_key_equals_value_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: str
) -> None:
    code, _, err = run(capsys, "--cache-dir", str(tmp_path), "tag", "uqt_x", pair)
    assert code == EXIT_USAGE
    assert "KEY=VALUE" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["delete", "uqt_x"],
        ["delete", "--archived", "uqt_x", "uqt_y", "--yes"],
        ["archive", "uqt_x"],
        ["restore", "uqt_x"],
        ["prune", "--older-than", "1d", "--yes"],
        ["tag", "uqt_x", "a=1"],
    ],
)
def test_changing_commands_create_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(tmp_path / "nothing"), *argv)
    assert code == EXIT_REFUSED
    assert out == ""
    assert err.startswith("uniqc-tasks: no task store at ")
    assert err.count("\n") == 1
    assert not (tmp_path / "nothing").exists()


def test_shards_go_with_deleted_tasks(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy:sim")
    store.save(task, [TaskShard(task.task_id, 0, "job-1", "dummy:sim")])
    code, _, _ = run(capsys, *where(store_location), "delete", task.task_id)
    assert code == EXIT_OK
    assert store.get_shards(task.task_id) == []
    assert store.find_uniqc_id_by_platform_id("job-1") is None


@pytest.mark.parametrize(("answer", "deleted"), [("y", True), ("n", False)])
def test_delete_on_a_terminal_asks_first(tmp_path: Path, answer: str, deleted: bool) -> None:
    cache = tmp_path / "cache"
    with TaskStore(cache) as store:
        ids = [add(store), add(store)]
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "--cache-dir", str(cache), "delete", *ids],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
    )
    os.close(terminal)
    seen = b""
    try:
        while b"for good? [y/N]" not in seen:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, f"no question asked: {seen!r}"
            seen += os.read(controller, 4096)
        os.write(controller, answer.encode() + b"\n")
        seen += read_until_closed(controller)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    assert b"Delete 2 tasks and their shards for good?" in seen
    with TaskStore(cache, create=False) as store:
        assert store.count() == (0 if deleted else 2)
    if deleted:
        assert code == EXIT_OK
        assert b"deleted 2 of 2 tasks" in seen
    else:
        assert code == EXIT_REFUSED
        assert b"uniqc-tasks: nothing was done (deleting 2 tasks declined)" in seen
