"""SQLite locations the operating system refuses in ways a permission check does not
catch (even for root): directories that take no files or no chmod, and a file name
too long for its -journal/-wal companions. Each is a StoreLocationError naming the
reason. And clear_all while another connection is mid-read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from uniqc_taskstore import StoreLocationError, TaskInfo, TaskStore, generate_uniqc_task_id


def test_a_directory_that_takes_no_new_files_is_refused_with_the_reason() -> None:
    # /proc/self/fd is ours and private (0500), but no file can be created in it.
    with pytest.raises(StoreLocationError, match=r"cannot use /proc/\d+/fd/tasks.sqlite"):
        TaskStore("/proc/self/fd")


def test_a_directory_that_is_ours_but_takes_no_files_is_refused_and_keeps_its_mode() -> None:
    # /proc/self is ours and 0555: its mode is left alone and no file can be made there.
    with pytest.raises(StoreLocationError, match="No such file or directory"):
        TaskStore("/proc/self")


def test_a_file_name_too_long_for_its_journal_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    name = "t" * 250  # fits, but tasks...-journal (258 characters) does not
    with pytest.raises(
        StoreLocationError, match="-journal would be 258 bytes long; the file system allows"
    ):
        TaskStore.from_url(f"sqlite:///{tmp_path / name}")
    # Refused before anything is made.
    assert list(tmp_path.iterdir()) == []


def test_clear_all_while_another_connection_reads_deletes_and_leaves_the_reader_its_snapshot(
    tmp_path: Path,
) -> None:
    with TaskStore(tmp_path / "cache") as store:
        for _ in range(50):
            store.save(TaskInfo(generate_uniqc_task_id(), "dummy", metadata={"pad": "x" * 2000}))
        reader = sqlite3.connect(tmp_path / "cache" / "tasks.sqlite")
        try:
            reader.execute("BEGIN")
            (held,) = reader.execute("SELECT count(*) FROM tasks").fetchone()
            store.clear_all()
            assert store.count() == 0
            assert held == 50
            assert reader.execute("SELECT count(*) FROM tasks").fetchone() == (50,)
        finally:
            reader.close()
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
        assert store.count() == 1
