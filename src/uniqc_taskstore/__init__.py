"""uniqc-taskstore: the durable store of quantum-cloud tasks and their platform jobs.

The library logs through the standard :mod:`logging` module under the
``uniqc_taskstore`` logger tree and configures nothing: a :class:`logging.NullHandler`
on the package logger keeps it silent until the application sets up logging.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from .backends.base import APPLICATION_ID
from .changes import Change, ChangeFilter, ChangePage
from .errors import (
    BackupUnavailableError,
    ChangesExpiredError,
    ConnectionLostError,
    CorruptDatabaseError,
    CorruptRowError,
    DatabaseBusyError,
    DatabaseConnectionError,
    DatabaseError,
    ForeignDatabaseError,
    InvalidInputError,
    MigrationError,
    OutcomeUnknownError,
    SchemaTooNewError,
    SdkSwapError,
    ShardLayoutError,
    ShardNotFoundError,
    StatementTimeoutError,
    StoreLocationError,
    StoreNotFoundError,
    TaskNotFoundError,
    TaskStateError,
    TaskStoreError,
    UnserializableValueError,
)
from .filters import TaskFilter
from .migrator import CURRENT_SCHEMA_VERSION, MIGRATIONS
from .model import (
    TERMINAL_STATUSES,
    UNIQC_TASK_ID_PREFIX,
    BulkResult,
    RetentionResult,
    ShardUpdate,
    TaskInfo,
    TaskPage,
    TaskShard,
    TaskStatus,
    TaskSummary,
    aggregate_status,
    generate_uniqc_task_id,
    is_generated_task_id,
    is_uniqc_task_id,
)
from .protocol import TaskRepository
from .sharding import ShardPlan, assemble_results, plan_shards
from .store import DEFAULT_CACHE_DIR, TaskStore

logging.getLogger(__name__).addHandler(logging.NullHandler())

try:
    __version__ = _installed_version("uniqc-taskstore")
except PackageNotFoundError:  # pragma: no cover - a source tree never installed; tests install
    __version__ = "0+unknown"

__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_CACHE_DIR",
    "MIGRATIONS",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "BackupUnavailableError",
    "BulkResult",
    "Change",
    "ChangeFilter",
    "ChangePage",
    "ChangesExpiredError",
    "ConnectionLostError",
    "CorruptDatabaseError",
    "CorruptRowError",
    "DatabaseBusyError",
    "DatabaseConnectionError",
    "DatabaseError",
    "ForeignDatabaseError",
    "InvalidInputError",
    "MigrationError",
    "OutcomeUnknownError",
    "RetentionResult",
    "SchemaTooNewError",
    "SdkSwapError",
    "ShardLayoutError",
    "ShardNotFoundError",
    "ShardPlan",
    "ShardUpdate",
    "StatementTimeoutError",
    "StoreLocationError",
    "StoreNotFoundError",
    "TaskFilter",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskPage",
    "TaskRepository",
    "TaskShard",
    "TaskStateError",
    "TaskStatus",
    "TaskStore",
    "TaskStoreError",
    "TaskSummary",
    "UnserializableValueError",
    "__version__",
    "aggregate_status",
    "assemble_results",
    "generate_uniqc_task_id",
    "is_generated_task_id",
    "is_uniqc_task_id",
    "plan_shards",
]
