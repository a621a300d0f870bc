"""Keyset pages, and a store on an engine the caller built."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from uniqc_taskstore import TaskInfo, TaskPage, TaskStatus, TaskStore


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
