"""uniqc-taskstore: the durable store of quantum-cloud tasks and their platform jobs.

The library logs through the standard :mod:`logging` module under the
``uniqc_taskstore`` logger tree and configures nothing: a :class:`logging.NullHandler`
on the package logger keeps it silent until the application sets up logging.

The names below are imported when first used (PEP 562), so ``import uniqc_taskstore``
and ``uniqc-tasks --version`` load neither SQLAlchemy nor any database driver until a
store is needed."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
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
        ImportLineError,
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

_LAZY = {
    "APPLICATION_ID": ".backends.base",
    "BackupUnavailableError": ".errors",
    "Change": ".changes",
    "ChangeFilter": ".changes",
    "ChangePage": ".changes",
    "ChangesExpiredError": ".errors",
    "ConnectionLostError": ".errors",
    "CorruptDatabaseError": ".errors",
    "CorruptRowError": ".errors",
    "DatabaseBusyError": ".errors",
    "DatabaseConnectionError": ".errors",
    "DatabaseError": ".errors",
    "ForeignDatabaseError": ".errors",
    "ImportLineError": ".errors",
    "InvalidInputError": ".errors",
    "MigrationError": ".errors",
    "OutcomeUnknownError": ".errors",
    "SchemaTooNewError": ".errors",
    "SdkSwapError": ".errors",
    "ShardLayoutError": ".errors",
    "ShardNotFoundError": ".errors",
    "StatementTimeoutError": ".errors",
    "StoreLocationError": ".errors",
    "StoreNotFoundError": ".errors",
    "TaskNotFoundError": ".errors",
    "TaskStateError": ".errors",
    "TaskStoreError": ".errors",
    "UnserializableValueError": ".errors",
    "TaskFilter": ".filters",
    "CURRENT_SCHEMA_VERSION": ".migrator",
    "MIGRATIONS": ".migrator",
    "TERMINAL_STATUSES": ".model",
    "UNIQC_TASK_ID_PREFIX": ".model",
    "BulkResult": ".model",
    "RetentionResult": ".model",
    "ShardUpdate": ".model",
    "TaskInfo": ".model",
    "TaskPage": ".model",
    "TaskShard": ".model",
    "TaskStatus": ".model",
    "TaskSummary": ".model",
    "aggregate_status": ".model",
    "generate_uniqc_task_id": ".model",
    "is_generated_task_id": ".model",
    "is_uniqc_task_id": ".model",
    "TaskRepository": ".protocol",
    "ShardPlan": ".sharding",
    "assemble_results": ".sharding",
    "plan_shards": ".sharding",
    "DEFAULT_CACHE_DIR": ".store",
    "TaskStore": ".store",
}
"""Where each public name lives."""

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        try:  # a submodule, as an eager package would have imported it (``.store``)
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "ImportLineError",
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
