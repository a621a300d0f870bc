"""uniqc-taskstore: the durable store of quantum-cloud tasks and their platform jobs."""

from __future__ import annotations

from .backends.base import APPLICATION_ID
from .errors import (
    CorruptDatabaseError,
    CorruptRowError,
    DatabaseBusyError,
    DatabaseError,
    ForeignDatabaseError,
    InvalidInputError,
    MigrationError,
    SchemaTooNewError,
    ShardLayoutError,
    ShardNotFoundError,
    StoreLocationError,
    StoreNotFoundError,
    TaskNotFoundError,
    TaskStateError,
    TaskStoreError,
    UnserializableValueError,
)
from .migrator import CURRENT_SCHEMA_VERSION, MIGRATIONS
from .model import (
    TERMINAL_STATUSES,
    UNIQC_TASK_ID_PREFIX,
    ShardUpdate,
    TaskInfo,
    TaskShard,
    TaskStatus,
    aggregate_status,
    generate_uniqc_task_id,
    is_uniqc_task_id,
)
from .protocol import TaskRepository
from .sharding import ShardPlan, assemble_results, plan_shards
from .store import DEFAULT_CACHE_DIR, TaskPage, TaskStore

__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_CACHE_DIR",
    "MIGRATIONS",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "CorruptDatabaseError",
    "CorruptRowError",
    "DatabaseBusyError",
    "DatabaseError",
    "ForeignDatabaseError",
    "InvalidInputError",
    "MigrationError",
    "SchemaTooNewError",
    "ShardLayoutError",
    "ShardNotFoundError",
    "ShardPlan",
    "ShardUpdate",
    "StoreLocationError",
    "StoreNotFoundError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskPage",
    "TaskRepository",
    "TaskShard",
    "TaskStateError",
    "TaskStatus",
    "TaskStore",
    "TaskStoreError",
    "UnserializableValueError",
    "aggregate_status",
    "assemble_results",
    "generate_uniqc_task_id",
    "is_uniqc_task_id",
    "plan_shards",
]
