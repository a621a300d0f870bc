"""``uniqc-tasks``: the demo adapter run end to end, and looking inside a store."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy import inspect as sa_inspect

import uniqc_taskstore
from uniqc_taskstore import (
    DatabaseBusyError,
    DatabaseError,
    ForeignDatabaseError,
    InvalidInputError,
    SchemaTooNewError,
    StoreLocationError,
    StoreNotFoundError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import (
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for,
    main,
)
from uniqc_taskstore.demo import DEMO_BACKEND, DummyAdapter, fake_counts

CONSOLE_SCRIPT = Path(sys.executable).with_name("uniqc-tasks")
_RESULT_LINE = re.compile(r"\s*\[(\d+)\] (.+?)  ->  (\{.*\})")


def demo_circuits(count: int) -> list[str]:
    return [f"OPENQASM 2.0; // demo circuit {n}" for n in range(count)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process; its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def printed_results(out: str) -> list[tuple[int, str, dict[str, int]]]:
    """The ``[i] circuit -> counts`` lines of the demo's text output, in printed order."""
    found = []
    for line in out.splitlines():
        match = _RESULT_LINE.fullmatch(line)
        if match:
            counts = ast.literal_eval(match.group(3))
            found.append((int(match.group(1)), match.group(2), counts))
    return found


def _seconds_into_2026(seconds: int) -> str:
    return f"2026-01-01T00:00:{seconds:02d}.000000+00:00"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def seeded(cache_dir: Path) -> dict[str, TaskInfo]:
    """A store holding one task per interesting case, keyed by a readable name."""
    tasks = {
        "done": TaskInfo(
            generate_uniqc_task_id(),
            "dummy:simulator",
            status=TaskStatus.SUCCESS,
            result={"00": 1},
            metadata={"note": "seeded"},
            submit_time=_seconds_into_2026(1),
        ),
        "waiting": TaskInfo(
            generate_uniqc_task_id(), "originq:WK_C180", submit_time=_seconds_into_2026(2)
        ),
        "broken": TaskInfo(
            generate_uniqc_task_id(),
            "ibm:brisbane",
            status=TaskStatus.FAILED,
            error_message="calibration drift",
            submit_time=_seconds_into_2026(3),
        ),
        "old": TaskInfo(
            generate_uniqc_task_id(),
            "quafu:ScQ-P10",
            status=TaskStatus.SUCCESS,
            submit_time=_seconds_into_2026(4),
        ),
    }
    with TaskStore(cache_dir) as store:
        for task in tasks.values():
            store.save(task)
        store.save_shard(TaskShard(tasks["waiting"].task_id, 0, "origin-job-a", "originq:WK_C180"))
        store.save_shard(
            TaskShard(
                tasks["waiting"].task_id,
                1,
                "origin-job-b",
                "originq:WK_C180",
                circuit_count=3,
                sub_index_offset=1,
            )
        )
        assert store.archive(tasks["old"].task_id)
    return tasks


# -- demo ---------------------------------------------------------------------------------


def test_demo_prints_task_table_and_results_in_submission_order(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "demo")
    assert code == 0, err
    with TaskStore(cache_dir) as store:
        [task] = store.list()
    assert task.status is TaskStatus.SUCCESS
    assert str(cache_dir / "tasks.sqlite") in out
    table_rows = [line.split() for line in out.splitlines() if line.startswith(task.task_id)]
    assert table_rows == [[task.task_id, "success", DEMO_BACKEND, "1000", task.submit_time[:19]]]
    circuits = demo_circuits(7)
    assert printed_results(out) == [
        (n, circuit, fake_counts(circuit, 1000)) for n, circuit in enumerate(circuits)
    ]


