"""``uniqc-tasks changes``: the change feed on the command line, on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import TaskInfo, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add(store: TaskStore) -> str:
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", status=TaskStatus.RUNNING)
    store.save(task)
    return task.task_id


def test_jsonl_prints_each_change_with_its_token_then_the_token_to_resume(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *where(store_location), "changes", "--jsonl")
    assert code == EXIT_OK
    start = json.loads(out)["token"]
    first, second = add(store), add(store)
    store.archive(first)
    code, out, _ = run(capsys, *where(store_location), "changes", "--since", start, "--jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(c["task_id"], c["kind"], c["status"]) for c in lines[:-1]] == [
        (first, "saved", "running"),
        (second, "saved", "running"),
        (first, "archived", "running"),
    ]
    assert all(c["token"] for c in lines[:-1])
    resume = lines[-1]["token"]
    code, out, _ = run(
        capsys,
        *where(store_location),
        "changes",
        "--since",
        lines[0]["token"],
        "--jsonl",
        "--kind",
        "archived",
    )
    assert [json.loads(line).get("kind") for line in out.splitlines()] == ["archived", None]
    code, out, _ = run(capsys, *where(store_location), "changes", "--since", resume)
    assert out.startswith("token: ")


def test_a_token_that_is_not_one_fails_in_one_line(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *where(store_location), "changes", "--since", "nonsense")
    assert code == EXIT_REFUSED
    assert out == ""
    assert err.count("\n") == 1
    assert "since=None" in err or "start" in err
    code, _, _ = run(capsys, *where(store_location), "changes", "--kind", "exploded")
    assert code == EXIT_USAGE


def test_follow_prints_changes_as_another_process_commits_them(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    token = store.changes().token
    follower = subprocess.Popen(
        [
            str(CONSOLE_SCRIPT),
            *where(store_location),
            "changes",
            "--follow",
            "--since",
            token,
            "--jsonl",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        made = [add(store) for _ in range(3)]
        assert follower.stdout is not None
        got = [json.loads(follower.stdout.readline())["task_id"] for _ in made]
        assert got == made
    finally:
        follower.terminate()
        follower.wait(timeout=30)
