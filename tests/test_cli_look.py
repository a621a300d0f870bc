"""``uniqc-tasks list / find / results / stats / watch`` through the entry point, on every
backend: the filters and formats of ``list``, which task owns a platform job, the
per-circuit results, the figures of ``stats``, and ``watch`` following tasks to the end
(as a process: piped, interrupted, and on a terminal)."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pty_output import read_until_closed
from uniqc_taskstore import (
    ChangesExpiredError,
    DatabaseError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from uniqc_taskstore.cli.filter_options import parse_duration, parse_moment
from uniqc_taskstore.timestamps import format_timestamp

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")
GOLDEN = Path(__file__).parent / "data" / "golden"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ago(**delta: float) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(**delta))


def table_rows(out: str) -> list[list[str]]:
    """A plain table's data rows, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:]]


# -- durations and times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("2h", 7200),
        ("90m", 5400),
        ("45s", 45),
        ("1w", 604800),
        ("1d12h", 129600),
        ("1.5h", 5400),
        ("30 days", 30 * 86400),
        ("1 hour 30 minutes", 5400),
    ],
)
def test_durations_read_as_written(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "d", "2D", "30 dayz", "-1d", "1y", "6M", "1mo", "2h30", "1e9w"]
)
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_since_takes_a_duration_ago_or_an_iso_time_read_as_utc() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_moment("2d", now=now) == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_moment("2026-11-01", now=now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_moment("2026-11-01T08:00:00+08:00", now=now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_moment("2026-11-01T00:00:00Z", now=now) == datetime(2026, 11, 1, tzinfo=UTC)


# -- list --------------------------------------------------------------------------------------


@pytest.fixture
def spread(store: TaskStore) -> dict[str, TaskInfo]:
    """Tasks submitted 10 days, 3 days and 1 hour ago, with names and tags."""
    tasks = {
        "old": TaskInfo(
            generate_uniqc_task_id(),
            "originq:WK_C180",
            status=TaskStatus.SUCCESS,
            submit_time=ago(days=10),
            name="sweep-1",
            tags={"team": "qec"},
        ),
        "mid": TaskInfo(
            generate_uniqc_task_id(),
            "ibm:brisbane",
            status=TaskStatus.FAILED,
            submit_time=ago(days=3),
            name="bell",
            tags={"team": "qec", "run": "7"},
            error_message="calibration drift",
        ),
        "new": TaskInfo(
            generate_uniqc_task_id(),
            "originq:PQPUMESH8",
            status=TaskStatus.RUNNING,
            submit_time=ago(hours=1),
            metadata={"nested": {"a": [1, 2]}},
        ),
    }
    for task in tasks.values():
        store.save(task)
    store.save(tasks["mid"])  # last updated: mid, so update order differs from submit order
    return tasks


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], ["new", "mid", "old"]),
        (["--since", "2d"], ["new"]),
        (["--since", "5d", "--until", "2h"], ["mid"]),
        (["--tag", "team=qec"], ["mid", "old"]),
        (["--tag", "team=qec", "--tag", "run"], ["mid"]),
        (["--name", "bell"], ["mid"]),
        (["--search", "PQPU"], ["new"]),
        (["--backend", "originq", "--asc"], ["old", "new"]),
        (["--sort", "update_time"], ["mid", "new", "old"]),
        (["--status", "success,failed", "--sort", "update_time", "--asc"], ["old", "mid"]),
    ],
)
def test_list_takes_every_filter_and_sort(
    spread: dict[str, TaskInfo],
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    expected: list[str],
) -> None:
    code, out, err = run(capsys, *where(store_location), "list", *options, "--jsonl")
    assert code == EXIT_OK, err
    ids = [json.loads(line)["task_id"] for line in out.splitlines()]
    assert ids == [spread[name].task_id for name in expected]


def test_list_table_shows_names_and_update_times_when_sorted_by_them(
    spread: dict[str, TaskInfo], store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *where(store_location), "list", "--sort", "update_time")
    assert code == EXIT_OK
    assert out.splitlines()[0].split("  ")[0] == "TASK"
    rows = table_rows(out)
    assert [row[0] for row in rows] == [spread[n].task_id for n in ("mid", "new", "old")]
    assert [row[3] for row in rows] == ["bell", "-", "sweep-1"]
    assert rows[0][-1] == spread["mid"].update_time[:19]
    assert re.fullmatch(r"3 of 3 tasks\n", err)


