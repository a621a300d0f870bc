"""A pretend cloud adapter, to show (and test) how adapters use the store.

``DummyAdapter`` receives any :class:`~uniqc_taskstore.TaskRepository` by
injection, cuts a batch into platform jobs of at most ``max_native_batch_size``
circuits, and reports progress through ``update_shard``. Its platform "runs" each
circuit instantly and deterministically, so its results can be checked.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from .errors import InvalidInputError
from .model import TaskInfo, TaskShard, TaskStatus, generate_uniqc_task_id
from .protocol import TaskRepository
from .sharding import assemble_results, plan_shards

DEMO_BACKEND = "dummy:simulator"


def fake_counts(circuit: str, shots: int) -> dict[str, int]:
    """The dummy platform's deterministic measurement counts of one circuit."""
    weight = int.from_bytes(hashlib.sha256(circuit.encode()).digest()[:4], "big") % (shots + 1)
    return {"00": weight, "11": shots - weight}


class DummyAdapter:
    """A platform adapter whose cloud is a dictionary in this process."""

    def __init__(
        self,
        store: TaskRepository,
        *,
        max_native_batch_size: int = 3,
        backend: str = DEMO_BACKEND,
    ) -> None:
        if (
            isinstance(max_native_batch_size, bool)
            or not isinstance(max_native_batch_size, int)
            or max_native_batch_size < 1
        ):
            raise InvalidInputError(
                "max_native_batch_size", max_native_batch_size, "must be an integer >= 1"
            )
        self.store = store
        self.max_native_batch_size = max_native_batch_size
        self.backend = backend
        self._jobs: dict[str, list[str]] = {}
        self._polls: dict[str, int] = {}

    def submit(self, circuits: Sequence[str], *, shots: int = 1000) -> str:
        """Submit a batch; the task and all its shards are saved in one transaction.

        An empty batch is refused before anything is saved: a task without shards
        would stay pending forever."""
        if not circuits:
            raise InvalidInputError("circuits", circuits, "a batch needs at least one circuit")
        task = TaskInfo(
            task_id=generate_uniqc_task_id(),
            backend=self.backend,
            shots=shots,
            metadata={"demo": True, "circuits": len(circuits)},
        )
        shards = []
        for plan in plan_shards(len(circuits), self.max_native_batch_size):
            platform_id = f"dummy-{uuid.uuid4().hex[:12]}"
            chunk = circuits[plan.sub_index_offset : plan.sub_index_offset + plan.circuit_count]
            self._jobs[platform_id] = [*chunk]
            shards.append(
                TaskShard(
                    uniqc_task_id=task.task_id,
                    shard_index=plan.shard_index,
                    platform_task_id=platform_id,
                    backend=self.backend,
                    circuit_count=plan.circuit_count,
                    sub_index_offset=plan.sub_index_offset,
                )
            )
        self.store.save(task, shards)
        return task.task_id

    def poll(self, task_id: str) -> TaskStatus:
        """Ask the platform about every unfinished shard once; return the task status."""
        status = TaskStatus.PENDING
        for shard in self.store.get_shards(task_id):
            if shard.status.is_terminal:
                continue
            polls = self._polls.get(shard.platform_task_id, 0) + 1
            self._polls[shard.platform_task_id] = polls
            if polls == 1:
                status = self.store.update_shard(
                    task_id, shard.shard_index, status="running"
                ).task_status
            else:
                circuits = self._jobs[shard.platform_task_id]
                task = self.store.get(task_id)
                shots = task.shots if task else 1000
                counts = [fake_counts(c, shots) for c in circuits]
                result: Any = counts[0] if shard.circuit_count == 1 else counts
                status = self.store.update_shard(
                    task_id, shard.shard_index, status="success", result=result
                ).task_status
        task = self.store.get(task_id)
        return task.status if task else status

    def results(self, task_id: str) -> list[Any]:
        """Per-circuit results in submission order."""
        return assemble_results(self.store.get_shards(task_id))
