"""What adapters depend on: inject any object with these methods.

``TaskStore`` satisfies :class:`TaskRepository` (mypy checks it in
``tests/test_protocol.py``); ``TaskStore.in_memory()`` is a ready fake for an
adapter's own unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .model import ShardUpdate, TaskInfo, TaskShard, TaskStatus


class TaskRepository(Protocol):
    """The part of :class:`~uniqc_taskstore.TaskStore` an adapter needs to submit,
    poll and look up tasks."""

    def save(self, task: TaskInfo, shards: Sequence[TaskShard] | None = None) -> None:
        """Insert or update a task, and optionally its shards, in one transaction."""

    def get(self, task_id: str) -> TaskInfo | None:
        """The task, or None."""

    def save_shard(self, shard: TaskShard) -> None:
        """Insert or update one shard; its task must exist."""

    def get_shards(self, uniqc_task_id: str) -> list[TaskShard]:
        """A task's shards in index order."""

    def update_shard(
        self,
        uniqc_task_id: str,
        shard_index: int,
        *,
        status: TaskStatus | str,
        result: Any = None,
        error_message: str | None = None,
    ) -> ShardUpdate:
        """Record a poll of one shard and recompute its task's status atomically."""

    def get_shard_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> TaskShard | None:
        """The newest shard of a platform job id."""

    def find_uniqc_id_by_platform_id(
        self, platform_task_id: str, *, backend: str | None = None
    ) -> str | None:
        """The task owning a platform job id."""
