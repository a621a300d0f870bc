"""``clear_all``: every task goes in one write transaction, and the database stays.

The file is never unlinked, so a process holding the store open keeps writing to the
file everyone else reads; a busy ``clear_all`` deletes nothing; an in-memory store's
``clear_all`` never runs inside another call's transaction.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from legacy_files import DATABASE_FILENAME
from uniqc_taskstore import (
    DatabaseBusyError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)

_CHILD = """
import sys
from uniqc_taskstore import TaskInfo, TaskStore

store = TaskStore(cache_dir=sys.argv[1])
for line in sys.stdin:
    store.save(TaskInfo(line.strip(), backend="child"))
    print("saved", flush=True)
store.close()
"""


def make_task(**fields: Any) -> TaskInfo:
    return TaskInfo(task_id=generate_uniqc_task_id(), backend="originq:WK_C180", **fields)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_clear_all_empties_every_table_and_the_store_keeps_working(store: TaskStore) -> None:
    parent = make_task()
    store.save(parent, [TaskShard(parent.task_id, 0, "job-0", parent.backend)])
    finished = make_task(status=TaskStatus.SUCCESS)
    store.save(finished)
    assert store.archive(finished.task_id)

    store.clear_all()

    assert (store.count(), store.count_archived()) == (0, 0)
    assert store.get_shards(parent.task_id) == []
    assert store.get_archived_shards(finished.task_id) == []
    again = make_task()
    store.save(again)
    assert store.get(again.task_id) == again


def test_save_from_another_process_after_clear_all_is_seen_by_this_one(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        with TaskStore(cache_dir=tmp_path) as store:
            before = generate_uniqc_task_id()
            child.stdin.write(before + "\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "saved"  # the child holds a connection
            assert store.get(before) is not None
            inode = (tmp_path / DATABASE_FILENAME).stat().st_ino

            store.clear_all()

            assert store.get(before) is None
            after = generate_uniqc_task_id()
            child.stdin.write(after + "\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "saved"
            assert store.get(after) is not None, "the child's acknowledged save was lost"
            assert store.count() == 1
            assert (tmp_path / DATABASE_FILENAME).stat().st_ino == inode
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0


def test_clear_all_racing_writer_threads_keeps_the_private_file(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    with umask(0o022), TaskStore(cache_dir=tmp_path) as store:
        store.save(make_task())
        path = tmp_path / DATABASE_FILENAME
        inode = path.stat().st_ino

        def write() -> None:
            while not stop.is_set():
                try:
                    store.save(make_task())
                except BaseException as exc:  # any error at all fails the test below
                    errors.append(exc)
                    return

        writers = [threading.Thread(target=write) for _ in range(3)]
        for writer in writers:
            writer.start()
        try:
            for _ in range(5):
                store.clear_all()
        finally:
            stop.set()
            for writer in writers:
                writer.join()

        assert errors == []
        assert path.stat().st_ino == inode
        for suffix in ("", "-wal", "-shm"):
            sidecar = tmp_path / (DATABASE_FILENAME + suffix)
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar
        store.clear_all()
        assert store.count() == 0


def test_busy_clear_all_deletes_nothing_and_succeeds_once_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIQC_BUSY_TIMEOUT", "0.05")
    monkeypatch.setenv("UNIQC_BUSY_ATTEMPTS", "2")
    with TaskStore(cache_dir=tmp_path) as store:
        kept = [make_task() for _ in range(3)]
        store.save_many(kept)
        holder = sqlite3.connect(tmp_path / DATABASE_FILENAME, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(DatabaseBusyError) as caught:
                store.clear_all()
            assert caught.value.retryable
            assert "nothing was written" in str(caught.value)
            assert holder.execute("SELECT count(*) FROM tasks").fetchone() == (3,)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert store.count() == 3
        store.clear_all()
        assert store.count() == 0


def test_in_memory_clear_all_waits_for_a_running_update_shard() -> None:
    store = TaskStore.in_memory()
    task = make_task()
    store.save(task, [TaskShard(task.task_id, 0, "job-0", task.backend)])
    engine = store._db.engine
    clearing: list[threading.Thread] = []
    outcome: list[BaseException | None] = []

    def clear() -> None:
        try:
            store.clear_all()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    def in_the_middle(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        # update_shard is writing the shard, then the task's status: a clear_all
        # started now must not run on the one connection before that commits.
        if statement.lstrip().upper().startswith("UPDATE TASK_SHARDS") and not clearing:
            thread = threading.Thread(target=clear)
            clearing.append(thread)
            thread.start()
            thread.join(timeout=0.5)

    event.listen(engine, "before_cursor_execute", in_the_middle)
    try:
        store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
    finally:
        event.remove(engine, "before_cursor_execute", in_the_middle)
    assert clearing, "update_shard updated the shard"
    clearing[0].join()
    assert outcome == [None]
    assert store.count() == 0
    assert store.get_shards(task.task_id) == []
    store.close()
