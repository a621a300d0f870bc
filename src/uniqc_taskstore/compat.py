"""The original SDK store's names, over this store.

The SDK (``unified-quantum``) imports ``uniqc.backend_adapter.task.store`` and its
gateway ``uniqc.gateway.db.archive_store.ArchiveStore``. This module offers both under
the names and signatures the SDK uses, so either SDK module can be pointed here with
no shim of its own::

    # uniqc/backend_adapter/task/store.py (and uniqc/gateway/db/archive_store.py)
    import sys
    import uniqc_taskstore.compat
    sys.modules[__name__] = uniqc_taskstore.compat

Replacing the module object (rather than re-exporting its names) keeps
``monkeypatch.setattr("uniqc.backend_adapter.task.store.DEFAULT_CACHE_DIR", ...)``
working: :class:`TaskStore` reads this module's ``DEFAULT_CACHE_DIR`` each time it is
constructed without a directory, as the original did.

``uniqc-tasks sdk enable`` makes that swap for every process of an environment without
editing the SDK's files (an import hook started by a ``.pth`` file, see
:mod:`uniqc_taskstore.sdk_swap`); :func:`enable` makes it for the calling process.

Where this store behaves differently from the original, on purpose, is listed in the
README ("Differences from the original store").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from sqlalchemy import Engine

from . import store as _store
from .backends.base import APPLICATION_ID
from .backends.sqlite import DATABASE_FILENAME
from .migrator import CURRENT_SCHEMA_VERSION, MIGRATIONS
from .model import (
    UNIQC_TASK_ID_PREFIX,
    TaskInfo,
    TaskShard,
    TaskStatus,
    generate_uniqc_task_id,
    is_generated_task_id,
    is_uniqc_task_id,
)

__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "DB_FILENAME",
    "DEFAULT_CACHE_DIR",
    "MIGRATIONS",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "ArchiveStore",
    "TaskInfo",
    "TaskShard",
    "TaskStatus",
    "TaskStore",
    "enable",
    "generate_uniqc_task_id",
    "is_generated_task_id",
    "is_uniqc_task_id",
]

DB_FILENAME: str = DATABASE_FILENAME
"""The SQLite file's name inside a cache directory."""

_env_dir = os.environ.get(_store.CACHE_DIR_ENV)
DEFAULT_CACHE_DIR: Path = Path(_env_dir).expanduser() if _env_dir else _store.DEFAULT_CACHE_DIR
"""Where ``TaskStore()`` puts ``tasks.sqlite``: ``UNIQC_CACHE_DIR`` (read at import) or
``~/.uniqc/cache``. Read again at every ``TaskStore()``, so reassigning it moves the
stores constructed afterwards, as in the original."""

TERMINAL_STATUSES: tuple[str, ...] = ("success", "failed", "cancelled")
"""The final statuses, as the original's tuple of strings."""


class TaskStore(_store.TaskStore):
    """:class:`uniqc_taskstore.TaskStore` constructed as the original was.

    ``TaskStore(cache_dir)`` takes the directory positionally. Without one (``None`` or
    ``""``), ``UNIQC_TASKSTORE_URL`` if set, else this module's ``DEFAULT_CACHE_DIR``
    as it is at the time of the call. The other keywords are the parent's.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        schema: str | None = None,
        engine: Engine | None = None,
        create: bool = True,
    ) -> None:
        if not cache_dir:
            cache_dir = None
            if url is None and engine is None:
                url = os.environ.get(_store.URL_ENV) or None
                if url is None:
                    cache_dir = DEFAULT_CACHE_DIR
        super().__init__(cache_dir, url=url, schema=schema, engine=engine, create=create)

    def __enter__(self) -> Self:
        return self


class ArchiveStore:
    """The SDK gateway's archive API: moves tasks (with their shards) between the live
    tables and the archive of one store, by default ``TaskStore()``."""

    def __init__(self, store: _store.TaskStore | None = None) -> None:
        self._store = store if store is not None else TaskStore()

    def archive_task(self, task_id: str) -> bool:
        """Move a task and its shards to the archive; False if there is no such task."""
        return self._store.archive(task_id)

    def restore_task(self, task_id: str) -> bool:
        """Move an archived task and its shards back; False if it is not archived."""
        return self._store.restore(task_id)

    def list_archived(
        self,
        *,
        status: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[TaskInfo]:
        """Archived tasks newest first by submit time; a negative ``limit`` means all."""
        return self._store.list_archived(status=status, backend=backend, limit=limit, offset=offset)

    def get_archived(self, task_id: str) -> TaskInfo | None:
        """The archived task with this id, or None."""
        return self._store.get_archived(task_id)

    def delete_archived(self, task_id: str) -> bool:
        """Delete an archived task and its shards for good; True if it existed."""
        return self._store.delete_archived(task_id)

    def count_archived(self, *, status: str | None = None, backend: str | None = None) -> int:
        """How many archived tasks match."""
        return self._store.count_archived(status=status, backend=backend)


def enable() -> None:
    """Make the SDK use this store in the calling process: its
    ``uniqc.backend_adapter.task.store`` and ``uniqc.gateway.db.archive_store`` become
    this module when first imported. Call it before the first ``import uniqc``. Raises
    :class:`~uniqc_taskstore.errors.SdkSwapError` when the SDK is not installed, is a
    release the swap was not checked with, or has already imported its own store.
    ``uniqc-tasks sdk enable`` does the same for every process of the environment."""
    from .sdk_swap import enable_in_process

    enable_in_process()
