"""``uniqc-tasks``: the demo adapter run end to end, and looking inside a store."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import main
from uniqc_taskstore.demo import DEMO_BACKEND, fake_counts

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


def test_foreign_sqlite_file_exits_1_with_a_clear_message(
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
    assert code == 1
    assert out == ""
    assert err.startswith("uniqc-tasks: ")
    assert "left untouched" in err
    assert "Traceback" not in err
    assert path.read_bytes() == before


def test_file_that_is_not_a_database_exits_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    cache_dir.mkdir()
    path = cache_dir / "tasks.sqlite"
    path.write_text("these are my notes, not a database\n" * 100)
    code, out, err = run(capsys, "--cache-dir", str(cache_dir), "demo")
    assert code == 1
    assert out == ""
    assert err.startswith("uniqc-tasks: ")
    assert "not a SQLite database" in err
    assert "Traceback" not in err
    assert path.read_text() == "these are my notes, not a database\n" * 100


def test_cache_dir_and_url_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--cache-dir", str(cache_dir), "--url", "sqlite://", "list"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
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
