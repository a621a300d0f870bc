"""Task files written by the original implementation's own code open with nothing lost.

``tests/data/golden/`` holds ``.sqlite`` files the original store wrote at schemas 1, 2
and 5 (and a schema-1 file the original's schema-5 code migrated), with a manifest of
what the original itself read back from each (see the README there). Every run copies
each file into a temporary directory (the committed copy is never opened in place),
opens it with our store, which migrates it, and checks each task and shard against
the manifest. The files were written with ``TZ=Asia/Shanghai``, so the tests run in
that zone: a naive time in them is Shanghai local time.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from uniqc_taskstore import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    TaskInfo,
    TaskShard,
    TaskStore,
    is_uniqc_task_id,
)

GOLDEN = Path(__file__).parent / "data" / "golden"
MANIFEST: dict[str, dict[str, Any]] = json.loads((GOLDEN / "manifest.json").read_text("utf-8"))
WRITERS_ZONE = "Asia/Shanghai"
TASK_FIELDS = ("backend", "status", "shots", "result", "error_message", "archived_at")
SHARD_FIELDS = (
    "shard_index",
    "platform_task_id",
    "backend",
    "circuit_count",
    "sub_index_offset",
    "status",
    "result",
    "error_message",
)


@pytest.fixture(autouse=True)
def _writers_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in the zone the files were written in, and restore the zone afterwards."""
    monkeypatch.setenv("TZ", WRITERS_ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def instant(text: str) -> datetime:
    """The moment an ISO-8601 text names; a naive one is local to the writer's zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(WRITERS_ZONE))
    return moment


def open_copy(name: str, tmp_path: Path) -> TaskStore:
    cache = tmp_path / "cache"
    cache.mkdir(parents=True)
    target = cache / "tasks.sqlite"
    shutil.copyfile(GOLDEN / f"{name}.sqlite", target)
    target.chmod(0o600)
    return TaskStore(cache)


def find_task(store: TaskStore, original_id: str) -> TaskInfo:
    """The task the original knew as ``original_id``: under that id, or re-keyed with it
    kept as ``legacy_platform_id``."""
    task = store.get(original_id)
    if task is None:
        task_id = store.find_uniqc_id_by_platform_id(original_id)
        assert task_id is not None, f"{original_id} is gone"
        task = store.get(task_id)
    assert task is not None, f"{original_id} is gone"
    return task


def assert_same_shard(got: TaskShard, expected: dict[str, Any], task_id: str) -> None:
    assert got.uniqc_task_id == task_id
    assert {f: getattr(got, f) for f in SHARD_FIELDS} == {f: expected[f] for f in SHARD_FIELDS}
    for field in ("submit_time", "update_time"):
        assert instant(getattr(got, field)) == instant(expected[field]), field


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_committed_copy_is_what_the_manifest_describes(name: str) -> None:
    with sqlite3.connect(f"file:{GOLDEN / name}.sqlite?mode=ro", uri=True) as conn:
        stamps = [
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("user_version", "application_id")
        ]
    conn.close()
    assert stamps == [MANIFEST[name]["user_version"], MANIFEST[name]["application_id"]]
    assert MANIFEST[name]["application_id"] == APPLICATION_ID


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_task_reads_back_as_the_original_read_it(name: str, tmp_path: Path) -> None:
    expected_tasks = MANIFEST[name]["tasks"]
    with open_copy(name, tmp_path) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        assert store.count() == len(expected_tasks)
        assert store.count_archived() == 0
        for expected in expected_tasks:
            task = find_task(store, expected["task_id"])
            want = {f: expected.get(f) for f in TASK_FIELDS}
            assert {f: getattr(task, f) for f in TASK_FIELDS} == want, expected["task_id"]
            metadata = dict(task.metadata)
            if task.task_id != expected["task_id"]:
                # Re-keyed by our v5 step: the only thing added is where it came from.
                assert metadata.pop("legacy_platform_id") == expected["task_id"]
            assert metadata == expected["metadata"]
            assert instant(task.submit_time) == instant(expected["submit_time"])
            assert instant(task.update_time) == instant(expected["update_time"])


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if "shards" in MANIFEST[n]))
def test_every_shard_reads_back_as_the_original_read_it(name: str, tmp_path: Path) -> None:
    with open_copy(name, tmp_path) as store:
        for task_id, expected_shards in MANIFEST[name]["shards"].items():
            shards = store.get_shards(task_id)
            assert len(shards) == len(expected_shards), task_id
            for got, expected in zip(shards, expected_shards, strict=True):
                assert_same_shard(got, expected, task_id)


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if MANIFEST[n]["user_version"] < 5))
def test_platform_keyed_task_gets_one_mirror_shard_as_the_original_gave_it(
    name: str, tmp_path: Path
) -> None:
    # What the original's own v1->v5 upgrade made of the same tasks is the reference:
    # one shard, index 0, one circuit, mirroring the task. A legacy task whose result
    # lists several circuits (dummy-0001) still gets circuit_count 1; its own result
    # stays the authority, and the task's result above is checked to be that list.
    upgraded = MANIFEST["v1-upgraded-by-original-a2fce31"]
    reference = {shards[0]["platform_task_id"]: shards[0] for shards in upgraded["shards"].values()}
    with open_copy(name, tmp_path) as store:
        for expected in MANIFEST[name]["tasks"]:
            task = find_task(store, expected["task_id"])
            assert is_uniqc_task_id(task.task_id)
            (shard,) = store.get_shards(task.task_id)
            mirror = reference[expected["task_id"]]
            assert {f: getattr(shard, f) for f in SHARD_FIELDS} == {
                f: mirror[f] for f in SHARD_FIELDS
            }
            assert instant(shard.submit_time) == instant(expected["submit_time"])
            assert instant(shard.update_time) == instant(expected["update_time"])


def test_committed_copies_are_unchanged_by_the_run(tmp_path: Path) -> None:
    # Opening a copy must never touch the committed file next to it.
    before = {p.name: p.read_bytes() for p in GOLDEN.glob("*.sqlite")}
    for name in MANIFEST:
        open_copy(name, tmp_path / name).close()
    assert {p.name: p.read_bytes() for p in GOLDEN.glob("*.sqlite")} == before
