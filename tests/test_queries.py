"""The filters, sorts, pages, summaries, counts and streams callers run, on every backend."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from legacy_files import build_legacy_file
from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    InvalidInputError,
    TaskFilter,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskSummary,
    generate_uniqc_task_id,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def ids(tasks: list[TaskInfo] | list[TaskSummary]) -> list[str]:
    return [t.task_id for t in tasks]


def test_time_range_is_half_open_and_takes_datetimes_or_iso_text(store: TaskStore) -> None:
    store.save_many([TaskInfo(f"t{m}", "dummy", submit_time=at(m)) for m in range(5)])
    window = store.list(submitted_after=T0 + timedelta(minutes=1), submitted_before=at(3))
    assert ids(window) == ["t2", "t1"]
    assert store.count(submitted_after="2026-03-01T09:03:00+09:00") == 2  # 00:03 UTC
    assert store.count(TaskFilter(submitted_before=T0)) == 0


@pytest.mark.parametrize(
    "field", ["submitted_after", "submitted_before", "updated_after", "updated_before"]
)
def test_naive_time_bound_means_utc(field: str) -> None:
    utc = "2026-01-01T00:00:00.000000+00:00"
    assert getattr(TaskFilter(**{field: datetime(2026, 1, 1)}), field) == utc  # type: ignore[arg-type]
    assert getattr(TaskFilter(**{field: "2026-01-01T00:00:00"}), field) == utc  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError) as caught:
        TaskFilter(**{field: "first of January"})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_updated_range_selects_by_update_time(store: TaskStore) -> None:
    store.save(TaskInfo("early", "dummy"))
    middle = datetime.now(UTC)
    store.save(TaskInfo("late", "dummy"))
    assert ids(store.list(updated_after=middle)) == ["late"]
    assert ids(store.list(updated_before=middle)) == ["early"]


def test_backend_matches_device_or_platform_prefix_case_sensitively(store: TaskStore) -> None:
    for task_id, backend in [
        ("a", "originq"),
        ("b", "originq:WK_C180"),
        ("c", "OriginQ:WK_C180"),
        ("d", "originq-sim"),
        ("e", "originq;x"),
    ]:
        store.save(TaskInfo(task_id, backend))
    assert sorted(ids(store.list(backend="originq"))) == ["a", "b"]
    assert ids(store.list(backend="originq:WK_C180")) == ["b"]
    assert ids(store.list(backend="OriginQ")) == ["c"]


def test_status_filter_takes_one_or_several(store: TaskStore) -> None:
    for k, status in enumerate(TaskStatus):
        store.save(TaskInfo(f"t{k}", "dummy", status=status))
    assert store.count(status=TaskStatus.FAILED) == 1
    assert store.count(status=[TaskStatus.SUCCESS, "cancelled"]) == 2
    assert store.count(status=[]) == 0
    with pytest.raises(InvalidInputError) as caught:
        store.count(status="done")
    assert caught.value.field == "status"


def test_name_is_stored_in_its_own_column_and_filtered_exactly(store: TaskStore) -> None:
    store.save(TaskInfo("a", "dummy", name="bell state"))
    store.save(TaskInfo("b", "dummy", name="Bell state"))
    store.save(TaskInfo("c", "dummy"))
    got = store.get("a")
    assert got is not None
    assert got.name == "bell state"
    assert ids(store.list(name="bell state")) == ["a"]
    assert store.count(name="bell") == 0


def test_name_defaults_to_the_legacy_metadata_task_name(store: TaskStore) -> None:
    task = TaskInfo("a", "dummy", metadata={"task_name": "ghz"})
    store.save(task)
    assert task.name == "ghz"
    assert ids(store.list(name="ghz")) == ["a"]
    store.save(TaskInfo("b", "dummy", metadata={"task_name": 7}))
    stored = store.get("b")
    assert stored is not None
    assert stored.name is None


def test_search_ignores_case_over_id_backend_name_and_platform_ids(store: TaskStore) -> None:
    store.save(TaskInfo("uqt_AbC", "dummy"))
    store.save(TaskInfo("t2", "quafu:ScQ-P10"))
    store.save(TaskInfo("t3", "dummy", name="My Bell"))
    store.save(
        TaskInfo("t4", "dummy"),
        [TaskShard("t4", 0, "JOB-77-xyz", "dummy", status=TaskStatus.RUNNING)],
    )
    store.save(TaskInfo("t5", "dummy", name="100%_done"))
    assert ids(store.list(search="abc")) == ["uqt_AbC"]
    assert ids(store.list(search="SCQ")) == ["t2"]
    assert ids(store.list(search="bell")) == ["t3"]
    assert ids(store.list(search="job-77")) == ["t4"]
    # LIKE's wildcards are searched for literally.
    assert ids(store.list(search="%_")) == ["t5"]
    assert sorted(ids(store.list(search="_"))) == ["t5", "uqt_AbC"]


@pytest.mark.parametrize("order_by", ["submit_time", "update_time"])
@pytest.mark.parametrize("descending", [True, False])
def test_cursor_pages_cover_every_task_once_in_sort_order(
    store: TaskStore, order_by: str, descending: bool
) -> None:
    # Groups saved together share an update time; pairs share a submit time.
    for group in range(4):
        store.save_many(
            [
                TaskInfo(f"t{group}{k}", "dummy", submit_time=at((group * 5 + k) // 2))
                for k in range(5)
            ]
        )
    expected = store.list(order_by=order_by, descending=descending)  # type: ignore[arg-type]
    key = [(getattr(t, order_by), t.task_id) for t in expected]
    assert key == sorted(key, reverse=descending)
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_page(
            limit=3,
            order_by=order_by,  # type: ignore[arg-type]
            descending=descending,
            cursor=cursor,
        )
        seen.extend(ids(page.tasks))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids(expected)


def test_ascending_update_time_pages_are_a_change_feed(store: TaskStore) -> None:
    store.save_many([TaskInfo(f"t{k}", "dummy") for k in range(3)])
    feed = {"order_by": "update_time", "descending": False, "limit": 2}
    first = store.list_page(**feed)  # type: ignore[arg-type]
    rest = store.list_page(cursor=first.next_cursor, **feed)  # type: ignore[arg-type]
    assert len(first.tasks) + len(rest.tasks) == 3
    assert rest.next_cursor is None
    assert rest.resume_cursor is not None
    quiet = store.list_page(cursor=rest.resume_cursor, **feed)  # type: ignore[arg-type]
    assert quiet.tasks == []
    assert quiet.resume_cursor == rest.resume_cursor
    store.set_tags("t0", {"seen": "yes"})
    store.save(TaskInfo("t9", "dummy"))
    changed = store.list_page(cursor=rest.resume_cursor, **feed)  # type: ignore[arg-type]
    assert ids(changed.tasks) == ["t0", "t9"]


def test_cursor_from_another_sort_or_tampered_is_refused(store: TaskStore) -> None:
    store.save_many([TaskInfo(f"t{k}", "dummy", submit_time=at(k)) for k in range(3)])
    cursor = store.list_page(limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidInputError) as caught:
        store.list_page(limit=1, cursor=cursor, order_by="update_time")
    assert caught.value.field == "cursor"
    for bad in ["not-a-cursor", cursor[:-4], "W10=", 17]:
        with pytest.raises(InvalidInputError) as caught:
            store.list_page(limit=1, cursor=bad)  # type: ignore[arg-type]
        assert caught.value.field == "cursor"


def test_after_keeps_working_for_the_default_order(store: TaskStore) -> None:
    store.save_many([TaskInfo(f"t{k}", "dummy", submit_time=at(k)) for k in range(5)])
    first = store.list_page(limit=2)
    assert first.next_after == (first.tasks[-1].submit_time, first.tasks[-1].task_id)
    second = store.list_page(limit=2, after=first.next_after)
    assert ids(second.tasks) == ["t2", "t1"]


def test_summaries_count_shards_and_flag_results_without_reading_them(
    store: TaskStore,
) -> None:
    store.save(
        TaskInfo(
            "t1",
            "ibm:kyiv",
            status=TaskStatus.SUCCESS,
            result={"00": 10},
            metadata={"big": "x" * 1000},
            name="n1",
            tags={"team": "a"},
        ),
        [
            TaskShard("t1", i, f"j{i}", "ibm:kyiv", 1, i, status=TaskStatus.SUCCESS)
            for i in range(3)
        ],
    )
    store.save(TaskInfo("t2", "ibm:kyiv", status=TaskStatus.FAILED, error_message="boom"))
    first, second = sorted(store.summaries(), key=lambda s: s.task_id)
    assert first.shard_count == 3
    assert first.has_result
    assert first.name == "n1"
    assert first.tags == {"team": "a"}
    assert first.status is TaskStatus.SUCCESS
    assert second.shard_count == 0
    assert not second.has_result
    assert second.error_message == "boom"
    assert ids(store.summaries(status=TaskStatus.FAILED)) == ["t2"]
    assert not hasattr(first, "result")
    assert not hasattr(first, "metadata")


def test_count_by_groups_in_one_query(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("a", "originq:WK_C180", status=TaskStatus.SUCCESS),
            TaskInfo("b", "originq:PQPUMESH8", status=TaskStatus.SUCCESS),
            TaskInfo("c", "ibm:kyiv", status=TaskStatus.RUNNING),
            TaskInfo("d", "dummy", status=TaskStatus.FAILED),
        ]
    )
    assert store.count_by("status") == {"success": 2, "running": 1, "failed": 1}
    assert store.count_by("backend", backend="originq") == {
        "originq:PQPUMESH8": 1,
        "originq:WK_C180": 1,
    }
    assert store.count_by("platform") == {"originq": 2, "ibm": 1, "dummy": 1}
    with pytest.raises(InvalidInputError):
        store.count_by("shots")  # type: ignore[arg-type]


def test_iter_tasks_streams_every_match_in_order_across_batches(store: TaskStore) -> None:
    store.save_many(
        [TaskInfo(f"t{k:02d}", "dummy", submit_time=at(k // 3), result=k) for k in range(23)],
        [TaskShard("t05", 0, "j", "dummy")],
    )
    streamed = list(store.iter_tasks(batch_size=4))
    assert ids(streamed) == ids(store.list())
    assert streamed[-1].result is not None
    pairs = list(store.iter_tasks(include_shards=True, batch_size=5, backend="dummy"))
    assert {task.task_id: len(shards) for task, shards in pairs if shards} == {"t05": 1}


def test_archived_listings_take_the_same_filter(store: TaskStore) -> None:
    store.save_many(
        [TaskInfo(f"t{k}", "dummy", status=TaskStatus.SUCCESS, name=f"n{k}") for k in range(3)]
    )
    for k in range(3):
        assert store.archive(f"t{k}")
    assert ids(store.list_archived(name="n1")) == ["t1"]
    assert store.count_archived(TaskFilter(name="n2")) == 1
    assert store.count_by("status", archived=True) == {"success": 3}
    summary = store.summaries(archived=True, name="n0")
    assert ids(summary) == ["t0"]
    assert summary[0].archived_at is not None


def test_unknown_filter_keyword_is_a_typed_error(store: TaskStore) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.list(colour="red")  # type: ignore[call-arg]
    assert caught.value.field == "colour"


def test_filter_object_and_keywords_combine(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("a", "ibm:kyiv", status=TaskStatus.SUCCESS),
            TaskInfo("b", "ibm:kyiv", status=TaskStatus.FAILED),
        ]
    )
    ibm = TaskFilter(backend="ibm")
    assert store.count(ibm) == 2
    assert ids(store.list(ibm, status=TaskStatus.FAILED)) == ["b"]


@pytest.mark.parametrize("version", [1, 5])
def test_legacy_file_with_metadata_task_name_opens_with_name(tmp_path: Path, version: int) -> None:
    legacy = build_legacy_file(tmp_path / "cache", version)
    live_id = "plat-1" if version < 4 else generate_uniqc_task_id()
    archived_id = generate_uniqc_task_id()
    row = (
        "originq:WK_C180",
        "success",
        100,
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
        None,
    )
    with sqlite3.connect(legacy.path) as conn:
        conn.execute(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, "
            "result_json, metadata_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (live_id, *row, '{"task_name": "bell", "x": 1}'),
        )
        conn.execute(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, "
            "result_json, metadata_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("odd-name", *row, '{"task_name": ["not", "a", "string"]}'),
        )
        if version >= 2:
            conn.execute(
                "INSERT INTO archived_tasks (task_id, backend, status, shots, submit_time, "
                "update_time, result_json, metadata_json, archived_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (archived_id, *row, '{"task_name": "old ghz"}', "2026-01-02T00:00:00+00:00"),
            )
    conn.close()
    with TaskStore(legacy.directory) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        (named,) = store.list(name="bell")
        assert named.metadata["task_name"] == "bell"  # metadata kept as written
        assert store.count(search="odd-name") + store.count(name="odd-name") <= 1
        assert all(t.name is None for t in store.list() if t.task_id != named.task_id)
        if version >= 2:
            archived = store.get_archived(archived_id)
            assert archived is not None
            assert archived.name == "old ghz"