def test_list_csv_has_a_row_per_task_and_json_in_nested_cells(
    spread: dict[str, TaskInfo], store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *where(store_location), "list", "--format", "csv")
    assert code == EXIT_OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["task_id"] for r in rows] == [spread[n].task_id for n in ("new", "mid", "old")]
    assert json.loads(rows[0]["metadata"]) == {"nested": {"a": [1, 2]}}
    assert json.loads(rows[1]["tags"]) == {"team": "qec", "run": "7"}
    assert rows[1]["error_message"] == "calibration drift"
    assert rows[0]["error_message"] == ""


def test_list_format_json_is_the_same_as_the_json_flag(
    spread: dict[str, TaskInfo], store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, by_flag, _ = run(capsys, *where(store_location), "list", "--json")
    _, by_format, _ = run(capsys, "--format", "json", *where(store_location), "list")
    assert json.loads(by_flag) == json.loads(by_format)
    assert len(json.loads(by_flag)) == 3


def test_two_formats_at_once_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(tmp_path), "list", "--json", "--format", "csv")
    assert (code, out) == (EXIT_USAGE, "")
    assert "cannot be used together" in err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--since", "yesterdy"), ("--until", "2026-13-01"), ("--tag", "=x"), ("--backend", "")],
)
def test_a_bad_filter_value_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(tmp_path), "list", option, value)
    assert (code, out) == (EXIT_USAGE, "")
    assert option in err


# -- find --------------------------------------------------------------------------------------


