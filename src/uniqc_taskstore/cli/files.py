"""The files ``export`` writes and ``import`` reads.

An export to a regular file (or a new path) is written as ``FILE.partial`` beside the
file and renamed over it when complete, so ``FILE`` is only ever a whole export; a
symlink is written through (the file it points to is replaced, the link stays). Anything
else that already exists (a named pipe, ``/dev/fd/N`` from ``>(...)``, a device such as
``/dev/full``) is streamed into as it is: it is never replaced by a file. The store's own
database, its ``-wal``/``-shm``/``-journal``, and any other SQLite database are refused.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..backends.sqlite import SIDECAR_SUFFIXES
from .output import OutputError

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class OutputTarget:
    """Where an export goes: ``stream`` to write to; ``whole`` when the file appears
    only once complete (stdout and streams get what was written before a failure)."""

    stream: IO[str]
    whole: bool


def store_files(database: Path | None) -> list[Path]:
    """The SQLite store's file and its sidecars (none for a server store)."""
    if database is None:
        return []
    return [database, *(database.with_name(database.name + s) for s in SIDECAR_SUFFIXES)]


@contextmanager
def output_file(target: str, protected: Sequence[Path] = ()) -> Iterator[OutputTarget]:
    """stdout for ``-``; a regular file or new path written as ``target.partial`` and
    renamed once complete (removed if anything goes wrong); an existing pipe or device
    written straight into. ``protected`` (the store's files) and SQLite databases are
    refused with an :class:`OutputError` before anything is written."""
    if target == "-":
        yield OutputTarget(sys.stdout, whole=False)
        return
    path = Path(target).expanduser()
    info = _stat(path)
    _refuse_database(path, info, protected)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"cannot write {path} (it is a directory); name a file in it")
    if info is not None and not stat.S_ISREG(info.st_mode):
        with _streamed(path) as stream:
            yield OutputTarget(stream, whole=False)
        return
    with _replaced(Path(os.path.realpath(path)) if path.is_symlink() else path) as stream:
        yield OutputTarget(stream, whole=True)


def _stat(path: Path) -> os.stat_result | None:
    """What ``path`` is (through symlinks), or None when nothing is there yet."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror})") from None


def _refuse_database(path: Path, info: os.stat_result | None, protected: Sequence[Path]) -> None:
    real = os.path.realpath(path)
    for guarded in protected:
        same = real == os.path.realpath(guarded)
        if not same and info is not None:
            try:
                same = os.path.samefile(path, guarded)  # also a hard link
            except OSError:
                same = False
        if same:
            raise OutputError(
                f"refusing to write the export onto {path}: it is the store's own database "
                f"file ({guarded}), which the export would replace; choose another FILE"
            )
    if info is not None and stat.S_ISREG(info.st_mode):
        try:
            with path.open("rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError:
            return  # unreadable: the write below says why it cannot be written either
        if head == _SQLITE_MAGIC:
            raise OutputError(
                f"refusing to write the export onto {path}: it is a SQLite database, which "
                "an export never replaces; choose another FILE"
            )


@contextmanager
def _replaced(path: Path) -> Iterator[IO[str]]:
    partial = path.with_name(path.name + ".partial")
    try:
        # Private like the store itself: results may be confidential.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stream = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise OutputError(f"cannot write {partial} ({exc.strerror})") from None
    try:
        with stream:
            yield stream
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({exc.strerror}); nothing was kept") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({exc.strerror})") from None


@contextmanager
def _streamed(path: Path) -> Iterator[IO[str]]:
    """An existing pipe, terminal or device, opened for writing as it is."""
    try:
        stream = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror})") from None
    try:
        with stream:
            yield stream
    except OSError as exc:
        raise OutputError(
            f"cannot write {path} ({exc.strerror}); what reached it is incomplete"
        ) from None


__all__ = ["OutputTarget", "output_file", "store_files"]
