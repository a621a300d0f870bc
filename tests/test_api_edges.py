"""The public API at edges the other tests pass by: paging arguments, cursors that were
tampered with, locations given twice, file names no file system can hold, tuple keys
inside tuple keys, and a task with more shards than one ``IN (...)`` list holds."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text

from conftest import _admin_execute, server_admin_url
from uniqc_taskstore import (
    CorruptRowError,
    InvalidInputError,
    StoreLocationError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    UnserializableValueError,
    generate_uniqc_task_id,
)
from uniqc_taskstore.engine import _registry
from uniqc_taskstore.jsoncodec import MAX_DEPTH, from_jsonable, to_jsonable
from uniqc_taskstore.statements import ID_BATCH
from uniqc_taskstore.timestamps import is_readable_timestamp, normalize_timestamp
from uniqc_taskstore.transfer import copy_tasks


def saved(store: TaskStore, n: int) -> list[str]:
    ids = []
    for k in range(n):
        task = TaskInfo(generate_uniqc_task_id(), "dummy")
        task.submit_time = f"2025-01-01T00:00:{k:02d}+00:00"
        store.save(task)
        ids.append(task.task_id)
    return ids


def test_summaries_with_an_offset_and_no_limit_skip_only_the_first(store: TaskStore) -> None:
    ids = saved(store, 4)
    found = store.summaries(offset=1, order_by="submit_time", descending=False)
    assert [s.task_id for s in found] == ids[1:]


def test_a_page_of_zero_tasks_is_refused(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store, pytest.raises(InvalidInputError) as raised:
        store.list_page(limit=0)
    assert raised.value.field == "limit"


def test_after_is_only_for_the_default_order(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        (task_id,) = saved(store, 1)
        first = store.list_page(limit=1, order_by="update_time")
        with pytest.raises(InvalidInputError, match="cursor="):
            store.list_page(order_by="update_time", after=("2025-01-01", task_id))
        assert [t.task_id for t in first.tasks] == [task_id]


def test_a_cursor_rebuilt_with_a_number_for_its_position_is_refused(tmp_path: Path) -> None:
    forged = base64.urlsafe_b64encode(
        json.dumps(["submit_time", True, 5, "uqt_x"]).encode()
    ).decode()
    with (
        TaskStore(tmp_path) as store,
        pytest.raises(InvalidInputError, match=r"not a cursor|made by an older version"),
    ):
        store.list_page(cursor=forged)


def test_a_search_longer_than_an_id_is_refused(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store, pytest.raises(InvalidInputError) as raised:
        store.list(search="x" * 256)
    assert raised.value.field == "search"


def test_a_store_given_a_cache_dir_and_a_url_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidInputError, match="at most one location"):
        TaskStore(tmp_path / "cache", url=f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert list(tmp_path.iterdir()) == []


def test_a_cache_dir_no_file_system_can_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be a file name"):
        TaskStore(f"{tmp_path}/\ud800")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["", "   "])
def test_an_empty_url_is_refused_with_an_example(url: str) -> None:
    with pytest.raises(InvalidInputError, match="is empty; give a database URL"):
        TaskStore.from_url(url)


@pytest.mark.parametrize("batch_size", [0, True, "10"])
def test_copy_refuses_a_batch_size_that_is_not_a_positive_integer(
    tmp_path: Path, batch_size: Any
) -> None:
    with (
        TaskStore(tmp_path / "a") as source,
        TaskStore(tmp_path / "b") as dest,
        pytest.raises(InvalidInputError) as raised,
    ):
        copy_tasks(source, dest, batch_size=batch_size)
    assert raised.value.field == "batch_size"


def test_an_in_memory_store_has_no_size() -> None:
    with TaskStore.in_memory() as store:
        assert store.storage_bytes() is None


def test_tuple_keys_inside_tuple_keys_come_back_as_tuples(store: TaskStore) -> None:
    result = {(1, ("a", 2)): "nested", ("x",): 1}
    task = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS, result=result)
    store.save(task)
    got = store.get(task.task_id)
    assert got is not None
    assert got.result == result


def test_tuple_keys_nested_past_the_limit_are_refused() -> None:
    key: Any = ()
    for _ in range(MAX_DEPTH + 1):
        key = (key,)
    with pytest.raises(UnserializableValueError, match="nest more than"):
        to_jsonable({key: 1})
    assert from_jsonable(to_jsonable({((1,),): 1})) == {((1,),): 1}


def test_datetimes_are_readable_timestamps_in_canonical_utc_text() -> None:
    moment = datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert is_readable_timestamp(moment)
    assert normalize_timestamp(moment) == normalize_timestamp("2025-03-01T10:00:00+00:00")
    assert normalize_timestamp(moment.astimezone(UTC)) == normalize_timestamp(moment)


def test_a_task_with_more_shards_than_one_id_batch_saves_and_updates_whole(
    store: TaskStore,
) -> None:
    count = ID_BATCH + 5
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    shards = [TaskShard(task.task_id, i, f"job-{i}", "dummy", 1, i) for i in range(count)]
    store.save(task, shards)
    done = [
        TaskShard(task.task_id, i, f"job-{i}", "dummy", 1, i, status=TaskStatus.SUCCESS, result=i)
        for i in range(count)
    ]
    store.save(task, done)
    stored = store.get_shards(task.task_id)
    assert [s.shard_index for s in stored] == list(range(count))
    assert all(s.status is TaskStatus.SUCCESS for s in stored)
    got = store.get(task.task_id)
    assert got is not None
    assert got.status is TaskStatus.SUCCESS


def test_metadata_stored_as_json_null_reads_as_empty(store: TaskStore) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"k": 1})
    store.save(task)
    with store._db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET metadata_json = 'null' WHERE task_id = :id"),
            {"id": task.task_id},
        )
    got = store.get(task.task_id)
    assert got is not None
    assert got.metadata == {}


def test_copy_of_tasks_without_shards_into_each_database(tmp_path: Path, store: TaskStore) -> None:
    with TaskStore(tmp_path / "source") as source:
        ids = saved(source, 3)
        report = copy_tasks(source, store)
    assert report.copied.tasks == 3
    assert report.copied.shards == 0
    assert sorted(t.task_id for t in store.list()) == sorted(ids)
    assert all(store.get_shards(task_id) == [] for task_id in ids)


@pytest.mark.parametrize("given", ["cache_dir", "url"])
def test_a_location_inside_a_symlink_loop_is_a_store_location_error(
    tmp_path: Path, given: str
) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    where: dict[str, Any] = {
        "cache_dir": tmp_path / "a" / "cache",
        "url": f"sqlite:///{tmp_path / 'a' / 'tasks.sqlite'}",
    }
    with pytest.raises(StoreLocationError, match="cannot use"):
        TaskStore(**{given: where[given]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_setting_no_tags_changes_nothing_and_gives_the_tags(store: TaskStore) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", tags={"team": "qec"})
    store.save(task)
    before = store.get(task.task_id)
    assert store.set_tags(task.task_id, {}) == {"team": "qec"}
    assert store.get(task.task_id) == before


def test_a_page_given_both_a_cursor_and_after_is_refused(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        saved(store, 3)
        first = store.list_page(limit=1)
        assert first.next_cursor is not None
        assert first.next_after is not None
        with pytest.raises(InvalidInputError, match="not both"):
            store.list_page(limit=1, cursor=first.next_cursor, after=first.next_after)


def test_summaries_with_a_limit_and_an_offset_give_that_window(store: TaskStore) -> None:
    ids = saved(store, 5)
    found = store.summaries(limit=2, offset=1, order_by="submit_time", descending=False)
    assert [s.task_id for s in found] == ids[1:3]


def test_a_map_written_by_hand_with_list_keys_reads_with_tuple_keys() -> None:
    written = {"$uniqc": "map", "items": [[[1, [2, 3]], "x"]]}
    assert from_jsonable(written) == {(1, (2, 3)): "x"}


def test_a_tag_this_version_does_not_know_is_read_as_a_plain_object() -> None:
    written = {"$uniqc": "quaternion", "w": 1}
    assert from_jsonable(written) == {"$uniqc": "quaternion", "w": 1}


def test_a_time_filter_given_as_a_datetime_matches_like_its_text(store: TaskStore) -> None:
    ids = saved(store, 4)  # submitted at :00, :01, :02, :03
    moment = datetime(2025, 1, 1, 1, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    by_datetime = store.list(submitted_after=moment)
    by_text = store.list(submitted_after="2025-01-01T00:00:01+00:00")
    assert sorted(t.task_id for t in by_datetime) == sorted(t.task_id for t in by_text)
    assert sorted(t.task_id for t in by_datetime) == sorted(ids[1:])  # after <= time


def test_a_mariadb_database_with_a_long_name_holds_a_store() -> None:
    admin = server_admin_url("mysql")
    name = "uniqc_long_" + "n" * 50  # 61 characters: the migration lock name is hashed
    _admin_execute(admin, f"CREATE DATABASE {name}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        with TaskStore.from_url(url) as store:
            task = TaskInfo(generate_uniqc_task_id(), "dummy")
            store.save(task)
            assert store.get(task.task_id) == task
    finally:
        for key, database in list(_registry.items()):
            if name in str(key):
                database.dispose()
        _admin_execute(admin, f"DROP DATABASE IF EXISTS {name}")


def test_a_page_ending_on_a_row_with_an_unreadable_time_resumes_after_the_last_good(
    tmp_path: Path,
) -> None:
    with TaskStore(tmp_path) as store:
        good = saved(store, 2)
        bad = saved(store, 1)[0]
        with store._db.engine.begin() as conn:  # as another program might have written it
            conn.execute(
                text("UPDATE tasks SET submit_time = x'00ff' WHERE task_id = :id"), {"id": bad}
            )
        told: list[CorruptRowError] = []
        page = store.list_page(
            limit=3, order_by="submit_time", descending=False, on_corrupt=told.append
        )
        assert [t.task_id for t in page.tasks] == good  # a BLOB sorts after all text
        assert [e.key for e in told] == [bad]
        last_good = store.list_page(limit=2, order_by="submit_time", descending=False)
        assert page.resume_cursor == last_good.resume_cursor