def test_find_names_the_task_owning_a_platform_job_live_or_archived(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    live = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
    gone = TaskInfo(generate_uniqc_task_id(), "ibm:brisbane", status=TaskStatus.SUCCESS)
    store.save(live, [TaskShard(live.task_id, 0, "job-a", live.backend, 3, 0)])
    store.save(
        live,
        [TaskShard(live.task_id, 1, "job-b", live.backend, 2, 3, status=TaskStatus.RUNNING)],
    )
    store.save(gone, [TaskShard(gone.task_id, 0, "job-zz", gone.backend, 1, 0, TaskStatus.SUCCESS)])
    store.archive(gone.task_id)
    code, out, _ = run(capsys, *where(store_location), "find", "job-b", "--json")
    assert code == EXIT_OK
    found = json.loads(out)
    assert (found["task_id"], found["shard_index"], found["circuits"]) == (live.task_id, 1, "3..4")
    assert (found["shard_status"], found["archived"]) == ("running", False)
    code, out, _ = run(capsys, *where(store_location), "find", "job-zz")
    assert code == EXIT_OK
    fields = dict(re.split(r":\s", line.strip(), maxsplit=1) for line in out.splitlines())
    assert (fields["task_id"], fields["archived"]) == (gone.task_id, "True")


def test_find_with_another_backend_or_an_unknown_job_exits_1(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
    store.save(task, [TaskShard(task.task_id, 0, "job-a", task.backend)])
    code, out, err = run(capsys, *where(store_location), "find", "job-a", "--backend", "ibm")
    assert (code, out) == (EXIT_REFUSED, "")
    assert err.startswith("uniqc-tasks: no task has platform job 'job-a' on ibm")
    code, _, _ = run(capsys, *where(store_location), "find", "job-a", "--backend", "originq")
    assert code == EXIT_OK


# -- results -----------------------------------------------------------------------------------


def _batch(store: TaskStore) -> TaskInfo:
    """Five circuits in three shards: counts, one shard still running, one other result."""
    task = TaskInfo(generate_uniqc_task_id(), "dummy:sim", status=TaskStatus.RUNNING)
    store.save(
        task,
        [
            TaskShard(
                task.task_id,
                0,
                "j0",
                "dummy:sim",
                2,
                0,
                TaskStatus.SUCCESS,
                [{"00": 480, "11": 520}, {"01": 1000}],
            ),
            TaskShard(task.task_id, 1, "j1", "dummy:sim", 2, 2, TaskStatus.RUNNING),
            TaskShard(
                task.task_id, 2, "j2", "dummy:sim", 1, 4, TaskStatus.SUCCESS, {"energy": -1.5}
            ),
        ],
    )
    return task


def test_results_table_shows_counts_and_probabilities_in_submission_order(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = _batch(store)
    code, out, err = run(capsys, *where(store_location), "results", task.task_id)
    assert code == EXIT_OK
    rows = table_rows(out)
    assert rows[:3] == [
        ["0", "00", "480", "0.4800"],
        ["0", "11", "520", "0.5200"],
        ["1", "01", "1000", "1.0000"],
    ]
    assert rows[3:5] == [["2", "-"], ["3", "-"]]
    assert rows[5][0] == "4"
    assert json.loads(rows[5][1]) == {"energy": -1.5}
    assert "2 of 5 circuits have no result" in err
    assert "circuits 2..3: shard 1 is running, no result yet" in err


def test_results_json_and_csv(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = _batch(store)
    code, out, _ = run(capsys, *where(store_location), "results", task.task_id, "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    assert (data["circuits"], data["missing"]) == (5, [2, 3])
    assert data["results"][0] == {"00": 480, "11": 520}
    code, out, _ = run(capsys, *where(store_location), "results", task.task_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["circuit"], r["outcome"], r["count"]) for r in rows[:3]] == [
        ("0", "00", "480"),
        ("0", "11", "520"),
        ("1", "01", "1000"),
    ]
    assert float(rows[1]["probability"]) == 0.52
    assert json.loads(rows[-1]["result"]) == {"energy": -1.5}


def test_results_of_an_archived_task(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy:sim", status=TaskStatus.SUCCESS)
    store.save(
        task, [TaskShard(task.task_id, 0, "j", "dummy:sim", 1, 0, TaskStatus.SUCCESS, {"1": 7})]
    )
    store.archive(task.task_id)
    code, out, err = run(capsys, *where(store_location), "results", task.task_id)
    assert (code, err) == (EXIT_OK, "")
    assert table_rows(out) == [["0", "1", "7", "1.0000"]]


def test_results_of_an_unknown_task_exits_1(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *where(store_location), "results", "uqt_nope")
    assert (code, out) == (EXIT_REFUSED, "")
    assert err.startswith("uniqc-tasks: no task 'uqt_nope'")


def test_results_of_a_legacy_task_come_from_its_own_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Re-keyed from schema 1: one shard of one circuit, while its result lists two.
    shutil.copy(GOLDEN / "v1-written-by-original-530b341.sqlite", tmp_path / "tasks.sqlite")
    code, out, _ = run(capsys, "--cache-dir", str(tmp_path), "find", "dummy-0001", "--json")
    assert code == EXIT_OK
    task_id = json.loads(out)["task_id"]
    code, out, err = run(capsys, "--cache-dir", str(tmp_path), "results", task_id)
    assert (code, err) == (EXIT_OK, "")
    assert table_rows(out) == [
        ["0", "0", "60", "0.6000"],
        ["0", "1", "40", "0.4000"],
        ["1", "0", "51", "0.5100"],
        ["1", "1", "49", "0.4900"],
    ]


# -- stats -------------------------------------------------------------------------------------


def test_stats_counts_by_status_and_backend_and_names_the_oldest_unfinished(
    spread: dict[str, TaskInfo],
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    oldest = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", submit_time=ago(days=20))
    store.save(oldest)
    store.archive(spread["old"].task_id)
    code, out, _ = run(capsys, *where(store_location), "stats", "--json")
    assert code == EXIT_OK
    stats = json.loads(out)
    assert stats["tasks"] == 3
    assert stats["archived_tasks"] == 1
    assert stats["by_status"] == {"pending": 1, "running": 1, "failed": 1}
    assert stats["by_backend"] == {"ibm:brisbane": 1, "originq:PQPUMESH8": 1, "originq:WK_C180": 1}
    assert stats["oldest_unfinished"]["task_id"] == oldest.task_id
    assert stats["store_bytes"] > 0
    code, out, _ = run(capsys, *where(store_location), "stats")
    assert code == EXIT_OK
    assert re.match(r"3 tasks \(archived: 1\)\n", out)
    counts = {
        m[1]: (int(m[2]), float(m[3]))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s+([\d.]+)%$", out, re.M)
    }
    assert counts == {"pending": (1, 33.3), "running": (1, 33.3), "failed": (1, 33.3)}
    assert f"oldest unfinished: {oldest.task_id} pending" in out
    size = re.search(r"^store size: .* \(([\d,]+) bytes\)$", out, re.M)
    assert size
    assert int(size[1].replace(",", "")) == stats["store_bytes"]


def test_stats_takes_the_filters(
    spread: dict[str, TaskInfo], store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        *where(store_location),
        "stats",
        "--backend",
        "originq",
        "--status",
        "success",
        "--json",
    )
    assert code == EXIT_OK
    stats = json.loads(out)
    assert (stats["tasks"], stats["by_status"]) == (1, {"success": 1})
    assert stats["oldest_unfinished"] is None


# -- read-only commands create nothing ------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["list", "--since", "1d"], ["find", "job"], ["results", "uqt_x"], ["stats"], ["watch"]]
)
def test_looking_commands_create_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(tmp_path / "nothing"), *argv)
    assert (code, out) == (EXIT_REFUSED, "")
    assert err.startswith("uniqc-tasks: no task store at ")
    assert err.count("\n") == 1
    assert not (tmp_path / "nothing").exists()


# -- watch -------------------------------------------------------------------------------------


def _running(store: TaskStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        task = TaskInfo(
            generate_uniqc_task_id(),
            "dummy:sim",
            status=TaskStatus.RUNNING,
            submit_time=ago(minutes=10 - i),
        )
        store.save(
            task, [TaskShard(task.task_id, 0, f"w{i}", "dummy:sim", 1, 0, TaskStatus.RUNNING)]
        )
        ids.append(task.task_id)
    return ids


class _Lines:
    """Lines of a child's stdout as they come (select on the pipe itself, so nothing
    sits unseen in a Python-side buffer)."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        self.fd = child.stdout.fileno()
        self.buffer = b""

    def next(self) -> list[str]:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], 60)
            assert ready, f"watch printed no whole line for a minute: {self.buffer!r}"
            chunk = os.read(self.fd, 4096)
            assert chunk, f"watch closed its output: {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().split()

    def rest(self) -> list[str]:
        while chunk := os.read(self.fd, 4096):
            self.buffer += chunk
        return self.buffer.decode().split()


def test_watch_prints_each_change_and_exits_0_when_all_have_finished(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    first, second = _running(store, 2)
    done = TaskInfo(generate_uniqc_task_id(), "dummy:sim", status=TaskStatus.SUCCESS)
    store.save(done)
    watch = subprocess.Popen(
        [str(CONSOLE_SCRIPT), *where(store_location), "watch", first, second, "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = _Lines(watch)
    try:
        assert lines.next() == [first, "running"]
        assert lines.next() == [second, "running"]
        store.update_shard(first, 0, status=TaskStatus.SUCCESS, result={"0": 1})
        assert lines.next() == [first, "running", "->", "success"]
        store.update_shard(second, 0, status=TaskStatus.FAILED)
        rest = lines.rest()
        assert watch.wait(timeout=60) == EXIT_OK
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.stderr is not None
    assert watch.stderr.read() == b""
    assert rest == [second, "running", "->", "failed"]


def test_watch_wakes_on_the_change_feed_not_at_the_end_of_its_interval(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    """An interval of ten minutes: the change is printed as soon as it commits, because
    watch waits on the change feed (and re-reads only the tasks the feed names)."""
    first, second = _running(store, 2)
    watch = subprocess.Popen(
        [str(CONSOLE_SCRIPT), *where(store_location), "watch", first, second, "--interval", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = _Lines(watch)
    try:
        assert lines.next() == [first, "running"]
        assert lines.next() == [second, "running"]
        store.update_shard(second, 0, status=TaskStatus.SUCCESS, result={"0": 1})
        assert lines.next() == [second, "running", "->", "success"]  # within _Lines' minute
        store.update_shard(first, 0, status=TaskStatus.CANCELLED)
        assert lines.next() == [first, "running", "->", "cancelled"]
        assert watch.wait(timeout=60) == EXIT_OK
    finally:
        if watch.poll() is None:
            watch.kill()


def _update_soon(store: TaskStore, task_id: str, status: TaskStatus) -> threading.Timer:
    timer = threading.Timer(0.3, lambda: store.update_shard(task_id, 0, status=status))
    timer.start()
    return timer


def test_watch_polls_quietly_where_the_change_feed_cannot_be_read(
    store: TaskStore,
    store_location: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store whose change log this login may not read (or that lost it): watch reads
    every watched task at each look instead, and says nothing about it."""
    [task_id] = _running(store, 1)

    def unreadable(*args: object, **kwargs: object) -> None:
        raise DatabaseError("permission denied for table changes")

    monkeypatch.setattr(TaskStore, "changes", unreadable)
    monkeypatch.setattr(TaskStore, "wait_for_changes", unreadable)
    timer = _update_soon(store, task_id, TaskStatus.SUCCESS)
    try:
        code, out, err = run(capsys, *where(store_location), "watch", task_id, "--interval", "0.05")
    finally:
        timer.join()
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines() == [f"{task_id}  running", f"{task_id}  running -> success"]


def test_watch_reads_everything_again_when_its_feed_token_expires(
    store: TaskStore,
    store_location: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Retention passing watch's position (ChangesExpiredError) is no crash: it takes a
    fresh token and re-reads every watched task once, which sees what it missed."""
    [task_id] = _running(store, 1)
    real_changes = TaskStore.changes
    real_wait = TaskStore.wait_for_changes
    calls: list[str] = []

    def changes(self: TaskStore, since: str | None = None, **kwargs: Any) -> Any:
        calls.append("fresh" if since is None else "page")
        if since is not None and calls.count("page") == 1:
            raise ChangesExpiredError("the change feed no longer holds every change")
        return real_changes(self, since, **kwargs)

    def wait_for_changes(self: TaskStore, token: str, timeout: float = 30.0) -> bool:
        calls.append("wait")
        if calls.count("wait") == 1:
            raise ChangesExpiredError("the change feed no longer holds every change")
        return real_wait(self, token, timeout)

    monkeypatch.setattr(TaskStore, "changes", changes)
    monkeypatch.setattr(TaskStore, "wait_for_changes", wait_for_changes)
    timer = _update_soon(store, task_id, TaskStatus.FAILED)
    try:
        code, out, err = run(capsys, *where(store_location), "watch", task_id, "--interval", "0.05")
    finally:
        timer.join()
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines() == [f"{task_id}  running", f"{task_id}  running -> failed"]
    assert calls[:4] == ["fresh", "wait", "page", "fresh"]  # expired: a fresh token


def test_watch_without_ids_follows_the_unfinished_tasks_and_ctrl_c_exits_130(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    ids = _running(store, 2)
    store.save(TaskInfo(generate_uniqc_task_id(), "dummy:sim", status=TaskStatus.SUCCESS))
    watch = subprocess.Popen(
        [str(CONSOLE_SCRIPT), *where(store_location), "watch", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = _Lines(watch)
    try:
        seen = [lines.next() for _ in ids]
        assert seen == [[task_id, "running"] for task_id in ids]  # oldest submitted first
        store.update_shard(ids[0], 0, status=TaskStatus.SUCCESS)
        assert lines.next() == [ids[0], "running", "->", "success"]
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == EXIT_INTERRUPTED
    assert out == b""
    assert err == b"uniqc-tasks: interrupted; 1 of 2 watched tasks had finished\n"


def test_watch_with_ids_and_filters_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "--cache-dir", str(tmp_path), "watch", "uqt_x", "--status", "running"
    )
    assert code == EXIT_USAGE
    assert "not both" in err


def test_watch_on_a_terminal_updates_a_table_until_all_have_finished(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with TaskStore(cache) as store:
        [task_id] = _running(store, 1)
        controller, terminal = pty.openpty()
        child = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "--cache-dir", str(cache), "watch", "--interval", "0.05"],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "160"},
        )
        os.close(terminal)
        seen = ""
        try:
            while "0 of 1 finished" not in _ANSI.sub("", seen):
                ready, _, _ = select.select([controller], [], [], 60)
                assert ready, f"no table shown: {seen!r}"
                seen += os.read(controller, 4096).decode(errors="replace")
            store.update_shard(task_id, 0, status=TaskStatus.SUCCESS)
            seen += read_until_closed(controller).decode(errors="replace")
            assert child.wait(timeout=60) == EXIT_OK
        finally:
            if child.poll() is None:
                child.kill()
            os.close(controller)
    text = _ANSI.sub("", seen)
    assert "all 1 finished" in text
    final = [line.split() for line in text.splitlines() if line.startswith(task_id)]
    assert final[0][:2] == [task_id, "running"]
    assert final[-1][:2] == [task_id, "success"]
