"""What adapters depend on: inject any object with these methods.

``TaskStore`` satisfies :class:`TaskRepository` (mypy checks it in
``tests/test_protocol.py``); ``TaskStore.in_memory()`` is a ready fake for an
adapter's own unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, Unpack

from .filters import FilterArgs, OrderBy, TaskFilter
from .model import BulkResult, ShardUpdate, TaskInfo, TaskPage, TaskShard, TaskStatus, TaskSummary
from .queries import CountField


class TaskRepository(Protocol):
    """The part of :class:`~uniqc_taskstore.TaskStore` an adapter needs to submit,
    poll and look up tasks, and a gateway needs to list, count, tag and tidy them."""

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

    def finalize(self, task_id: str) -> TaskInfo:
        """Write the shards' per-circuit results and errors into the finished task."""

    def update_metadata(
        self, task_id: str, patch: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Merge a patch into a task's metadata atomically."""

    def set_tags(self, task_id: str, tags_: Mapping[str, str]) -> dict[str, str]:
        """Add or overwrite some tags of a task atomically."""

    def remove_tags(self, task_id: str, keys: Iterable[str]) -> dict[str, str]:
        """Remove some tag keys of a task atomically."""

    def list_page(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int = 100,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        cursor: str | None = None,
        after: tuple[str, str] | None = None,
        include_results: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> TaskPage:
        """One keyset page of matching tasks and the cursor of the next."""

    def count(self, filter: TaskFilter | None = None, **criteria: Unpack[FilterArgs]) -> int:
        """Number of matching tasks."""

    def count_by(
        self,
        field: CountField,
        filter: TaskFilter | None = None,
        *,
        archived: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> dict[str, int]:
        """Matching tasks per status, backend or platform."""

    def summaries(
        self,
        filter: TaskFilter | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        order_by: OrderBy = "submit_time",
        descending: bool = True,
        archived: bool = False,
        **criteria: Unpack[FilterArgs],
    ) -> list[TaskSummary]:
        """Matching tasks without results or metadata."""

    def archive_many(self, task_ids: Iterable[str]) -> BulkResult:
        """Archive many tasks by id."""

    def restore_many(self, task_ids: Iterable[str]) -> BulkResult:
        """Restore many archived tasks by id."""

    def delete_many(self, task_ids: Iterable[str], *, archived: bool = False) -> BulkResult:
        """Delete many tasks by id."""