def test_demo_json_holds_task_shards_and_results(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    shown = run_json(capsys, "--cache-dir", str(cache_dir), "demo")
    assert set(shown) == {"task", "shards", "results"}
    assert shown["task"]["status"] == "success"
    assert shown["task"]["backend"] == DEMO_BACKEND
    assert [s["status"] for s in shown["shards"]] == ["success"] * 3
    assert {s["uniqc_task_id"] for s in shown["shards"]} == {shown["task"]["task_id"]}
    assert shown["results"] == [fake_counts(c, 1000) for c in demo_circuits(7)]
    with TaskStore(cache_dir) as store:
        stored = store.get(shown["task"]["task_id"])
    assert stored is not None
    assert stored.to_dict() == shown["task"]


def test_demo_cuts_ten_circuits_into_jobs_of_four_four_and_two(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    shown = run_json(
        capsys, "--cache-dir", str(cache_dir), "demo", "--circuits", "10", "--max-batch", "4"
    )
    shards = shown["shards"]
    assert [s["shard_index"] for s in shards] == [0, 1, 2]
    assert [s["circuit_count"] for s in shards] == [4, 4, 2]
    assert [s["sub_index_offset"] for s in shards] == [0, 4, 8]
    assert len({s["platform_task_id"] for s in shards}) == 3
    assert shown["results"] == [fake_counts(c, 1000) for c in demo_circuits(10)]


def test_demo_text_shows_each_job_with_its_circuit_range(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    code, out, err = run(
        capsys, "--cache-dir", str(cache_dir), "demo", "--circuits", "10", "--max-batch", "4"
    )
    assert code == 0, err
    with TaskStore(cache_dir) as store:
        [task] = store.list()
        shards = store.get_shards(task.task_id)
    for shard, circuit_range in zip(shards, ["0..3", "4..7", "8..9"], strict=True):
        row = [line.split() for line in out.splitlines() if shard.platform_task_id in line]
        assert row == [
            [str(shard.shard_index), shard.platform_task_id, "success", circuit_range, DEMO_BACKEND]
        ]
    assert [n for n, _, _ in printed_results(out)] == list(range(10))


def test_demo_twice_keeps_both_tasks(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    first = run_json(capsys, "--cache-dir", str(cache_dir), "demo")
    second = run_json(capsys, "--cache-dir", str(cache_dir), "demo")
    listed = run_json(capsys, "--cache-dir", str(cache_dir), "list")
    assert [t["task_id"] for t in listed] == [second["task"]["task_id"], first["task"]["task_id"]]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_demo_runs_against_a_fresh_server_database(
    capsys: pytest.CaptureFixture[str], fresh_database_url: Callable[[str], str], kind: str
) -> None:
    url = fresh_database_url(kind)
    shown = run_json(capsys, "--url", url, "demo", "--circuits", "5", "--max-batch", "2")
    assert shown["task"]["status"] == "success"
    assert [s["circuit_count"] for s in shown["shards"]] == [2, 2, 1]
    assert shown["results"] == [fake_counts(c, 1000) for c in demo_circuits(5)]
    listed = run_json(capsys, "--url", url, "list", "--status", "success")
    assert [t["task_id"] for t in listed] == [shown["task"]["task_id"]]


# -- list / show / shards -----------------------------------------------------------------


def test_list_shows_every_live_task(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TASK", "STATUS", "BACKEND", "SHOTS", "SUBMITTED", "(UTC)"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows == {
        seeded["done"].task_id: ["success", "dummy:simulator"],
        seeded["waiting"].task_id: ["running", "originq:WK_C180"],  # its shards are pending
        seeded["broken"].task_id: ["failed", "ibm:brisbane"],
    }


def test_list_filters_by_status(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "list", "--status", "success")
    assert code == 0, err
    ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert ids == [seeded["done"].task_id]
    several = run_json(
        capsys, "--cache-dir", str(cache_dir), "list", "--status", "failed", "--status", "running"
    )
    assert {t["task_id"] for t in several} == {
        seeded["broken"].task_id,
        seeded["waiting"].task_id,
    }


def test_list_filters_by_platform_family(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "list", "--backend", "dummy")
    assert code == 0, err
    ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert ids == [seeded["done"].task_id]
    exact = run_json(capsys, "--cache-dir", str(cache_dir), "list", "--backend", "originq:WK_C180")
    assert [t["task_id"] for t in exact] == [seeded["waiting"].task_id]


def test_list_with_no_match_says_none(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, _ = run(capsys, "--cache-dir", str(cache_dir), "list", "--backend", "quark")
    assert code == 0
    assert out.strip() == "(none)"


def test_list_json_gives_summaries_newest_first_without_results(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    listed = run_json(capsys, "--cache-dir", str(cache_dir), "list")
    assert [t["task_id"] for t in listed] == [
        seeded["broken"].task_id,
        seeded["waiting"].task_id,
        seeded["done"].task_id,
    ]
    assert all("result" not in t for t in listed)
    done = listed[2]
    assert done["status"] == "success"
    assert done["metadata"] == {"note": "seeded"}
    assert listed[0]["error_message"] == "calibration drift"


def test_list_archived_shows_the_archive(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    listed = run_json(capsys, "--cache-dir", str(cache_dir), "list", "--archived")
    assert [t["task_id"] for t in listed] == [seeded["old"].task_id]
    assert listed[0]["archived_at"] is not None


def test_list_limit_caps_the_rows(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    listed = run_json(capsys, "--cache-dir", str(cache_dir), "list", "--limit", "1")
    assert [t["task_id"] for t in listed] == [seeded["broken"].task_id]


def test_show_prints_every_field_of_a_task(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    task = seeded["done"]
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "show", task.task_id)
    assert code == 0, err
    fields = dict(line.strip().split(": ", 1) for line in out.splitlines())
    assert set(fields) == set(task.to_dict())
    assert fields["task_id"] == task.task_id
    assert fields["status"] == "success"
    assert json.loads(fields["result"]) == {"00": 1}
    assert json.loads(fields["metadata"]) == {"note": "seeded"}


def test_show_json_equals_the_stored_task(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    task = seeded["broken"]
    shown = run_json(capsys, "--cache-dir", str(cache_dir), "show", task.task_id)
    assert TaskInfo.from_dict(shown) == task


def test_show_finds_an_archived_task(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    shown = run_json(capsys, "--cache-dir", str(cache_dir), "show", seeded["old"].task_id)
    assert shown["task_id"] == seeded["old"].task_id
    assert shown["archived_at"] is not None


def test_show_of_a_missing_task_exits_1_with_a_message(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "show", "uqt_" + "0" * 32)
    assert code == 1
    assert out == ""
    assert err.startswith("uniqc-tasks: no task 'uqt_" + "0" * 32)
    assert str(cache_dir / "tasks.sqlite") in err


def test_shards_lists_a_tasks_platform_jobs(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    task_id = seeded["waiting"].task_id
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "shards", task_id)
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["#", "PLATFORM", "JOB", "STATUS", "CIRCUITS", "BACKEND"],
        ["0", "origin-job-a", "pending", "0..0", "originq:WK_C180"],
        ["1", "origin-job-b", "pending", "1..3", "originq:WK_C180"],
    ]
    shown = run_json(capsys, "--cache-dir", str(cache_dir), "shards", task_id)
    assert [s["platform_task_id"] for s in shown] == ["origin-job-a", "origin-job-b"]
    with TaskStore(cache_dir) as store:
        assert [TaskShard(**s) for s in shown] == store.get_shards(task_id)


# -- refusing what is not ours ------------------------------------------------------------


def test_foreign_sqlite_file_exits_3_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    cache_dir.mkdir()
    path = cache_dir / "tasks.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "list")
    assert code == EXIT_UNREACHABLE
    assert out == ""
    assert err.startswith("uniqc-tasks: ")
    assert err.count("\n") == 1
    assert "left untouched" in err
    assert "Traceback" not in err
    assert path.read_bytes() == before


def test_file_that_is_not_a_database_exits_3_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    cache_dir.mkdir()
    path = cache_dir / "tasks.sqlite"
    path.write_text("these are my notes, not a database\n" * 100)
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "demo")
    assert code == EXIT_UNREACHABLE
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("uniqc-tasks: ")
    assert "not a SQLite database" in err
    assert "Traceback" not in err
    assert path.read_text() == "these are my notes, not a database\n" * 100


def test_cache_dir_and_url_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "--url", "sqlite:///x", "list")
    assert code == 2
    assert out == ""
    assert "give --cache-dir or --url, not both" in err
    assert not cache_dir.exists()


# -- the installed console script --------------------------------------------------------


def test_console_script_runs_the_demo(tmp_path: Path) -> None:
    cache = tmp_path / "script-cache"
    finished = subprocess.run(
        [str(CONSOLE_SCRIPT), "--cache-dir", str(cache), "demo", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    shown = json.loads(finished.stdout)
    assert shown["task"]["status"] == "success"
    assert shown["results"] == [fake_counts(c, 1000) for c in demo_circuits(7)]
    assert (cache / "tasks.sqlite").is_file()


# -- one line, typed, with the fix in it --------------------------------------------------


def one_line(err: str) -> str:
    """The single ``uniqc-tasks: ...`` line of stderr (fails on anything more)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("uniqc-tasks: "), err
    return lines[0]


def location_args(store_location: dict[str, Any]) -> list[str]:
    """CLI options naming the location a ``store_location`` fixture describes."""
    if "cache_dir" in store_location:
        return ["--cache-dir", str(store_location["cache_dir"])]
    return ["--url", store_location["url"]]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInputError("limit", -1, "must be positive"), EXIT_REFUSED),
        (TaskNotFoundError("no task"), EXIT_REFUSED),
        (StoreNotFoundError("no task store at x"), EXIT_REFUSED),
        (DatabaseError("cannot connect"), EXIT_UNREACHABLE),
        (ForeignDatabaseError("not ours"), EXIT_UNREACHABLE),
        (StoreLocationError("not writable"), EXIT_UNREACHABLE),
        (SchemaTooNewError(99, 7, "x"), EXIT_UNREACHABLE),
        (DatabaseBusyError("locked"), EXIT_BUSY),
    ],
)
def test_each_kind_of_store_error_has_its_documented_exit_status(
    error: TaskStoreError, code: int
) -> None:
    assert exit_code_for(error) == code


def test_help_documents_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    described = {
        int(match.group(1))
        for match in re.finditer(r"^\s+(\d+)\s{2,}\S", out.split("Errors:", 1)[1], re.M)
    }
    assert described == {
        EXIT_OK,
        EXIT_REFUSED,
        EXIT_USAGE,
        EXIT_UNREACHABLE,
        EXIT_BUSY,
        EXIT_INTERRUPTED,
    }


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "mysql+pymysql://root@127.0.0.1:1/x",
    ],
)
def test_a_server_that_is_not_running_is_one_line_exit_3(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, err = run(capsys, "--url", url, "list")
    assert code == EXIT_UNREACHABLE
    assert out == ""
    assert "127.0.0.1" in one_line(err)


def test_a_missing_driver_is_one_line_naming_what_to_install(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "--url", "postgresql+pg8000://u@127.0.0.1/x", "list")
    assert code == EXIT_UNREACHABLE
    assert out == ""
    line = one_line(err)
    assert "'pg8000'" in line
    assert "postgresql+psycopg://" in line
    assert "uniqc-taskstore[postgresql]" in line


@pytest.mark.parametrize(
    ("module", "url", "shown"),
    [
        ("psycopg", "postgres://me:s3cret@127.0.0.1/x", "postgres://me:***@127.0.0.1/x"),
        ("psycopg", "postgresql://me@127.0.0.1/x", "postgresql://me@127.0.0.1/x"),
        (
            "pymysql",
            "mariadb://me:s3cret@127.0.0.1/x?ssl_key=k3y",
            "mariadb://me:***@127.0.0.1/x?ssl_key=***",
        ),
    ],
)
def test_a_missing_driver_echoes_the_url_as_written_with_its_password_masked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    url: str,
    shown: str,
) -> None:
    """Issue 20 item 11: not the URL completed with our driver (postgresql+psycopg://)."""
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    code, out, err = run(capsys, "--url", url, "list")
    assert code == EXIT_UNREACHABLE
    assert out == ""
    line = one_line(err)
    assert line.startswith(f"uniqc-tasks: {shown}: ")
    assert f"{module!r} is not installed" in line
    assert "+psycopg" not in line
    assert "+pymysql" not in line
    assert "s3cret" not in line
    assert "k3y" not in line


@pytest.mark.parametrize("where", ["before", "after"])
def test_url_given_a_path_says_to_use_cache_dir_or_a_sqlite_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    path = tmp_path / "cache"
    options = ["--url", str(path)]
    argv = [*options, "list"] if where == "before" else ["list", *options]
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert f"--cache-dir {path}" in err
    assert f"sqlite:///{path}/tasks.sqlite" in err
    assert "Traceback" not in err
    assert not path.exists()


def test_unparseable_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--url", "postgresql+psycopg://u@h:notaport/db", "list")
    assert code == EXIT_USAGE
    assert "is not a database URL" in err


def test_url_in_the_environment_given_a_path_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", str(tmp_path / "somewhere"))
    code, _, err = run(capsys, "list")
    assert code == EXIT_USAGE
    assert "UNIQC_TASKSTORE_URL" in err
    assert "is a path, not a URL" in err
    assert not (tmp_path / "somewhere").exists()


def test_cache_dir_given_the_database_file_says_to_give_its_directory(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, _, err = run(capsys, "--cache-dir", str(cache_dir / "tasks.sqlite"), "list")
    assert code == EXIT_USAGE
    assert f"give the directory holding tasks.sqlite ({cache_dir})" in err


def test_unknown_command_gets_clicks_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "lst")
    assert code == EXIT_USAGE
    assert out == ""
    assert "No such command 'lst'" in err
    assert "Did you mean 'list'?" in err


# -- commands that only read create nothing ------------------------------------------------


@pytest.mark.parametrize(
    "command", [["list"], ["show", "uqt_" + "0" * 32], ["shards", "uqt_" + "0" * 32]]
)
def test_read_only_command_on_a_missing_store_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    cache = tmp_path / "not" / "there"
    code, out, err = run(capsys, "--cache-dir", str(cache), *command)
    assert code == EXIT_REFUSED
    assert out == ""
    assert f"no task store at {cache / 'tasks.sqlite'}" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_read_only_command_on_the_default_location_creates_no_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = Path.home()
    before = sorted(home.rglob("*"))
    code, _, err = run(capsys, "list")
    assert code == EXIT_REFUSED
    assert "no task store at" in one_line(err)
    assert sorted(home.rglob("*")) == before


def test_copy_from_a_missing_store_creates_neither_side(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "copy", str(tmp_path / "nothing"), str(tmp_path / "dest"))
    assert code == EXIT_REFUSED
    assert out == ""
    assert "no task store at" in one_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_read_only_command_on_an_empty_server_database_creates_no_table(
    capsys: pytest.CaptureFixture[str], fresh_database_url: Callable[[str], str], kind: str
) -> None:
    url = fresh_database_url(kind)
    for command in (["list"], ["show", "uqt_" + "0" * 32], ["shards", "uqt_" + "0" * 32]):
        code, out, err = run(capsys, "--url", url, *command)
        assert code == EXIT_REFUSED
        assert out == ""
        assert "no task store at" in one_line(err)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert sa_inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_read_only_command_on_a_missing_postgresql_schema_creates_no_schema(
    capsys: pytest.CaptureFixture[str], fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url("postgresql")
    code, _, err = run(capsys, "--url", url, "--schema", "team_a", "list")
    assert code == EXIT_REFUSED
    assert "no task store at" in one_line(err)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert "team_a" not in sa_inspect(conn).get_schema_names()
    finally:
        engine.dispose()


# -- --schema only where it means something ------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        ["--cache-dir", "CACHE"],
        [],
        ["--url", "sqlite:///CACHE/tasks.sqlite"],
        ["--url", "mysql+pymysql://root@127.0.0.1:3306/test"],
    ],
)
def test_schema_where_it_would_be_ignored_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, where: list[str]
) -> None:
    argv = [arg.replace("CACHE", str(cache_dir)) for arg in where]
    code, out, err = run(capsys, *argv, "--schema", "team_a", "demo")
    assert code == EXIT_USAGE
    assert out == ""
    assert "--schema applies to PostgreSQL URLs only" in err
    assert not cache_dir.exists()
    assert list(Path.home().iterdir()) == []


def test_copy_schema_for_a_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, _, err = run(
        capsys, "copy", str(tmp_path / "cache"), str(tmp_path / "b"), "--dest-schema", "x"
    )
    assert code == EXIT_USAGE
    assert "--dest-schema applies to PostgreSQL URLs only" in err
    assert not (tmp_path / "b").exists()


def test_schema_on_postgresql_keeps_a_groups_tasks_apart(
    capsys: pytest.CaptureFixture[str], fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url("postgresql")
    shown = run_json(capsys, "demo", "--url", url, "--schema", "team_a", "--circuits", "2")
    listed = run_json(capsys, "list", "--url", url, "--schema", "team_a")
    assert [t["task_id"] for t in listed] == [shown["task"]["task_id"]]
    code, _, err = run(capsys, "list", "--url", url)
    assert code == EXIT_REFUSED
    assert "no task store at" in err


# -- demo refuses nonsense at once ---------------------------------------------------------


@pytest.mark.parametrize(
    "option", [["--circuits", "0"], ["--circuits", "-3"], ["--max-batch", "0"]]
)
def test_demo_refuses_an_empty_batch_or_empty_jobs_before_touching_the_store(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, option: list[str]
) -> None:
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "demo", *option)
    assert code == EXIT_USAGE
    assert out == ""
    assert f"Invalid value for '{option[0]}'" in err
    assert not cache_dir.exists()


def test_dummy_adapter_refuses_an_empty_batch_and_saves_nothing() -> None:
    store = TaskStore.in_memory()
    adapter = DummyAdapter(store)
    with pytest.raises(InvalidInputError, match="at least one circuit"):
        adapter.submit([])
    assert store.count() == 0


@pytest.mark.parametrize("size", [0, -1, True, 2.0])
def test_dummy_adapter_refuses_a_batch_size_below_one(size: Any) -> None:
    with pytest.raises(InvalidInputError) as refused:
        DummyAdapter(TaskStore.in_memory(), max_native_batch_size=size)
    assert refused.value.field == "max_native_batch_size"


# -- options before or after the command ---------------------------------------------------


def test_store_options_work_after_the_command(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    shown = run_json(capsys, "demo", "--cache-dir", str(cache_dir))
    listed = json.loads(run(capsys, "list", "--json", "--cache-dir", str(cache_dir))[1])
    before = json.loads(run(capsys, "--json", "--cache-dir", str(cache_dir), "list")[1])
    assert [t["task_id"] for t in listed] == [shown["task"]["task_id"]]
    assert before == listed


def test_an_option_given_twice_with_different_values_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "--cache-dir", str(tmp_path / "a"), "demo", "--cache-dir", str(tmp_path / "b")
    )
    assert code == EXIT_USAGE
    assert "given twice" in err
    assert list(tmp_path.iterdir()) == []


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.split() == ["uniqc-tasks,", "version", uniqc_taskstore.__version__]
    assert uniqc_taskstore.__version__ == importlib.metadata.version("uniqc-taskstore")


# -- list says how many matched ------------------------------------------------------------


_SHOWN_OF_MATCHED = re.compile(r"([\d,]+) of ([\d,]+) (?:archived )?tasks(; .*)?")


def shown_of_matched(err: str) -> tuple[int, int, str]:
    match = _SHOWN_OF_MATCHED.fullmatch(err.strip())
    assert match, err
    return int(match[1].replace(",", "")), int(match[2].replace(",", "")), match[3] or ""


def test_list_says_how_many_it_showed_of_how_many_matched(
    capsys: pytest.CaptureFixture[str], store: TaskStore, store_location: dict[str, Any]
) -> None:
    statuses = [TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.PENDING]
    store.save_many(
        [
            TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", status=statuses[k % 3])
            for k in range(75)
        ]
    )
    where = location_args(store_location)
    code, out, err = run(capsys, "list", *where)
    assert code == 0
    assert len(out.splitlines()) == 1 + 50
    shown, matched, hint = shown_of_matched(err)
    assert (shown, matched) == (50, 75)
    assert "--limit" in hint
    code, out, err = run(capsys, "list", *where, "--status", "success,failed", "--limit", "10")
    assert shown_of_matched(err)[:2] == (10, 50)
    code, out, err = run(capsys, "list", *where, "--status", "pending", "--all")
    assert shown_of_matched(err) == (25, 25, "")
    assert len(out.splitlines()) == 1 + 25


def test_list_json_with_a_limit_stays_parseable_and_says_on_stderr_what_it_left_out(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, err = run(capsys, "list", "--cache-dir", str(cache_dir), "--limit", "1", "--json")
    assert code == 0
    assert re.fullmatch(r"\d+ more tasks match; -n/--limit N or --all to see them\n", err)
    assert len(json.loads(out)) == 1


def test_list_help_states_the_default_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--help")
    assert code == 0
    assert re.search(r"--limit.*\[default: 50 in a table", " ".join(out.split()))


def test_list_status_takes_a_comma_list_and_repeated_flags(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    comma = run_json(capsys, "--cache-dir", str(cache_dir), "list", "--status", "success,failed")
    repeated = run_json(
        capsys, "--cache-dir", str(cache_dir), "list", "--status", "success", "--status", "failed"
    )
    expected = {seeded["done"].task_id, seeded["broken"].task_id}
    assert {t["task_id"] for t in comma} == expected
    assert comma == repeated


def test_list_status_names_the_choices_when_one_is_wrong(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, _, err = run(capsys, "--cache-dir", str(cache_dir), "list", "--status", "success,done")
    assert code == EXIT_USAGE
    assert "'done' is not a status; choose from pending, running, success" in err


def test_list_jsonl_prints_one_task_per_line(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, seeded: dict[str, TaskInfo]
) -> None:
    code, out, _ = run(capsys, "--cache-dir", str(cache_dir), "list", "--jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["task_id"] for r in rows] == [
        seeded["broken"].task_id,
        seeded["waiting"].task_id,
        seeded["done"].task_id,
    ]
