"""Timestamps at the ends of the calendar, and legacy text that is no timestamp.

Legacy files are built with ``tests/legacy_files.py`` and raw ``sqlite3``, under a
fixed local time zone (``TZ`` + ``time.tzset()``), since the naive times of the
original's oldest files are local (the v6 rewrite reads them so). Everywhere else a
naive time means UTC, whatever the local zone.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from legacy_files import build_legacy_file, pragma
from uniqc_taskstore import CURRENT_SCHEMA_VERSION, InvalidInputError, TaskInfo, TaskStore
from uniqc_taskstore.cli import main
from uniqc_taskstore.exchange import export_tasks
from uniqc_taskstore.timestamps import EPOCH, UNREADABLE_TIMES_KEY
from uniqc_taskstore.transfer import copy_tasks

EARLIEST = "0001-01-01T00:00:00.000000+00:00"
LATEST = "9999-12-31T23:59:59.999999+00:00"
ODD_ID = "uqt_" + "0d" * 16


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``local_zone("UTC+8")``-style switch of the process's local time zone."""

    def switch(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield switch
    monkeypatch.undo()
    time.tzset()


def _legacy_with_task(directory: Path, submit_time: str, update_time: str) -> Path:
    legacy = build_legacy_file(directory, 5)
    conn = sqlite3.connect(legacy.path)
    with conn:
        conn.execute(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time,"
            " metadata_json) VALUES (?, 'dummy', 'success', 10, ?, ?, '{\"k\": 1}')",
            (ODD_ID, submit_time, update_time),
        )
        conn.execute(
            "INSERT INTO task_shards (uniqc_task_id, shard_index, platform_task_id, backend,"
            " status, submit_time, update_time) VALUES (?, 0, 'job', 'dummy', 'success', ?, ?)",
            (ODD_ID, submit_time, update_time),
        )
    conn.close()
    return legacy.path


@pytest.mark.parametrize(
    ("zone", "naive", "clamped"),
    [("CST-8", "0001-01-01T00:00:00", EARLIEST), ("EST+5", "9999-12-31T23:59:59.999999", LATEST)],
)
def test_legacy_time_past_the_calendar_end_is_clamped_and_the_file_opens(
    tmp_path: Path, local_zone: Callable[[str], None], zone: str, naive: str, clamped: str
) -> None:
    local_zone(zone)
    path = _legacy_with_task(tmp_path / "cache", naive, naive)
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        task = store.get(ODD_ID)
        assert task is not None
        assert (task.submit_time, task.update_time) == (clamped, clamped)
        assert store.get_shards(ODD_ID)[0].submit_time == clamped
        store.save(task)  # what was read can be saved again
    assert pragma(path, "user_version") == CURRENT_SCHEMA_VERSION


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59.999999-05:00"]
)
def test_save_refuses_a_time_past_the_calendar_end(store: TaskStore, moment: str) -> None:
    with pytest.raises(InvalidInputError, match="storable range") as caught:
        store.save(TaskInfo(ODD_ID, "dummy", submit_time=moment))
    assert caught.value.field == "submit_time"
    assert store.get(ODD_ID) is None


def test_a_naive_time_means_utc_in_save_filters_and_the_cli_under_any_local_zone(
    store: TaskStore,
    store_location: dict[str, Any],
    local_zone: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # README: naive means UTC. Saved under Shanghai time, it was read as local time (8
    # hours earlier), while the CLI's --since read the same text as UTC.
    local_zone("Asia/Shanghai")
    store.save(TaskInfo(ODD_ID, "dummy", submit_time="2026-05-01T00:00:00"))
    stored = store.get(ODD_ID)
    assert stored is not None
    assert stored.submit_time == "2026-05-01T00:00:00.000000+00:00"
    assert [t.task_id for t in store.list(submitted_after="2026-05-01T00:00:00")] == [ODD_ID]
    assert store.count(submitted_before=datetime(2026, 5, 1)) == 0
    assert store.count(submitted_after=datetime(2026, 5, 1, 0, 0, 1)) == 0
    where = (
        ["--url", store_location["url"]]
        if "url" in store_location
        else ["--cache-dir", str(store_location["cache_dir"])]
    )
    for since, found in (("2026-05-01T00:00:00", [ODD_ID]), ("2026-05-01T00:00:01", [])):
        capsys.readouterr()
        assert main([*where, "list", "--since", since, "--json"]) == 0
        assert [t["task_id"] for t in json.loads(capsys.readouterr().out)] == found


def test_calendar_end_instants_round_trip(store: TaskStore) -> None:
    for index, instant in enumerate((EARLIEST, LATEST)):
        task_id = f"uqt_{index:032x}"
        store.save(TaskInfo(task_id, "dummy", submit_time=instant))
        stored = store.get(task_id)
        assert stored is not None
        assert stored.submit_time == instant


def test_postgresql_reads_calendar_ends_whatever_the_session_time_zone(
    fresh_database_url: Callable[[str], str],
) -> None:
    url = fresh_database_url("postgresql")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f"ALTER DATABASE {database} SET timezone = 'Asia/Shanghai'"))
    engine.dispose()
    with TaskStore(url=url) as store:
        store.save(TaskInfo(ODD_ID, "dummy", submit_time=LATEST))
        stored = store.get(ODD_ID)
        assert stored is not None
        assert stored.submit_time == LATEST


