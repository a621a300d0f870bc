"""The consistency model (README, "Consistency"), driven the same way on every database.

Each scenario puts a concurrent caller's write at one exact point of another call: an
:class:`Interleaved` hook runs it in another thread right after a chosen statement of
the call under test and waits for it (up to a moment: on SQLite a writer waits for
another writer's lock, so it may only finish after the call under test commits). The
assertions are the documented outcomes, identical on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore
from uniqc_taskstore.cli import EXIT_OK, main
from uniqc_taskstore.exchange import export_tasks, import_tasks
from uniqc_taskstore.transfer import copy_tasks

_WAIT_SECONDS = 1.0
"""How long the call under test waits for the interleaved write: ample on servers,
where it never waits for a lock of the call under test; on SQLite a write racing a
write waits for its lock, and then finishes after the call under test commits."""


class Interleaved:
    """Runs ``action`` once, in another thread, right after the ``nth`` statement of
    this thread whose SQL matches ``pattern``; the caller goes on once it finished (or
    after :data:`_WAIT_SECONDS`). ``error`` keeps what the action raised."""

    def __init__(
        self, pattern: str, action: Callable[[], object], nth: int = 1, wait: float = _WAIT_SECONDS
    ) -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        self.action = action
        self.nth = nth
        self.wait = wait
        self.blocked = False
        """Whether the action was still running when the caller went on (it waited for
        a lock the call under test holds)."""
        self.seen = 0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.result: object = None
        self._owner = threading.get_ident()

    def after_statement(self, *args: Any) -> None:
        statement = args[2]
        if threading.get_ident() != self._owner or self.thread is not None:
            return
        if not self.pattern.search(statement):
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        self.thread.join(self.wait)
        self.blocked = self.thread.is_alive()

    def _run(self) -> None:
        try:
            self.result = self.action()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> object:
        """Wait for the action; raise what it raised; return what it returned."""
        assert self.thread is not None, f"no statement matched {self.pattern.pattern!r}"
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


@contextmanager
def interleaved(
    store: TaskStore,
    pattern: str,
    action: Callable[[], object],
    nth: int = 1,
    wait: float = _WAIT_SECONDS,
) -> Iterator[Interleaved]:
    hook = Interleaved(pattern, action, nth, wait)
    engine = store._db.engine
    event.listen(engine, "after_cursor_execute", hook.after_statement)
    try:
        yield hook
    finally:
        event.remove(engine, "after_cursor_execute", hook.after_statement)
        if hook.thread is not None:
            hook.thread.join(60)


_FIRST_SELECT = r"^\s*SELECT"
_NEVER_BLOCKED = 60.0
"""For a write racing a read: it must finish while the read waits (reads never hold a
writer up), however loaded the machine."""


# -- reads: one snapshot per call --------------------------------------------------------


def _tagged(store: TaskStore, count: int = 3) -> list[str]:
    ids = [f"t{i}" for i in range(count)]
    for i, task_id in enumerate(ids):
        store.save(TaskInfo(task_id, "dummy", submit_time=f"2026-01-0{i + 1}T00:00:00+00:00"))
        store.set_tags(task_id, {"team": "qec"})
    return ids


def test_list_reads_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(
        store, _FIRST_SELECT, lambda: store.set_tags(ids[0], {"team": "ml"}), wait=_NEVER_BLOCKED
    ) as hook:
        found = store.list(tags={"team": "qec"})
    hook.finish()
    assert not hook.blocked
    assert {t.task_id: t.tags for t in found} == {i: {"team": "qec"} for i in ids}
    assert store.list(tags={"team": "qec"})[-1].task_id == ids[1]


def test_list_page_reads_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(
        store, _FIRST_SELECT, lambda: store.remove_tags(ids[1], ["team"]), wait=_NEVER_BLOCKED
    ) as hook:
        page = store.list_page(tags={"team": "qec"}, limit=10)
    hook.finish()
    assert not hook.blocked
    assert {t.task_id: t.tags for t in page.tasks} == {i: {"team": "qec"} for i in ids}


def test_summaries_read_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(
        store, _FIRST_SELECT, lambda: store.set_tags(ids[2], {"team": "ml"}), wait=_NEVER_BLOCKED
    ) as hook:
        found = store.summaries(tags={"team": "qec"})
    hook.finish()
    assert not hook.blocked
    assert {s.task_id: s.tags for s in found} == {i: {"team": "qec"} for i in ids}


def test_each_iter_tasks_batch_reads_tasks_shards_and_tags_from_one_snapshot(
    store: TaskStore,
) -> None:
    ids = _tagged(store, 2)

    def move_on() -> None:
        store.set_tags(ids[0], {"team": "ml"})
        store.save_shard(TaskShard(ids[0], 0, "job-0", "dummy"))

    with interleaved(store, _FIRST_SELECT, move_on, wait=_NEVER_BLOCKED) as hook:
        found = list(store.iter_tasks(include_shards=True, batch_size=10))
    hook.finish()
    assert not hook.blocked
    assert [(t.task_id, t.tags, shards) for t, shards in found] == [
        (ids[1], {"team": "qec"}, []),
        (ids[0], {"team": "qec"}, []),
    ]


# -- long reads: export and copy read one snapshot ---------------------------------------


def _live_and_archived(store: TaskStore) -> str:
    """Two live tasks and one archived task that is newer than both and whose id sorts
    first: whichever order a reader goes in, it has passed that task on the live side
    by the time it has read one live task."""
    for i in (1, 2):
        store.save(TaskInfo(f"t{i}", "dummy", submit_time=f"2026-01-0{i}T00:00:00+00:00"))
    store.save(TaskInfo("a0", "dummy", submit_time="2026-01-09T00:00:00+00:00"))
    assert store.archive("a0")
    return "a0"


def test_export_of_live_and_archived_holds_a_task_restored_meanwhile_once(
    store: TaskStore,
) -> None:
    moved = _live_and_archived(store)
    out = io.StringIO()

    def restore_after_the_first_task(done: int, _total: int | None) -> None:
        if done == 1:
            assert store.restore(moved)

    export_tasks(store, out, archived=True, batch_size=1, progress=restore_after_the_first_task)
    lines = [json.loads(line)["task"] for line in out.getvalue().splitlines()[1:]]
    assert sorted((t["task_id"], t["archived_at"] is not None) for t in lines) == [
        ("a0", True),
        ("t1", False),
        ("t2", False),
    ]
    assert store.get(moved) is not None  # restored, after the snapshot the file shows


def test_copy_holds_a_task_restored_in_the_source_meanwhile_once(
    store: TaskStore, tmp_path: Path
) -> None:
    moved = _live_and_archived(store)

    def restore_after_the_first_batch(done: int, _total: int) -> None:
        if done == 1:
            assert store.restore(moved)

    with TaskStore(tmp_path / "destination") as destination:
        report = copy_tasks(
            store, destination, batch_size=1, progress=restore_after_the_first_batch
        )
        assert (report.copied.tasks, report.copied.archived_tasks) == (2, 1)
        assert destination.get_archived(moved) is not None
        assert destination.count() == 2


# -- races between writers end in the documented outcome ----------------------------------


_LIVE_CHECK = r"SELECT tasks\.task_id\s+FROM tasks\b"
"""The statement a bulk call checks which of its ids are live with."""
_IMPORT_CHECK = r"SELECT tasks\.task_id, \S+ AS archived\s+FROM tasks\b"
"""The one statement an import checks which of its ids are live or archived with."""


def test_restore_many_racing_a_save_of_the_same_id_refuses_it_or_restores_first(
    store: TaskStore,
) -> None:
    store.save(TaskInfo("x", "dummy", metadata={"side": "archived"}))
    store.save(TaskInfo("y", "dummy"))
    store.archive_many(["x", "y"])
    racing = TaskInfo("x", "dummy", metadata={"side": "saved"})
    with interleaved(store, _LIVE_CHECK, lambda: store.save(racing)) as hook:
        result = store.restore_many(["x", "y"])
    hook.finish()
    live = store.get("x")
    assert live is not None
    assert live.metadata == {"side": "saved"}
    if result.refused:  # the save committed between the check and the insert
        assert (result.done, result.refused) == (["y"], [("x", "a live task has this id")])
        assert store.get_archived("x") is not None
    else:  # the save waited for the restore (SQLite: one writer at a time)
        assert result.done == ["x", "y"]
        assert store.get_archived("x") is None
    assert store.get("y") is not None


def test_archive_many_racing_a_save_archives_then_the_save_makes_a_new_live_task(
    store: TaskStore,
) -> None:
    store.save(TaskInfo("x", "dummy", metadata={"v": 1}))
    with interleaved(
        store, _LIVE_CHECK, lambda: store.save(TaskInfo("x", "dummy", metadata={"v": 2}))
    ) as hook:
        result = store.archive_many(["x"])
    hook.finish()
    assert result.done == ["x"]
    archived, live = store.get_archived("x"), store.get("x")
    assert archived is not None
    assert archived.metadata == {"v": 1}
    assert live is not None
    assert live.metadata == {"v": 2}


def test_delete_many_racing_an_archive_deletes_and_the_archive_finds_nothing(
    store: TaskStore,
) -> None:
    store.save(TaskInfo("x", "dummy"))
    with interleaved(store, _LIVE_CHECK, lambda: store.archive("x")) as hook:
        result = store.delete_many(["x"])
    assert hook.finish() is False
    assert result.done == ["x"]
    assert store.get("x") is None
    assert store.get_archived("x") is None


def test_archive_many_racing_delete_many_one_of_them_finds_the_task(store: TaskStore) -> None:
    store.save(TaskInfo("x", "dummy"))
    with interleaved(store, _LIVE_CHECK, lambda: store.delete_many(["x"])) as hook:
        archived = store.archive_many(["x"])
    deleted = hook.finish()
    assert archived.done == ["x"]
    assert deleted.missing == ["x"]  # type: ignore[attr-defined]
    assert store.get("x") is None
    assert store.get_archived("x") is not None


def _export_file(tmp_path: Path, count: int = 5) -> Path:
    with TaskStore(tmp_path / "source") as source:
        for i in range(count):
            source.save(TaskInfo(f"t{i}", "dummy", tags={"n": str(i)}))
        source.archive("t0")
        path = tmp_path / "tasks.jsonl"
        with path.open("w", encoding="utf-8") as out:
            export_tasks(source, out, archived=True)
    return path


def test_two_imports_of_one_file_at_once_add_each_task_once_and_both_succeed(
    store: TaskStore, store_location: dict[str, Any], tmp_path: Path
) -> None:
    path = _export_file(tmp_path)

    def other_import() -> Any:
        with path.open(encoding="utf-8") as stream:
            return import_tasks(store, stream)

    where = (
        ["--url", str(store_location["url"])]
        if "url" in store_location
        else [
            "--cache-dir",
            str(store_location["cache_dir"]),
        ]
    )
    with interleaved(store, _IMPORT_CHECK, other_import) as hook:
        code = main(["import", str(path), *where])
    other = hook.finish()
    assert code == EXIT_OK
    assert other.read == 5  # type: ignore[attr-defined]
    assert store.count() == 4
    assert store.count_archived() == 1
    assert {t.task_id: t.tags for t in store.list()} == {
        f"t{i}": {"n": str(i)} for i in range(1, 5)
    }


def test_an_import_racing_a_save_of_one_of_its_tasks_skips_that_task(
    store: TaskStore, tmp_path: Path
) -> None:
    path = _export_file(tmp_path)
    saved = TaskInfo("t3", "dummy", metadata={"mine": True})
    with (
        interleaved(store, _IMPORT_CHECK, lambda: store.save(saved)) as hook,
        path.open(encoding="utf-8") as stream,
    ):
        report = import_tasks(store, stream)
    hook.finish()
    got = store.get("t3")
    assert got is not None
    if report.skipped:  # the save came first: the store's own task is kept
        assert (report.tasks, report.skipped) == (3, 1)
        assert got.metadata == {"mine": True}
    else:  # the save waited for the import (SQLite) and then updated the imported task
        assert report.tasks == 4
        assert got.metadata == {"mine": True}


def test_two_copies_into_one_destination_at_once_copy_each_task_once(
    store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TaskStore(tmp_path / "source") as source:
        for i in range(4):
            source.save(TaskInfo(f"t{i}", "dummy", tags={"n": str(i)}))
        source.archive("t0")
        insert = type(store._db.backend).bulk_insert_bound
        seen: list[Any] = []

        def insert_after_the_other_copy(backend: Any, conn: Any, table: Any, rows: Any) -> None:
            if not seen:  # the first insert of the first copy: the other copy runs now
                seen.append(threading.Thread(target=lambda: seen.append(copy_tasks(source, store))))
                seen[0].start()
                seen[0].join(_WAIT_SECONDS)
            insert(backend, conn, table, rows)

        monkeypatch.setattr(
            type(store._db.backend), "bulk_insert_bound", insert_after_the_other_copy
        )
        first = copy_tasks(source, store)
        seen[0].join(60)
        second = seen[1]
    copied = [(r.copied.tasks, r.copied.archived_tasks, r.copied.tags) for r in (first, second)]
    assert sorted(copied) == [(0, 0, 0), (3, 1, 4)] or sum(c[0] for c in copied) == 3
    assert (store.count(), store.count_archived()) == (3, 1)
    assert first.destination.tasks + first.destination.archived_tasks == 4


def test_an_import_racing_a_restore_sees_the_task_on_one_side_and_skips_it(
    store: TaskStore, tmp_path: Path
) -> None:
    path = _export_file(tmp_path)  # t0 archived, t1..t4 live
    store.save(TaskInfo("t0", "dummy", metadata={"mine": True}))
    store.archive("t0")
    with (
        interleaved(store, _IMPORT_CHECK, lambda: store.restore("t0")) as hook,
        path.open(encoding="utf-8") as stream,
    ):
        report = import_tasks(store, stream)
    assert hook.finish() is True
    assert (report.tasks, report.archived_tasks, report.skipped) == (4, 0, 1)
    restored = store.get("t0")
    assert restored is not None
    assert restored.metadata == {"mine": True}
    assert store.get_archived("t0") is None  # not a second, imported copy


def test_a_copy_racing_a_save_in_the_destination_leaves_the_saved_task_alone(
    store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TaskStore(tmp_path / "source") as source:
        for i in range(3):
            source.save(TaskInfo(f"t{i}", "dummy", metadata={"from": "source"}))
        insert = type(store._db.backend).bulk_insert_bound
        racing: list[threading.Thread] = []

        def insert_after_a_save(backend: Any, conn: Any, table: Any, rows: Any) -> None:
            if not racing:  # between the copy's check and its insert, a save there
                save = TaskInfo("t1", "dummy", metadata={"from": "destination"})
                racing.append(threading.Thread(target=store.save, args=(save,)))
                racing[0].start()
                racing[0].join(_WAIT_SECONDS)
            insert(backend, conn, table, rows)

        monkeypatch.setattr(type(store._db.backend), "bulk_insert_bound", insert_after_a_save)
        report = copy_tasks(source, store)
        racing[0].join(60)
    got = store.get("t1")
    assert got is not None
    assert store.count() == 3
    # Servers: the save came first and the copy skipped t1. SQLite: the save waited for
    # the copy's write lock, then updated the copied task. The save wins either way.
    assert report.copied.tasks in (2, 3)
    assert got.metadata == {"from": "destination"}
