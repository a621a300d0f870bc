"""``uniqc-tasks`` at the edges of its commands: options that contradict each other,
URLs as copy targets, files that cannot be read or written, stdin, results kept only
on the task, stats of an empty store and bulk reports too long to list."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from legacy_files import build_legacy_file
from pty_output import read_until_closed
from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)
from uniqc_taskstore.timestamps import format_timestamp

NOT_FOUND = 1


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add(store: TaskStore, **fields: Any) -> TaskInfo:
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", **fields)
    store.save(task)
    return task


def cache_with_one_task(tmp_path: Path, **fields: Any) -> tuple[Path, TaskInfo]:
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        task = add(store, **fields)
    return directory, task


# -- contradicting options --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--format", "table", "--json"],
        ["list", "--json", "--format", "table"],
        ["export", "-o", "out.jsonl", "--per-circuit"],
        ["export", "-o", "out.csv", "--per-circuit", "--shards"],
        ["prune", "--archived", "--older-than", "1d", "--by", "submit_time"],
        ["tag", "uqt_x", "team=qec", "-k", "team"],
        ["doctor", "--cache-dir", "x", "--url", "sqlite:///x.sqlite"],
    ],
    ids=[
        "table_then_json",
        "json_then_table",
        "per_circuit_jsonl",
        "per_circuit_shards",
        "prune_archived_by",
        "tag_set_and_remove",
        "doctor_two_locations",
    ],
)
def test_contradicting_options_are_a_usage_error_that_touches_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert "Error:" in err
    assert list(tmp_path.iterdir()) == []


# -- copy, export, import with files and URLs --------------------------------------------


def test_copy_into_a_sqlite_url_creates_the_store_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, task = cache_with_one_task(tmp_path)
    target = tmp_path / "copy.sqlite"
    code, _, _ = run(capsys, "copy", str(source), f"sqlite:///{target}")
    assert code == EXIT_OK
    with TaskStore.from_url(f"sqlite:///{target}", create=False) as copied:
        assert copied.get(task.task_id) == task


def test_export_summary_as_json_names_the_file_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = cache_with_one_task(tmp_path)
    target = tmp_path / "out.jsonl"
    code, out, _ = run(capsys, "export", "--cache-dir", str(source), "-o", str(target), "--json")
    assert code == EXIT_OK
    summary = json.loads(out)
    assert (summary["file"], summary["format"], summary["tasks"]) == (str(target), "jsonl", 1)
    assert len(target.read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize("target", ["/proc/uniqc-export.jsonl", "a_directory"])
def test_export_to_a_place_that_cannot_be_written_is_refused_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    source, _ = cache_with_one_task(tmp_path)
    (tmp_path / "a_directory").mkdir()
    destination = target if target.startswith("/") else str(tmp_path / target)
    code, _, err = run(capsys, "export", "--cache-dir", str(source), "-o", destination)
    assert code == EXIT_REFUSED
    assert "cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_directory", "cache"]
    assert list((tmp_path / "a_directory").iterdir()) == []


def test_import_reads_an_export_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, task = cache_with_one_task(tmp_path)
    exported = tmp_path / "out.jsonl"
    assert run(capsys, "export", "--cache-dir", str(source), "-o", str(exported))[0] == EXIT_OK
    monkeypatch.setattr(sys, "stdin", io.StringIO(exported.read_text(encoding="utf-8")))
    code, _, _ = run(capsys, "import", "--cache-dir", str(tmp_path / "dest"), "-")
    assert code == EXIT_OK
    with TaskStore(tmp_path / "dest", create=False) as dest:
        assert dest.get(task.task_id) == task


def test_import_of_a_missing_file_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    code, _, err = run(capsys, "import", "--cache-dir", str(tmp_path / "dest"), str(missing))
    assert code == EXIT_USAGE
    assert f"cannot read {missing}" in err
    assert not (tmp_path / "dest").exists()


# -- results ------------------------------------------------------------------------------


def test_results_as_jsonl_give_one_line_per_circuit(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = add(store, status=TaskStatus.SUCCESS, result=[{"0": 3}, {"1": 4}])
    code, out, _ = run(capsys, "results", task.task_id, "--jsonl", *where(store_location))
    assert code == EXIT_OK
    assert [json.loads(line) for line in out.splitlines()] == [
        {"circuit": 0, "result": {"0": 3}},
        {"circuit": 1, "result": {"1": 4}},
    ]


def test_results_of_a_task_without_any_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, task = cache_with_one_task(tmp_path, status=TaskStatus.RUNNING)
    code, _, err = run(capsys, "results", task.task_id, "--cache-dir", str(directory))
    assert code == EXIT_OK
    assert "no results yet (task is running)" in err


def test_results_name_the_separate_circuits_still_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    shards = [
        TaskShard(task.task_id, 0, "j0", "dummy", 1, 0, status=TaskStatus.SUCCESS, result=1),
        TaskShard(task.task_id, 1, "j1", "dummy", 2, 1, status=TaskStatus.RUNNING),
        TaskShard(task.task_id, 2, "j2", "dummy", 1, 3, status=TaskStatus.SUCCESS, result=2),
        TaskShard(task.task_id, 3, "j3", "dummy", 1, 4, status=TaskStatus.RUNNING),
    ]
    with TaskStore(tmp_path / "cache") as store:
        store.save(task, shards)
    code, _, err = run(capsys, "results", task.task_id, "--cache-dir", str(tmp_path / "cache"))
    assert code == EXIT_OK
    assert "3 of 5 circuits have no result" in err
    assert "circuits 1..2: shard 1 is running, no result yet" in err
    assert "circuit 4: shard 3 is running, no result yet" in err


# -- stats and watch -----------------------------------------------------------------------


def test_stats_of_finished_tasks_say_nothing_is_unfinished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = cache_with_one_task(tmp_path, status=TaskStatus.SUCCESS)
    code, out, _ = run(capsys, "stats", "--cache-dir", str(directory))
    assert code == EXIT_OK
    assert "oldest unfinished: none" in out


@pytest.mark.parametrize(
    ("age", "shown"),
    [(timedelta(hours=2, minutes=5), "2h 5m ago"), (timedelta(minutes=3, seconds=20), "3m ")],
)
def test_stats_give_the_age_of_the_oldest_unfinished_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], age: timedelta, shown: str
) -> None:
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        task = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.RUNNING)
        task.submit_time = format_timestamp(datetime.now(UTC) - age)
        store.save(task)
    code, out, _ = run(capsys, "stats", "--cache-dir", str(directory))
    assert code == EXIT_OK
    assert f"oldest unfinished: {task.task_id}" in out
    assert shown in out


def test_watch_with_nothing_unfinished_says_so_and_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = cache_with_one_task(tmp_path, status=TaskStatus.SUCCESS)
    code, _, err = run(capsys, "watch", "--cache-dir", str(directory))
    assert code == EXIT_OK
    assert "nothing to watch: no task matches" in err


# -- tag and bulk reports -------------------------------------------------------------------


def test_tagging_an_archived_task_says_to_restore_it_first(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = add(store, status=TaskStatus.SUCCESS)
    assert store.archive(task.task_id)
    code, _, err = run(capsys, "tag", task.task_id, "team=qec", *where(store_location))
    assert code == NOT_FOUND
    assert f"uniqc-tasks restore {task.task_id}" in err
    assert store.get_archived(task.task_id) is not None
    assert store.get_archived(task.task_id).tags == {}  # type: ignore[union-attr]


def test_restoring_a_live_task_says_it_is_not_archived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, task = cache_with_one_task(tmp_path)
    code, out, _ = run(capsys, "restore", task.task_id, "--cache-dir", str(directory))
    assert code == NOT_FOUND
    assert f"missing  {task.task_id}  (live, not archived)" in out


def test_a_long_list_of_missing_ids_is_cut_short_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = cache_with_one_task(tmp_path)
    ids = [generate_uniqc_task_id() for _ in range(25)]
    code, out, _ = run(capsys, "archive", *ids, "--cache-dir", str(directory))
    assert code == NOT_FOUND
    assert "archived 0 of 25 tasks" in out
    assert "... and 5 more (--json lists them all)" in out
    assert out.count("missing  ") == 20


# -- backup and migrate summaries -------------------------------------------------------------


def test_backup_summary_as_json_names_the_copy_and_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = cache_with_one_task(tmp_path)
    target = tmp_path / "copy.sqlite"
    code, out, _ = run(capsys, "backup", str(target), "--cache-dir", str(directory), "--json")
    assert code == EXIT_OK
    summary = json.loads(out)
    assert summary["path"] == str(target)
    assert str(directory) in summary["source"]
    assert target.is_file()


def test_the_cli_package_runs_as_a_module() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "uniqc_taskstore.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == EXIT_OK
    assert "uniqc-tasks" in finished.stdout


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["list", "--since", "99999999d"], "--since"),
        (["prune", "--older-than", "9999999999d"], "--older-than"),
    ],
    ids=["since_before_year_1", "older_than_past_timedelta"],
)
def test_a_duration_beyond_the_calendar_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    directory, _ = cache_with_one_task(tmp_path)
    code, _, err = run(capsys, *argv, "--cache-dir", str(directory))
    assert code == EXIT_USAGE
    assert f"Invalid value for '{option}'" in err
    with TaskStore(directory, create=False) as store:
        assert store.count() == 1


def test_migrate_dry_run_lists_the_steps_and_the_copy_it_would_keep_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 5)
    before = legacy.path.read_bytes()
    code, out, _ = run(capsys, "migrate", "--dry-run", "--cache-dir", str(legacy.directory))
    assert code == EXIT_OK
    assert f"schema version 5 -> {CURRENT_SCHEMA_VERSION}" in out
    assert "Would apply 6:" in out
    assert "A copy of the file is written beside it before the first step" in out
    assert legacy.path.read_bytes() == before
    assert sorted(p.name for p in legacy.directory.iterdir()) == ["tasks.sqlite"]


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("mssql+pyodbc://host/db", 3, "names a database uniqc-taskstore does not support (mssql)"),
        ("foo+bar://host/db", 3, "foo+bar://host/db names a database uniqc-taskstore does not"),
    ],
    ids=["unsupported_database", "unknown_database"],
)
def test_a_url_for_a_database_we_cannot_use_is_one_line_naming_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    code: int,
    said: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    found, out, err = run(capsys, "list", "--url", url)
    assert (found, out) == (code, "")
    assert said in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# -- on a terminal ----------------------------------------------------------------------------

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")


def on_a_terminal(argv: list[str], *, answer: bytes | None = None) -> tuple[int, bytes]:
    """Run ``uniqc-tasks argv`` on a pseudo-terminal; type ``answer`` at its question."""
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [str(CONSOLE_SCRIPT), *argv],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(terminal)
    seen = b""
    try:
        if answer is not None:
            while b"[y/N]" not in seen:
                ready, _, _ = select.select([controller], [], [], 60)
                assert ready, f"no question asked: {seen!r}"
                seen += os.read(controller, 4096)
            os.write(controller, answer)
        seen += read_until_closed(controller)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    return code, seen


def test_end_of_input_at_the_question_is_an_interruption_that_deletes_nothing(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    with TaskStore(cache) as store:
        ids = [add(store).task_id, add(store).task_id]
    code, seen = on_a_terminal(["--cache-dir", str(cache), "delete", *ids], answer=b"\x04")
    assert code == EXIT_INTERRUPTED
    assert b"uniqc-tasks: interrupted" in seen
    with TaskStore(cache, create=False) as store:
        assert store.count() == 2


def test_stats_on_a_terminal_draw_a_bar_per_status(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with TaskStore(cache) as store:
        add(store, status=TaskStatus.SUCCESS)
        add(store, status=TaskStatus.SUCCESS)
        add(store, status=TaskStatus.FAILED)
    code, seen = on_a_terminal(["--cache-dir", str(cache), "stats"])
    text = seen.decode()
    assert code == EXIT_OK
    success = next(line for line in text.splitlines() if line.startswith("success"))
    failed = next(line for line in text.splitlines() if line.startswith("failed"))
    assert "66.7%" in success
    assert "33.3%" in failed
    assert success.count("█") == 2 * failed.count("█") > 0


def test_stats_of_the_archive_count_archived_tasks_and_skip_the_unfinished_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        task = add(store, status=TaskStatus.SUCCESS)
        add(store, status=TaskStatus.RUNNING)
        assert store.archive(task.task_id)
    code, out, _ = run(capsys, "stats", "--archived", "--cache-dir", str(directory))
    assert code == EXIT_OK
    assert out.startswith("1 archived tasks (live: 1)")
    assert "oldest unfinished" not in out


def test_tagging_a_task_that_does_not_exist_says_where_to_find_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = cache_with_one_task(tmp_path)
    missing = generate_uniqc_task_id()
    code, _, err = run(capsys, "tag", missing, "team=qec", "--cache-dir", str(directory))
    assert code == NOT_FOUND
    assert f"no task {missing!r}" in err
    assert "uniqc-tasks list" in err


def test_export_on_a_terminal_shows_progress_and_writes_every_task(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        ids = {add(store).task_id for _ in range(3)}
    target = tmp_path / "out.jsonl"
    code, seen = on_a_terminal(["--cache-dir", str(directory), "export", "-o", str(target)])
    assert code == EXIT_OK, seen
    lines = target.read_text(encoding="utf-8").splitlines()[1:]
    assert {json.loads(line)["task"]["task_id"] for line in lines} == ids
    assert b"3/3" in seen or b"100%" in seen, seen


def test_an_export_stopped_by_an_unreadable_row_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, task = cache_with_one_task(tmp_path, status=TaskStatus.SUCCESS, result={"0": 1})
    with sqlite3.connect(directory / "tasks.sqlite") as conn:
        conn.execute(
            "UPDATE tasks SET result_json = '{\"counts\": ' WHERE task_id = ?", (task.task_id,)
        )
    conn.close()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(
        capsys, "export", "--cache-dir", str(directory), "-o", str(out_dir / "tasks.jsonl")
    )
    assert code == EXIT_UNREACHABLE  # a damaged row: the documented status for damage
    assert task.task_id in err
    assert list(out_dir.iterdir()) == []


def test_results_as_csv_write_booleans_as_json_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, task = cache_with_one_task(
        tmp_path, status=TaskStatus.SUCCESS, result=[True, False, None]
    )
    code, out, _ = run(
        capsys, "results", task.task_id, "--format", "csv", "--cache-dir", str(directory)
    )
    assert code == EXIT_OK
    assert out.splitlines() == ["circuit,result", "0,true", "1,false", "2,"]


# -- issue 17.8: what the operating system or a server refuses is one line, not a traceback


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


def test_a_path_longer_than_the_file_system_allows_is_one_line_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir, _ = cache_with_one_task(tmp_path)
    too_long = str(tmp_path / ("x" * 300))
    commands = [
        ["--cache-dir", too_long, "list"],
        ["--cache-dir", too_long, "doctor"],
        ["--cache-dir", too_long, "backup", str(tmp_path / "b.sqlite")],
        ["--cache-dir", too_long, "migrate"],
        ["--url", f"sqlite:///{too_long}/tasks.sqlite", "list"],
        ["--cache-dir", str(cache_dir), "backup", f"{too_long}/b.sqlite"],
        ["copy", too_long, str(tmp_path / "dest")],
        ["copy", str(cache_dir), too_long],
    ]
    for argv in commands:
        code, _, err = run(capsys, *argv)
        assert code != 0, argv
        assert "300 bytes long" in _one_line(err) or "too long" in _one_line(err), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_results_of_a_shard_claiming_two_billion_circuits_is_one_line(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task = add(store)
    store.save_shard(
        TaskShard(
            task.task_id, 0, "job", "dummy", circuit_count=2**31 - 1, status=TaskStatus.SUCCESS
        )
    )
    code, _, err = run(capsys, *where(store_location), "results", task.task_id)
    assert code != 0
    assert "2,147,483,647 circuits" in _one_line(err)


@pytest.mark.parametrize("charset", ["latin1", "utf8"])
def test_a_mariadb_url_with_another_charset_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], charset: str
) -> None:
    # latin1 raised UnicodeEncodeError on the first non-Latin character; utf8 (utf8mb3)
    # let the server refuse 4-byte characters in messages. Refused before connecting.
    url = f"mysql+pymysql://nobody@127.0.0.1:1/nowhere?charset={charset}"
    code, _, err = run(capsys, "--url", url, "list")
    assert code != 0
    assert f"charset={charset}" in _one_line(err)
    assert "utf8mb4" in _one_line(err)