def test_unreadable_legacy_time_falls_back_and_is_kept_in_metadata(
    tmp_path: Path, local_zone: Callable[[str], None]
) -> None:
    local_zone("CST-8")
    _legacy_with_task(tmp_path / "cache", "sometime yesterday", "2025-03-05T08:00:00")
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        task = store.get(ODD_ID)
        assert task is not None
        assert task.submit_time == task.update_time == "2025-03-05T00:00:00.000000+00:00"
        assert task.metadata == {
            "k": 1,
            UNREADABLE_TIMES_KEY: {
                "submit_time": {"stored": "sometime yesterday", "read_as": task.submit_time}
            },
        }
        assert ODD_ID in [t.task_id for t in store.list()]
        assert store.get_shards(ODD_ID)[0].submit_time == task.submit_time
        store.save(task)
        again = store.get(ODD_ID)
        assert again is not None
        assert (again.submit_time, again.metadata) == (task.submit_time, task.metadata)


def test_a_row_with_no_readable_time_falls_back_to_the_epoch(
    tmp_path: Path, local_zone: Callable[[str], None]
) -> None:
    local_zone("CST-8")
    _legacy_with_task(tmp_path / "cache", "sometime yesterday", "never")
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        task = store.get(ODD_ID)
        assert task is not None
        assert (task.submit_time, task.update_time) == (EPOCH, EPOCH)
        assert task.metadata[UNREADABLE_TIMES_KEY] == {
            "submit_time": {"stored": "sometime yesterday", "read_as": EPOCH},
            "update_time": {"stored": "never", "read_as": EPOCH},
        }


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_copy_repairs_unreadable_legacy_times_the_same_way(
    tmp_path: Path,
    local_zone: Callable[[str], None],
    fresh_database_url: Callable[[str], str],
    kind: str,
) -> None:
    local_zone("CST-8")
    _legacy_with_task(tmp_path / "cache", "sometime yesterday", "2025-03-05T08:00:00")
    target = (
        {"cache_dir": tmp_path / "copy"} if kind == "sqlite" else {"url": fresh_database_url(kind)}
    )
    with TaskStore(cache_dir=tmp_path / "cache") as source, TaskStore(**target) as destination:
        report = copy_tasks(source, destination)
        assert report.copied.tasks == report.source.tasks
        copied = destination.get(ODD_ID)
        assert copied is not None
        assert copied == source.get(ODD_ID)
        assert copy_tasks(source, destination).copied.tasks == 0
    assert os.environ["TZ"] == "CST-8"


def _every_read_path(store: TaskStore, limit: int) -> dict[str, list[tuple[str, str]]]:
    """What each read path gives: (task id, submit time) per task, in its order. Each
    stream is cut after 100 tasks, so a path that loops shows as repeats."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for order_by, descending in itertools.product(("submit_time", "update_time"), (True, False)):
        sort = {"order_by": order_by, "descending": descending}
        label = f"{order_by}-{'desc' if descending else 'asc'}"
        pages, cursor = [], None
        for _ in range(100):
            page = store.list_page(limit=limit, cursor=cursor, **sort)  # type: ignore[arg-type]
            pages += [(t.task_id, t.submit_time) for t in page.tasks]
            cursor = page.next_cursor
            if cursor is None:
                break
        seen[f"list_page cursor {label}"] = pages
        tasks = itertools.islice(store.iter_tasks(batch_size=limit, **sort), 100)  # type: ignore[call-overload]
        seen[f"iter_tasks {label}"] = [(t.task_id, t.submit_time) for t in tasks]
        seen[f"summaries {label}"] = [
            (t.task_id, t.submit_time)
            for t in store.summaries(**sort)  # type: ignore[arg-type]
        ]
    pages, after = [], None
    for _ in range(100):
        page = store.list_page(limit=limit, after=after)
        pages += [(t.task_id, t.submit_time) for t in page.tasks]
        after = page.next_after
        if after is None:
            break
    seen["list_page next_after"] = pages
    seen["list"] = [(t.task_id, t.submit_time) for t in store.list()]
    out = io.StringIO()
    export_tasks(store, out, batch_size=limit)
    exported = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    seen["export"] = [(t["task"]["task_id"], t["task"]["submit_time"]) for t in exported]
    return seen


def test_legacy_rows_with_unreadable_submit_times_are_read_once_by_every_path(
    tmp_path: Path, local_zone: Callable[[str], None]
) -> None:
    # RELIABILITY 9.2 repairs such a row on reading; pages and streams positioned
    # themselves by the repaired time, which the stored text does not sort by: list_page
    # refused its own cursor, iter_tasks and export skipped rows (ascending, it looped
    # for ever) and summaries() gave the unrepaired text.
    local_zone("CST-8")
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        for n in range(7):
            store.save(
                TaskInfo(f"uqt_{n:032x}", "dummy", submit_time=f"2026-03-0{n + 1}T10:00:00Z")
            )
        store.save(TaskInfo(ODD_ID, "dummy"))
    conn = sqlite3.connect(tmp_path / "cache" / "tasks.sqlite")
    with conn:
        for task_id, submitted in (
            (ODD_ID, "sometime yesterday"),
            (f"uqt_{1:032x}", "a while ago"),
            (f"uqt_{2:032x}", "2026-03-03T10:00:00"),  # naive, as the original may write
            (f"uqt_{3:032x}", "2026-03-04T10:00:00+00:00"),  # no microseconds
        ):
            conn.execute("UPDATE tasks SET submit_time = ? WHERE task_id = ?", (submitted, task_id))
    conn.close()
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        resaved = store.get(ODD_ID)
        assert resaved is not None
        store.save(resaved)  # records the repair in its metadata, stamps a new update time
        expected = {t.task_id: t.submit_time for t in store.list()}
        assert len(expected) == 8
        for task_id, submitted in expected.items():
            stored = store.get(task_id)
            assert stored is not None
            assert stored.submit_time == submitted
        for limit in (1, 2, 3, 8):
            for path, found in _every_read_path(store, limit).items():
                assert sorted(found) == sorted(expected.items()), (path, limit)
