"""``uniqc-tasks`` as an operator trusts it (issue 20): no traps in durations, machine
formats that return everything, conflicting options refused, rows that cannot be read
skipped on request, hints that name real options. Where the database matters the
tests run on every backend (the ``store`` fixture)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, main
from uniqc_taskstore.cli.completion import complete_statuses
from uniqc_taskstore.cli.filter_options import parse_duration, parse_moment


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add(store: TaskStore, status: TaskStatus = TaskStatus.SUCCESS, **fields: Any) -> str:
    task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", status=status, **fields)
    store.save(task)
    return task.task_id


def many(store: TaskStore, count: int) -> list[str]:
    tasks = [TaskInfo(generate_uniqc_task_id(), "dummy") for _ in range(count)]
    store.save_many(tasks)
    return [t.task_id for t in tasks]


def spoil_status(store: TaskStore, task_id: str) -> None:
    """Give one stored row a status the store cannot read (as a foreign writer might)."""
    with store._db.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'bogus' WHERE task_id = :id"), {"id": task_id})


# -- item 1: durations ---------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw"))
def test_a_lower_case_unit_means_what_it_says(number: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{number}{unit}") == timedelta(seconds=number * seconds)


@given(st.integers(min_value=1, max_value=1000), st.sampled_from(["M", "mo", "month", "y", "Y"]))
def test_months_and_years_are_refused_with_weeks_and_days_to_write(number: int, unit: str) -> None:
    with pytest.raises(ValueError, match=r"use \d+(\.\d)?w or \d+d"):
        parse_duration(f"{number}{unit}")


def test_six_m_is_refused_naming_26w_or_180d_and_prunes_nothing(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    done = add(store)
    store.archive(done)
    for argv in (["prune", "--older-than", "6M"], ["prune", "--archived", "--older-than", "1M"]):
        code, out, err = run(capsys, *where(store_location), *argv, "--yes")
        assert (code, out) == (EXIT_USAGE, "")
        assert "use 26w or 180d" in err or "use 4w or 30d" in err
    assert store.get_archived(done) is not None


def test_human_times_read_as_utc() -> None:
    now = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
    assert parse_moment("3 days ago", now=now) == now - timedelta(days=3)
    assert parse_moment("3d", now=now) == now - timedelta(days=3)
    assert parse_moment("yesterday", now=now) == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_moment("today", now=now) == datetime(2026, 11, 28, tzinfo=UTC)
    assert parse_moment("2026-11-01T08:00", now=now) == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_since_yesterday_and_three_days_ago_filter_list(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    old = TaskInfo(generate_uniqc_task_id(), "dummy")
    old.submit_time = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    store.save(old)
    new = add(store)
    for since in ("yesterday", "3 days ago", "3d"):
        code, out, _ = run(capsys, *where(store_location), "list", "--since", since, "-q")
        assert (code, out.split()) == (EXIT_OK, [new])


# -- item 2: machine formats return everything ---------------------------------------------


def test_machine_formats_and_quiet_list_every_match_past_the_table_limit(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = set(many(store, 120))
    code, out, err = run(capsys, *where(store_location), "list", "--json")
    assert (code, err) == (EXIT_OK, "")
    assert {t["task_id"] for t in json.loads(out)} == ids
    code, out, err = run(capsys, *where(store_location), "list", "--jsonl")
    assert {json.loads(line)["task_id"] for line in out.splitlines()} == ids
    code, out, err = run(capsys, *where(store_location), "list", "--format", "csv")
    assert {row["task_id"] for row in csv.DictReader(io.StringIO(out))} == ids
    code, out, err = run(capsys, *where(store_location), "list", "-q")
    assert set(out.split()) == ids
    code, out, err = run(capsys, *where(store_location), "list", "--jsonl", "-n", "7")
    assert len(out.splitlines()) == 7
    assert err == "113 more tasks match; -n/--limit N or --all to see them\n"


def test_an_empty_listing_is_valid_json(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *where(store_location), "list", "--json")
    assert (code, json.loads(out)) == (EXIT_OK, [])


# -- item 3: conflicting or ignored options ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["list", "--all", "--limit", "5"], "--all shows every task and -n/--limit caps them"),
        (["list", "--all", "-n", "5"], "--all shows every task"),
        (["export", "-o", "x.jsonl", "--archived", "--archived-only"], "contradict each other"),
        (["list", "--since", "2d", "--until", "3d"], "--since"),
        (["list", "--updated-since", "1h", "--updated-before", "2h"], "--updated-since"),
        (["watch", "--json"], "use --jsonl"),
        (["watch", "--format", "csv"], "use --jsonl"),
        (["--url", "sqlite:///x/tasks.sqlite", "copy", "a", "b"], "SOURCE and DEST arguments"),
        (["copy", "a", "b", "--cache-dir", "c"], "No such option '--cache-dir'"),
        (["--schema", "s", "copy", "a", "b"], "--source-schema and --dest-schema"),
        (["list", "-q", "--json"], "-q prints only ids"),
    ],
)
def test_conflicts_are_refused_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    with TaskStore(tmp_path / "c") as store:
        add(store, TaskStatus.RUNNING)
    os.chdir(tmp_path)
    code, out, err = (
        run(capsys, "--cache-dir", str(tmp_path / "c"), *argv)
        if argv[0] not in ("--url", "--schema", "copy")
        else run(capsys, *argv)
    )
    assert (code, out) == (EXIT_USAGE, "")
    assert said in err
    assert not (tmp_path / "x.jsonl").exists()


def test_watch_jsonl_prints_one_object_per_status(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store, TaskStatus.FAILED)
    code, out, _ = run(capsys, *where(store_location), "watch", task_id, "--jsonl")
    assert code == EXIT_OK
    assert [json.loads(line) for line in out.splitlines()] == [
        {"task_id": task_id, "status": "failed", "previous": None}
    ]


def test_watch_says_up_front_when_it_watches_only_the_oldest_n(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = many(store, 3)
    for task_id in ids:
        store.save(TaskInfo(task_id, "dummy", status=TaskStatus.SUCCESS))
    code, _out, err = run(
        capsys, *where(store_location), "watch", "--status", "success", "--limit", "2"
    )
    assert code == EXIT_OK
    assert err.startswith("watching the oldest 2 of 3 matching tasks; --limit N to watch more\n")


@pytest.mark.parametrize(
    ("name", "extra", "form"),
    [
        ("x.json", [], "json"),
        ("x.json", ["--format", "json"], "json"),
        ("x.out", ["--format", "json"], "json"),
        ("x.jsonl", [], "jsonl"),
        ("x.out", [], "jsonl"),
        ("x.csv", [], "csv"),
    ],
)
def test_export_writes_the_form_its_file_or_format_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, extra: list[str], form: str
) -> None:
    with TaskStore(tmp_path / "c") as store:
        ids = set(many(store, 3))
    target = tmp_path / name
    code, _, err = run(
        capsys, "--cache-dir", str(tmp_path / "c"), "export", "-o", str(target), *extra
    )
    assert code == EXIT_OK, err
    written = target.read_text(encoding="utf-8")
    if form == "json":
        document = json.loads(written)
        assert document["uniqc_export"] == 1
        assert {item["task"]["task_id"] for item in document["tasks"]} == ids
    elif form == "jsonl":
        lines = [json.loads(line) for line in written.splitlines()]
        assert {line["task"]["task_id"] for line in lines[1:]} == ids
    else:
        assert {row["task_id"] for row in csv.DictReader(io.StringIO(written))} == ids


def test_an_empty_json_export_is_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    TaskStore(tmp_path / "c").close()
    code, _, _ = run(
        capsys, "--cache-dir", str(tmp_path / "c"), "export", "-o", str(tmp_path / "e.json")
    )
    assert code == EXIT_OK
    assert json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))["tasks"] == []


# -- item 4: --schema with postgres:// ------------------------------------------------------


def test_schema_with_a_postgres_url_is_accepted(
    fresh_database_url: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    if not os.environ.get("UNIQC_TEST_POSTGRESQL_URL"):
        pytest.skip("set UNIQC_TEST_POSTGRESQL_URL to run it")
    url = fresh_database_url("postgresql")
    with TaskStore.from_url(url, schema="ops") as store:
        task_id = add(store)
    short = re.sub(r"^postgresql(\+\w+)?://", "postgres://", url)
    code, out, err = run(capsys, "--url", short, "--schema", "ops", "list", "-q")
    assert (code, out.split()) == (EXIT_OK, [task_id]), err


def test_schema_with_a_sqlite_store_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--cache-dir", str(tmp_path), "--schema", "s", "list")
    assert code == EXIT_USAGE
    assert "PostgreSQL URLs only" in err


# -- item 5: rows that cannot be read ------------------------------------------------------


def test_skip_corrupt_salvages_the_readable_rows_and_counts_the_rest(
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    good = add(store)
    bad = add(store)
    spoil_status(store, bad)
    for argv in (["list", "-q"], ["list"], ["show", bad]):
        code, _, _ = run(capsys, *where(store_location), *argv)
        assert code == EXIT_UNREACHABLE
    code, out, err = run(capsys, *where(store_location), "list", "-q", "--skip-corrupt")
    assert (code, out.split()) == (EXIT_OK, [good])
    assert f"skipped 1 unreadable row ({bad})" in err
    code, out, err = run(capsys, *where(store_location), "list", "-n", "5", "--skip-corrupt")
    assert code == EXIT_OK
    assert good in out
    assert bad not in out
    code, out, err = run(capsys, *where(store_location), "show", good, "--skip-corrupt")
    assert code == EXIT_OK
    assert good in out
    code, out, err = run(capsys, *where(store_location), "show", bad, "--skip-corrupt")
    assert code == EXIT_REFUSED
    assert "cannot be read" in err
    target = tmp_path / "salvaged.jsonl"
    code, _, err = run(
        capsys, *where(store_location), "export", "-o", str(target), "--skip-corrupt"
    )
    assert code == EXIT_OK
    lines = target.read_text(encoding="utf-8").splitlines()[1:]
    assert [json.loads(line)["task"]["task_id"] for line in lines] == [good]
    assert "skipped 1 unreadable row" in err


def test_stats_counts_the_rows_it_could_not_read(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    add(store)
    spoil_status(store, add(store))
    stats = json.loads(run(capsys, *where(store_location), "stats", "--json")[1])
    assert stats["tasks"] == 2
    assert stats["by_status"] == {"success": 1}
    assert stats["unreadable"] == 1
    _code, out, err = run(capsys, *where(store_location), "stats")
    assert re.search(r"^unreadable\s+1\b", out, re.MULTILINE)
    assert "1 row has a status that cannot be read" in err


# -- item 11: hints -----------------------------------------------------------------------


def test_a_missing_sqlite_url_is_echoed_as_written_without_suggesting_cache_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(tmp_path)
    code, out, err = run(capsys, "--url", "sqlite:///missing/x.sqlite", "list")
    assert (code, out) == (EXIT_REFUSED, "")
    assert err.startswith("uniqc-tasks: no task store at sqlite:///missing/x.sqlite (--url)")
    assert "--cache-dir" not in err


def test_a_password_in_an_echoed_url_is_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--url", "foo://u:secret@host/db", "list")
    assert code == EXIT_UNREACHABLE
    assert "secret" not in err
    assert "foo://u:***@host/db" in err


def test_an_unknown_scheme_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--url", "foo://x", "list")
    assert (code, out) == (EXIT_UNREACHABLE, "")
    assert "foo://x names a database uniqc-taskstore does not support" in err


def test_per_circuit_export_has_failed_and_cancelled_tasks_with_their_error(
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    failed = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.FAILED)
    failed.error_message = "calibration failed"
    store.save(failed)
    cancelled = add(store, TaskStatus.CANCELLED)
    half = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.FAILED)
    store.save(
        half,
        [
            TaskShard(half.task_id, 0, "j0", "dummy", 1, 0, TaskStatus.SUCCESS, result={"0": 5}),
            TaskShard(
                half.task_id, 1, "j1", "dummy", 1, 1, TaskStatus.FAILED, error_message="lost"
            ),
        ],
    )
    target = tmp_path / "c.csv"
    code, _, err = run(capsys, *where(store_location), "export", "--per-circuit", "-o", str(target))
    assert code == EXIT_OK, err
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    got = {(r["task_id"], r["circuit_index"], r["result"], r["error_message"]) for r in rows}
    assert got == {
        (failed.task_id, "", "", "calibration failed"),
        (cancelled, "", "", "cancelled"),
        (half.task_id, "0", '{"0":5}', ""),
        (half.task_id, "1", "", "lost"),
    }


def test_status_completion_offers_statuses_after_a_comma() -> None:
    offered = [item.value for item in complete_statuses(None, None, "failed,ca")]  # type: ignore[arg-type]
    assert offered == ["failed,cancelled"]
    assert {s.value for s in TaskStatus} == {
        item.value
        for item in complete_statuses(None, None, "")  # type: ignore[arg-type]
    }


# -- item 7: bulk by filter ----------------------------------------------------------------


def test_archive_restore_delete_and_tag_by_filter_say_how_many_and_list_the_ids(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {add(store, TaskStatus.FAILED) for _ in range(3)}
    kept = add(store)
    at = where(store_location)
    code, out, err = run(capsys, *at, "archive", "--status", "failed")
    assert code == EXIT_USAGE  # three tasks, no terminal, no --yes
    assert "3 tasks match" in err
    assert "add --yes" in err
    code, out, err = run(capsys, *at, "tag", "--status", "failed", "triage=yes", "--yes", "--json")
    assert (code, set(json.loads(out)["done"])) == (EXIT_OK, failed)
    assert all(store.get(i).tags == {"triage": "yes"} for i in failed)  # type: ignore[union-attr]
    code, out, err = run(capsys, *at, "archive", "--tag", "triage=yes", "--yes", "--json")
    assert (code, set(json.loads(out)["done"])) == (EXIT_OK, failed)
    assert "3 tasks match" in err
    assert store.count() == 1
    code, out, _ = run(capsys, *at, "restore", "--status", "failed", "--yes", "--json")
    assert set(json.loads(out)["done"]) == failed
    code, out, _ = run(capsys, *at, "delete", "--status", "failed", "--yes", "--json")
    assert set(json.loads(out)["done"]) == failed
    assert [t.task_id for t in store.list()] == [kept]


def test_bulk_commands_read_ids_from_stdin(
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [add(store, TaskStatus.FAILED) for _ in range(2)]
    code, listed, _ = run(capsys, *where(store_location), "list", "--status", "failed", "-q")
    monkeypatch.setattr("sys.stdin", io.StringIO(listed + "\n# a comment\n"))
    code, out, _ = run(capsys, *where(store_location), "archive", "-", "--yes", "--json")
    assert (code, sorted(json.loads(out)["done"])) == (EXIT_OK, sorted(ids))


@pytest.mark.parametrize(
    "argv",
    [["archive"], ["archive", "uqt_x", "--status", "failed"], ["delete", "-", "uqt_x"]],
)
def test_bulk_commands_need_ids_or_filters_but_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    TaskStore(tmp_path / "c").close()
    code, out, _ = run(capsys, "--cache-dir", str(tmp_path / "c"), *argv)
    assert (code, out) == (EXIT_USAGE, "")


def test_prune_yes_json_lists_the_ids_it_archived(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    done = add(store)
    code, out, _ = run(
        capsys, *where(store_location), "prune", "--older-than", "0s", "--yes", "--json"
    )
    assert code == EXIT_OK
    assert json.loads(out)["task_ids"] == [done]


# -- item 9: everyday habits ----------------------------------------------------------------


def test_columns_archived_at_and_show_null(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(store, TaskStatus.FAILED)
    store.archive(task_id)
    code, out, _ = run(capsys, *where(store_location), "list", "--archived")
    assert "ARCHIVED AT (UTC)" in out.splitlines()[0]
    code, out, _ = run(
        capsys, *where(store_location), "list", "--archived", "--columns", "task,status"
    )
    assert out.split() == ["TASK", "STATUS", task_id, "failed"]
    code, out, _ = run(
        capsys, *where(store_location), "list", "--archived", "--columns", "task,error", "--json"
    )
    assert json.loads(out) == [{"task_id": task_id, "error_message": None}]
    code, out, _ = run(capsys, *where(store_location), "show", task_id)
    assert re.search(r"^\s*error_message: null$", out, re.MULTILINE)
    assert "None" not in out
    code, _, err = run(capsys, *where(store_location), "list", "--columns", "task,bogus")
    assert code == EXIT_USAGE
    assert "'bogus' is not a column" in err


def test_completion_prints_a_script_and_completes_task_ids(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for shell in ("bash", "zsh", "fish"):
        code, out, _ = run(capsys, "completion", shell)
        assert code == EXIT_OK
        assert "_UNIQC_TASKS_COMPLETE" in out
    task_id = add(store)
    finished = subprocess.run(
        [sys.executable, "-m", "uniqc_taskstore.cli"],
        env={
            **os.environ,
            "_UNIQC_TASKS_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["uniqc-tasks", *where(store_location), "show", task_id[:6]]),
            "COMP_CWORD": str(len(where(store_location)) + 2),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert f"plain,{task_id}" in finished.stdout.splitlines()


# -- item 8: named stores ------------------------------------------------------------------


def write_config(root: Path, text_: str) -> Path:
    path = root / "uniqc-tasks" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_, encoding="utf-8")
    return path


def test_a_named_store_is_picked_by_store_or_the_variable(
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    task_id = add(store)
    if "url" in store_location:
        entry = f'url = "{store_location["url"]}"'
    else:
        entry = f'cache_dir = "{store_location["cache_dir"]}"'
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    write_config(tmp_path / "xdg", f"[stores.work]\n{entry}\n[stores.other]\ncache_dir = 'x'\n")
    code, out, _ = run(capsys, "--store", "work", "list", "-q")
    assert (code, out.split()) == (EXIT_OK, [task_id])
    monkeypatch.setenv("UNIQC_TASKSTORE", "work")
    code, out, _ = run(capsys, "list", "-q")
    assert (code, out.split()) == (EXIT_OK, [task_id])
    stores = json.loads(run(capsys, "stores", "--json")[1])["stores"]
    assert [(s["name"], s["in_use"]) for s in stores] == [("work", True), ("other", False)]
    code, _, err = run(capsys, "--store", "nope", "list")
    assert code == EXIT_USAGE
    assert "no store named 'nope' (--store)" in err
    assert "named stores: other, work" in err
    code, _, err = run(capsys, "--store", "work", "--cache-dir", str(tmp_path), "list")
    assert code == EXIT_USAGE
    assert "give --store or --cache-dir, not both" in err


def test_stores_masks_passwords_and_reads_xdg_config_home(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    write_config(
        tmp_path / "xdg",
        '[stores.lab]\nurl = "postgresql+psycopg://me:s3cret@db/quantum"\nschema = "team_a"\n',
    )
    code, out, _ = run(capsys, "stores")
    assert code == EXIT_OK
    assert "s3cret" not in out
    assert "postgresql+psycopg://me:***@db/quantum" in out
    assert "team_a" in out


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("[stores.a\n", "is not valid TOML"),
        ("[stores.a]\nurl = 'sqlite:///x'\ncache_dir = 'y'\n", "needs url or cache_dir"),
        ("[stores.a]\ncache_dir = 'y'\npassword = 'p'\n", "has 'password'"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    config: str,
    said: str,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = write_config(tmp_path / "xdg", config)
    code, out, err = run(capsys, "--store", "a", "list")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith(f"uniqc-tasks: {path}")
    assert said in err


def test_schema_variable_goes_with_the_url_variable(
    fresh_database_url: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.environ.get("UNIQC_TEST_POSTGRESQL_URL"):
        pytest.skip("set UNIQC_TEST_POSTGRESQL_URL to run it")
    url = fresh_database_url("postgresql")
    with TaskStore.from_url(url, schema="ops") as store:
        task_id = add(store)
    monkeypatch.setenv("UNIQC_TASKSTORE_URL", url)
    monkeypatch.setenv("UNIQC_TASKSTORE_SCHEMA", "ops")
    code, out, err = run(capsys, "list", "-q")
    assert (code, out.split()) == (EXIT_OK, [task_id]), err


# -- item 10: restore-backup and vacuum -----------------------------------------------------


def test_restore_backup_puts_the_backup_back_and_keeps_the_current_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "c"
    with TaskStore(cache) as store:
        first = add(store)
    assert run(capsys, "--cache-dir", str(cache), "backup", str(tmp_path / "b.sqlite"))[0] == 0
    with TaskStore(cache) as store:
        later = add(store)
    code, out, err = run(
        capsys, "--cache-dir", str(cache), "restore-backup", str(tmp_path / "b.sqlite")
    )
    assert code == EXIT_OK, err
    (kept,) = cache.glob("tasks.sqlite.*.bak")
    assert str(kept) in out
    assert kept.stat().st_mode & 0o777 == 0o600
    with TaskStore(cache, create=False) as store:
        assert [t.task_id for t in store.list()] == [first]
    with TaskStore.from_url(f"sqlite:///{kept}", create=False) as old:
        assert {t.task_id for t in old.list()} == {first, later}


def test_restore_backup_refuses_a_bad_backup_and_a_store_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "c"
    with TaskStore(cache) as store:
        add(store)
    run(capsys, "--cache-dir", str(cache), "backup", str(tmp_path / "b.sqlite"))
    before = (cache / "tasks.sqlite").read_bytes()
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    code, _, err = run(
        capsys, "--cache-dir", str(cache), "restore-backup", str(tmp_path / "junk.sqlite")
    )
    assert code == EXIT_REFUSED
    assert "not a SQLite database" in err
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT 1 FROM tasks').fetchall(); print('held', flush=True); "
            "time.sleep(30)",
            str(cache / "tasks.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run(
            capsys, "--cache-dir", str(cache), "restore-backup", str(tmp_path / "b.sqlite")
        )
    finally:
        holder.kill()
        holder.wait()
    assert code == 4
    assert "open in another process" in err
    assert (cache / "tasks.sqlite").read_bytes() == before
    assert (
        sorted(p.name for p in cache.iterdir() if ".bak" in p.name or "restoring" in p.name) == []
    )


def test_vacuum_gives_the_space_of_a_deleted_task_back_and_reports_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "c"
    with TaskStore(cache) as store:
        big = add(store, result=[{"0" * 20: n} for n in range(20_000)])
        store.delete(big)
    code, out, _ = run(capsys, "--cache-dir", str(cache), "vacuum", "--json")
    assert code == EXIT_OK
    report = json.loads(out)
    assert report["before"] > report["after"] + 200_000
    assert report["after"] == (cache / "tasks.sqlite").stat().st_size


def test_vacuum_and_restore_on_a_server_name_the_servers_tool(
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    backend_kind: str,
) -> None:
    if backend_kind == "sqlite":
        pytest.skip("a server's message")
    code, out, err = run(capsys, *where(store_location), "vacuum")
    assert (code, out) == (EXIT_REFUSED, "")
    assert ("VACUUM FULL" if backend_kind == "postgresql" else "OPTIMIZE TABLE") in err


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """What the CLI printed with stdout on a pseudo-terminal (ANSI codes removed)."""
    import pty

    from pty_output import read_until_closed

    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "uniqc_taskstore.cli", *argv],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TERM": "xterm", **env},
    )
    os.close(terminal)
    try:
        seen = read_until_closed(controller).decode(errors="replace")
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)


def test_a_table_fits_columns_without_cutting_ids_and_pages_only_on_request(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "c"
    with TaskStore(cache) as store:
        ids = [add(store, name="a rather long task name " * 3) for _ in range(12)]
    where_ = ["--cache-dir", str(cache)]
    narrow = _on_a_terminal([*where_, "list"], {"COLUMNS": "90", "LINES": "50", "PAGER": "cat"})
    assert all(task_id in narrow for task_id in ids)
    assert max(len(line) for line in narrow.splitlines()) <= 90
    pager = "sh -c 'echo PAGED; cat'"
    paged = _on_a_terminal([*where_, "list"], {"COLUMNS": "200", "LINES": "5", "PAGER": pager})
    assert "PAGED" in paged
    assert all(task_id in paged for task_id in ids)
    plain = _on_a_terminal(
        [*where_, "list", "--no-pager"], {"COLUMNS": "200", "LINES": "5", "PAGER": pager}
    )
    assert "PAGED" not in plain
    assert all(task_id in plain for task_id in ids)
