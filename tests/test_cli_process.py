"""``uniqc-tasks`` as a real process: pipes closed early, Ctrl-C during a copy, what
``import uniqc_taskstore`` loads, and the test run's own summary."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pty_output import read_until_closed
from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.transfer import count_rows

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")
REPO = Path(__file__).resolve().parent.parent
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def fill(cache_dir: Path, n: int) -> list[str]:
    """``n`` tasks with two shards each, saved in one transaction; their ids."""
    tasks = [
        TaskInfo(
            generate_uniqc_task_id(),
            "originq:WK_C180",
            status=TaskStatus.SUCCESS,
            result=[{"00": k}, {"11": float("nan")}],
            metadata={"k": k, "note": "x" * 100},
        )
        for k in range(n)
    ]
    shards = [
        TaskShard(t.task_id, i, f"job-{k}-{i}", t.backend, 1, i, status=TaskStatus.SUCCESS)
        for k, t in enumerate(tasks)
        for i in range(2)
    ]
    with TaskStore(cache_dir) as store:
        store.save_many(tasks, shards)
    return [t.task_id for t in tasks]


def test_import_loads_neither_click_nor_rich() -> None:
    probe = (
        "import sys, uniqc_taskstore, uniqc_taskstore.demo, uniqc_taskstore.transfer; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'rich')))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert finished.stdout.strip() == "[]"


def test_console_script_prints_the_installed_version(tmp_path: Path) -> None:
    import uniqc_taskstore

    finished = subprocess.run(
        [str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, check=False
    )
    assert finished.returncode == 0
    assert finished.stdout.split()[-1] == uniqc_taskstore.__version__


@pytest.mark.parametrize(
    "argv", [["list", "--json"], ["--help"], ["--version"], ["list", "--help"]]
)
def test_output_into_a_pipe_nobody_reads_exits_quietly(tmp_path: Path, argv: list[str]) -> None:
    fill(tmp_path / "cache", 3)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        finished = subprocess.run(
            [str(CONSOLE_SCRIPT), "--cache-dir", str(tmp_path / "cache"), *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert finished.stderr == ""
    assert finished.returncode == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_onto_a_full_disk_is_one_line_exit_1(tmp_path: Path) -> None:
    fill(tmp_path / "cache", 3)
    with open("/dev/full", "w") as full:
        finished = subprocess.run(
            [str(CONSOLE_SCRIPT), "--cache-dir", str(tmp_path / "cache"), "list", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert finished.returncode == 1
    assert finished.stderr == "uniqc-tasks: cannot write the output (No space left on device)\n"


def test_list_json_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    fill(tmp_path / "cache", 3000)  # far more output than a pipe buffers
    script = (
        f"'{CONSOLE_SCRIPT}' --cache-dir '{tmp_path / 'cache'}' list --all --jsonl "
        "2>stderr.txt | head -1; echo ${PIPESTATUS[0]} >status.txt"
    )
    finished = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert json.loads(finished.stdout)["backend"] == "originq:WK_C180"
    assert (tmp_path / "stderr.txt").read_text() == ""
    assert (tmp_path / "status.txt").read_text().strip() == "0"


@pytest.mark.parametrize("columns", [60, 200])
def test_table_on_a_terminal_shows_whole_ids_however_narrow(tmp_path: Path, columns: int) -> None:
    [task_id] = fill(tmp_path / "cache", 1)
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "--cache-dir", str(tmp_path / "cache"), "list"],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TERM": "xterm", "COLUMNS": str(columns)},
    )
    os.close(terminal)
    seen = read_until_closed(controller)
    os.close(controller)
    assert child.wait(timeout=60) == 0
    rows = _ANSI.sub("", seen.decode()).splitlines()
    assert rows[0].split()[:2] == ["TASK", "STATUS"]
    assert rows[1].split()[:3] == [task_id, "success", "originq:WK_C180"]


def test_ctrl_c_during_copy_exits_130_and_running_it_again_finishes(tmp_path: Path) -> None:
    source, dest = tmp_path / "source", tmp_path / "dest"
    total = 3000
    ids = fill(source, total)
    command = [str(CONSOLE_SCRIPT), "copy", str(source), str(dest), "--batch-size", "10"]
    controller, terminal = pty.openpty()  # progress is drawn only on a terminal
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(terminal)
    seen = ""
    try:
        while not re.search(rf"\b([1-9]\d*)/{total}\b", _ANSI.sub("", seen)):
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, f"no progress shown: {seen!r}"
            seen += os.read(controller, 4096).decode(errors="replace")
        child.send_signal(signal.SIGINT)
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
        assert child.wait(timeout=120) == 130
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    text = _ANSI.sub("", seen)
    assert "Traceback" not in text
    assert "Exception ignored" not in text
    [line] = [line for line in text.splitlines() if line.startswith("uniqc-tasks: ")]
    match = re.fullmatch(
        rf"uniqc-tasks: interrupted after ([\d,]+) of {total:,} tasks were copied .*"
        r"run the same command again to copy the rest",
        line.strip(),
    )
    assert match, line
    reported = int(match[1].replace(",", ""))
    with TaskStore(source, create=False) as src, TaskStore(dest, create=False) as dst:
        copied = dst.list(limit=None)
        # Whole batches only: every copied task has all its shards.
        assert reported % 10 == 0
        assert reported <= len(copied) <= reported + 10 < total
        for task in copied:
            assert dst.get_shards(task.task_id) == src.get_shards(task.task_id)
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    with TaskStore(source, create=False) as src, TaskStore(dest, create=False) as dst:
        assert count_rows(dst) == count_rows(src)
        assert repr(dst.list(limit=None)) == repr(src.list(limit=None))  # NaN-safe equality
        for task_id in ids[::50]:
            assert dst.get_shards(task_id) == src.get_shards(task_id)


def test_test_summary_says_how_many_server_tests_were_skipped_and_what_to_set() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        # The README's command as a newcomer runs it: no servers, no CI's PYTEST_ADDOPTS.
        if not key.startswith(("UNIQC_TEST_", "UNIQC_REQUIRE", "PYTEST_ADDOPTS"))
    }
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_cli.py",
            "-k",
            "server_database or keeps_a_groups",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout
    lines = finished.stdout.splitlines()
    assert not [line for line in lines if line.startswith("SKIPPED")]
    assert (
        "postgresql: 3 tests skipped; set UNIQC_TEST_POSTGRESQL_URL "
        "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres) to run them"
    ) in lines
    assert (
        "mysql: 2 tests skipped; set UNIQC_TEST_MYSQL_URL "
        "(e.g. mysql+pymysql://root@127.0.0.1:3306/test) to run them"
    ) in lines
