"""Keyset pages, and a store on an engine the caller built."""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from uniqc_taskstore import (
    InvalidInputError,
    TaskFilter,
    TaskInfo,
    TaskPage,
    TaskStatus,
    TaskStore,
)
from uniqc_taskstore.filters import Sort, decode_cursor, encode_cursor, filter_fingerprint


def _fill(store: TaskStore, n: int) -> None:
    # Pairs of tasks share a submit time, so pages must break ties by id.
    store.save_many(
        [
            TaskInfo(
                f"task-{k:03d}",
                backend="originq:WK_C180" if k % 3 else "ibm:kyiv",
                status=TaskStatus.SUCCESS if k % 2 else TaskStatus.RUNNING,
                submit_time=f"2026-01-01T00:{k // 2 // 60:02d}:{k // 2 % 60:02d}.000000+00:00",
                result={"k": k},
            )
            for k in range(n)
        ]
    )


def test_keyset_pages_cover_every_task_once_in_list_order(store: TaskStore) -> None:
    _fill(store, 53)
    seen: list[str] = []
    after = None
    while True:
        page = store.list_page(limit=7, after=after)
        seen.extend(task.task_id for task in page.tasks)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [task.task_id for task in store.list()]


def test_keyset_pages_apply_filters_and_skip_results_by_default(store: TaskStore) -> None:
    _fill(store, 30)
    page = store.list_page(status="success", backend="originq", limit=100)
    expected = store.list(status="success", backend="originq")
    assert [t.task_id for t in page.tasks] == [t.task_id for t in expected]
    assert all(t.result is None for t in page.tasks)
    assert page.next_after is None


def test_page_stays_consistent_while_newer_tasks_arrive(store: TaskStore) -> None:
    _fill(store, 20)
    first = store.list_page(limit=10)
    store.save(TaskInfo("newcomer", backend="ibm:kyiv", submit_time="2030-01-01T00:00:00+00:00"))
    second = store.list_page(limit=10, after=first.next_after)
    ids = [t.task_id for t in first.tasks + second.tasks]
    assert "newcomer" not in ids
    assert len(set(ids)) == 20


def test_store_on_a_caller_built_engine_works_and_leaves_the_engine_usable(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'tasks.sqlite'}")
    with TaskStore(engine=engine) as store:
        store.save(TaskInfo("mine", backend="quafu:ScQ-P10"))
        assert store.db_path == (tmp_path / "tasks.sqlite").resolve()
    with TaskStore(tmp_path) as again:
        assert again.get("mine") is not None
    with engine.connect() as conn:  # the caller's engine is still theirs to use
        assert conn.exec_driver_sql("SELECT count(*) FROM tasks").scalar() == 1
    engine.dispose()


def test_keyset_pages_end_cleanly_when_the_total_is_a_multiple_of_the_page_size(
    store: TaskStore,
) -> None:
    # 21 tasks in pages of 7: the third page is full and is also the last, so it hands
    # out no cursor (the store reads one row ahead) and no empty page follows.
    _fill(store, 21)
    pages: list[TaskPage] = []
    after = None
    while len(pages) < 10:
        page = store.list_page(limit=7, after=after)
        pages.append(page)
        if page.next_after is None:
            break
        after = page.next_after
    assert [len(page.tasks) for page in pages] == [7, 7, 7]
    seen = [task.task_id for page in pages for task in page.tasks]
    assert seen == [task.task_id for task in store.list()]


# -- cursors carry what they were made for, and a check (issue 17.12) ----------------------

_BASE64URL = string.ascii_letters + string.digits + "-_="


def _cursor_of(store: TaskStore, **criteria: Any) -> str:
    page = store.list_page(limit=2, **criteria)
    assert page.next_cursor is not None
    return page.next_cursor


def test_every_single_character_edit_of_a_cursor_is_refused(store: TaskStore) -> None:
    # README: an altered cursor is refused. Before, 34 of 523 such edits were accepted.
    _fill(store, 6)
    cursor = _cursor_of(store)
    accepted = []
    for at in range(len(cursor)):
        for char in _BASE64URL:
            if char == cursor[at]:
                continue
            edited = cursor[:at] + char + cursor[at + 1 :]
            try:
                store.list_page(limit=2, cursor=edited)
            except InvalidInputError as exc:
                if exc.field != "cursor":
                    raise
            else:
                accepted.append(edited)
    assert accepted == []
    assert [t.task_id for t in store.list_page(limit=2, cursor=cursor).tasks] == [
        t.task_id for t in store.list()[2:4]
    ]


@settings(max_examples=300, deadline=None)
@given(
    at=st.integers(min_value=0, max_value=400),
    edit=st.sampled_from(["insert", "delete", "replace"]),
    char=st.sampled_from(_BASE64URL + "+/ .\n"),
    descending=st.booleans(),
    value=st.sampled_from(["2026-01-01T00:00:01.000000+00:00", "sometime yesterday"]),
)
def test_any_single_character_edit_fails_the_check(
    at: int, edit: str, char: str, descending: bool, value: str
) -> None:
    sort = Sort("submit_time", descending)
    made_for = filter_fingerprint(TaskFilter(status="success"), "tasks")
    cursor = encode_cursor(sort, made_for, value, "task-007")
    assert decode_cursor(cursor, sort, made_for) == (value, "task-007")
    at %= len(cursor) + (edit == "insert")
    edited = {
        "insert": cursor[:at] + char + cursor[at:],
        "delete": cursor[:at] + cursor[at + 1 :],
        "replace": cursor[:at] + char + cursor[at + 1 :],
    }[edit]
    if edited == cursor:
        return
    with pytest.raises(InvalidInputError, match="not a cursor this store made"):
        decode_cursor(edited, sort, made_for)


def test_forged_and_foreign_cursors_are_refused(store: TaskStore) -> None:
    _fill(store, 6)
    # The audit's forgery: the JSON of a cursor with descending flipped and year 2099.
    forged = base64.urlsafe_b64encode(
        json.dumps(["submit_time", False, "2099-01-01T00:00:00.000000+00:00", "task-001"]).encode()
    ).decode()
    with pytest.raises(InvalidInputError, match="older version"):
        store.list_page(limit=2, cursor=forged, descending=False)
    payload = base64.urlsafe_b64decode(_cursor_of(store))
    body = json.loads(payload[:-16])
    body[2], body[4] = False, "2099-01-01T00:00:00.000000+00:00"
    reforged = base64.urlsafe_b64encode(json.dumps(body).encode() + payload[-16:]).decode()
    with pytest.raises(InvalidInputError, match="not a cursor this store made"):
        store.list_page(limit=2, cursor=reforged, descending=False)

    success = _cursor_of(store, status="success")
    with pytest.raises(InvalidInputError, match="another filter"):
        store.list_page(limit=2, cursor=success, status="running")
    with pytest.raises(InvalidInputError, match="another filter"):
        store.list_page(limit=2, cursor=success)
    with pytest.raises(InvalidInputError, match="same sort"):
        store.list_page(limit=2, cursor=success, status="success", order_by="update_time")
    # The same filter, given as a TaskFilter or as keywords, is the same filter.
    assert store.list_page(limit=2, cursor=success, filter=TaskFilter(status=["success"])).tasks
