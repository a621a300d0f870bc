"""Where ``uniqc-tasks export -o FILE`` may write (issue 17, items 1 and 2): never onto
the store's own database or any SQLite database; a regular file (or a new path) is
written as ``FILE.partial`` and renamed, through a symlink onto the file it points to;
a named pipe, ``/dev/fd/N`` or a device is written straight into, never replaced."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from uniqc_taskstore import TaskInfo, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A store with one live and one archived task (the archive is not exported by
    default, so an export written over the database would lose it)."""
    directory = tmp_path / "cache"
    with TaskStore(directory) as store:
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
        archived = TaskInfo(generate_uniqc_task_id(), "dummy")
        store.save(archived)
        store.archive(archived.task_id)
    return directory


def counts(directory: Path) -> tuple[int, int]:
    with TaskStore(directory, create=False) as store:
        return store.count(), store.count_archived()


def export(capsys: pytest.CaptureFixture[str], cache: Path, target: str) -> tuple[int, str, str]:
    return run(capsys, "export", "--cache-dir", str(cache), "-o", target)


@pytest.mark.parametrize(
    "name", ["tasks.sqlite", "tasks.sqlite-wal", "tasks.sqlite-shm", "link", "hard-link"]
)
def test_export_onto_the_stores_own_files_is_refused_and_changes_nothing(
    cache: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    database = cache / "tasks.sqlite"
    with TaskStore(cache) as store:  # held open, so the -wal and -shm exist
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
        assert (cache / "tasks.sqlite-wal").exists()
        if name == "link":
            (cache.parent / "link").symlink_to(database)
        if name == "hard-link":
            os.link(database, cache.parent / "hard-link")
        target = cache / name if name.startswith("tasks") else cache.parent / name
        before = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
        code, _, err = export(capsys, cache, str(target))
        assert code == EXIT_REFUSED
        assert "store's own database" in err
        assert "choose another FILE" in err
        assert err.count("\n") == 1
        after = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
        assert after.keys() == before.keys()  # no FILE.partial either
        assert after[database.name] == before[database.name]
    assert counts(cache) == (2, 1)


def test_export_onto_another_sqlite_database_is_refused(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    with TaskStore(other) as store:
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
    code, _, err = export(capsys, cache, str(other / "tasks.sqlite"))
    assert code == EXIT_REFUSED
    assert "is a SQLite database" in err
    assert counts(other) == (1, 0)


def read_all(fd: int, into: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as stream:
        into.append(stream.read())


def test_export_into_a_named_pipe_reaches_its_reader_and_leaves_the_pipe(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    # The reader opens the pipe as a `cat pipe` would, while the export writes into it.
    reader = threading.Thread(
        target=lambda: read_all(os.open(fifo, os.O_RDONLY), received), daemon=True
    )
    reader.start()
    code, _, _ = export(capsys, cache, str(fifo))
    reader.join(timeout=30)
    assert code == EXIT_OK
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not (tmp_path / "pipe.partial").exists()
    assert len(received[0].decode().splitlines()) == 2  # the header and the live task


def test_export_into_dev_fd_of_a_pipe_as_process_substitution_gives_it(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(read_end, received), daemon=True)
    reader.start()
    try:
        code, _, err = export(capsys, cache, f"/dev/fd/{write_end}")
    finally:
        os.close(write_end)
    reader.join(timeout=30)
    assert (code, err) == (EXIT_OK, "")
    assert len(received[0].decode().splitlines()) == 2


def test_export_through_a_symlink_replaces_the_file_it_points_to_and_keeps_the_link(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "exports").mkdir()
    real = tmp_path / "exports" / "latest.jsonl"
    real.write_text("an older export\n", encoding="utf-8")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    code, _, _ = export(capsys, cache, str(link))
    assert code == EXIT_OK
    assert link.is_symlink()
    assert link.resolve() == real
    assert len(real.read_text(encoding="utf-8").splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "exports", "latest.jsonl"]
    assert [p.name for p in real.parent.iterdir()] == ["latest.jsonl"]


def full_device(directory: Path) -> Path:
    """A private node of the ``/dev/full`` device (every write fails with ENOSPC), so
    that code that would replace it replaces only this node; skipped where device
    nodes cannot be made (not root, or no CAP_MKNOD)."""
    node = directory / "full"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        with node.open("wb") as handle:
            handle.write(b"x")
            handle.flush()
    except PermissionError:
        pytest.skip("cannot make a device node here")
    except OSError:
        pass  # ENOSPC: the device behaves as /dev/full does
    else:
        pytest.skip("the device node does not behave as /dev/full")
    return node


def test_export_to_a_full_device_fails_in_one_line_and_leaves_the_device(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = full_device(tmp_path)
    code, _, err = export(capsys, cache, str(device))
    assert code == EXIT_REFUSED
    assert err.startswith(f"uniqc-tasks: cannot write {device}")
    assert err.count("\n") == 1
    after = device.lstat()
    assert stat.S_ISCHR(after.st_mode)
    assert after.st_rdev == os.makedev(1, 7)
    assert not (tmp_path / "full.partial").exists()
