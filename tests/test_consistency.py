"""The consistency model (README, "Consistency"), driven the same way on every database.

Each scenario puts a concurrent caller's write at one exact point of another call: an
:class:`Interleaved` hook runs it in another thread right after a chosen statement of
the call under test and waits for it (up to a moment: on SQLite a writer waits for
another writer's lock, so it may only finish after the call under test commits). The
assertions are the documented outcomes, identical on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore

_WAIT_SECONDS = 2.0
"""How long the call under test waits for the interleaved write: ample on servers,
where it never waits for a lock of the call under test; on SQLite a write racing a
write waits for its lock, and then finishes after the call under test commits."""


class Interleaved:
    """Runs ``action`` once, in another thread, right after the ``nth`` statement of
    this thread whose SQL matches ``pattern``; the caller goes on once it finished (or
    after :data:`_WAIT_SECONDS`). ``error`` keeps what the action raised."""

    def __init__(self, pattern: str, action: Callable[[], object], nth: int = 1) -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        self.action = action
        self.nth = nth
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
        self.thread.join(_WAIT_SECONDS)

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
    store: TaskStore, pattern: str, action: Callable[[], object], nth: int = 1
) -> Iterator[Interleaved]:
    hook = Interleaved(pattern, action, nth)
    engine = store._db.engine
    event.listen(engine, "after_cursor_execute", hook.after_statement)
    try:
        yield hook
    finally:
        event.remove(engine, "after_cursor_execute", hook.after_statement)
        if hook.thread is not None:
            hook.thread.join(60)


_FIRST_SELECT = r"^\s*SELECT"


# -- reads: one snapshot per call --------------------------------------------------------


def _tagged(store: TaskStore, count: int = 3) -> list[str]:
    ids = [f"t{i}" for i in range(count)]
    for i, task_id in enumerate(ids):
        store.save(TaskInfo(task_id, "dummy", submit_time=f"2026-01-0{i + 1}T00:00:00+00:00"))
        store.set_tags(task_id, {"team": "qec"})
    return ids


def test_list_reads_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(store, _FIRST_SELECT, lambda: store.set_tags(ids[0], {"team": "ml"})) as hook:
        found = store.list(tags={"team": "qec"})
    hook.finish()
    assert {t.task_id: t.tags for t in found} == {i: {"team": "qec"} for i in ids}
    assert store.list(tags={"team": "qec"})[-1].task_id == ids[1]


def test_list_page_reads_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(store, _FIRST_SELECT, lambda: store.remove_tags(ids[1], ["team"])) as hook:
        page = store.list_page(tags={"team": "qec"}, limit=10)
    hook.finish()
    assert {t.task_id: t.tags for t in page.tasks} == {i: {"team": "qec"} for i in ids}


def test_summaries_read_tasks_and_their_tags_from_one_snapshot(store: TaskStore) -> None:
    ids = _tagged(store)
    with interleaved(store, _FIRST_SELECT, lambda: store.set_tags(ids[2], {"team": "ml"})) as hook:
        found = store.summaries(tags={"team": "qec"})
    hook.finish()
    assert {s.task_id: s.tags for s in found} == {i: {"team": "qec"} for i in ids}


def test_each_iter_tasks_batch_reads_tasks_shards_and_tags_from_one_snapshot(
    store: TaskStore,
) -> None:
    ids = _tagged(store, 2)

    def move_on() -> None:
        store.set_tags(ids[0], {"team": "ml"})
        store.save_shard(TaskShard(ids[0], 0, "job-0", "dummy"))

    with interleaved(store, _FIRST_SELECT, move_on) as hook:
        found = list(store.iter_tasks(include_shards=True, batch_size=10))
    hook.finish()
    assert [(t.task_id, t.tags, shards) for t, shards in found] == [
        (ids[1], {"team": "qec"}, []),
        (ids[0], {"team": "qec"}, []),
    ]
