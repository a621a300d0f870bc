"""Every table and index of the current schema, declared once.

Column names are those of the original implementation's SQLite files (``result_json``,
``metadata_json``), so files already on users' disks are this schema. Migrations
under ``migrations/`` build it step by step; ``tests/test_schema.py`` checks that
the two agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)

from .column_types import (
    IdText,
    JsonDocument,
    MessageText,
    SearchText,
    StatusText,
    Timestamp,
)

metadata = MetaData()

# MySQL: InnoDB for foreign keys and transactions, and a binary collation so ids
# compare exactly (the default collation is case-insensitive). Given to the tables by
# declare_mysql_options when the MySQL backend is imported.
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _task_columns() -> list[Column[Any]]:
    return [
        Column("task_id", IdText, primary_key=True),
        Column("backend", IdText, nullable=False),
        Column("status", StatusText, nullable=False),
        Column("shots", Integer, nullable=False, server_default=text("0")),
        Column("submit_time", Timestamp, nullable=False),
        Column("update_time", Timestamp, nullable=False),
        Column("result_json", JsonDocument),
        Column("metadata_json", JsonDocument, nullable=False, server_default=text("'{}'")),
        Column("error_message", MessageText),
        Column("name", IdText),
        # The backend up to its first ':' (all of it without one), kept by every write
        # of ``backend``: a platform filter is then one index range in submit order (v10).
        Column("platform", IdText),
        # Id, backend and name case-folded by the store (search.task_search_key), kept
        # by every write of them: ``search`` compares it byte for byte (v11).
        Column("search_key", SearchText),
    ]


def _tag_columns() -> list[Any]:
    return [
        Column("task_id", IdText, nullable=False),
        Column("key", IdText, nullable=False),
        Column("value", IdText, nullable=False),
        # The task's submit_time, which never changes once stored: a tag page is a range
        # of (key, value, submit_time, task_id) in sort order, no sort step (v10).
        Column("submit_time", Timestamp),
        PrimaryKeyConstraint("task_id", "key"),
    ]


def _shard_columns() -> list[Column[Any]]:
    return [
        Column("uniqc_task_id", IdText, nullable=False),
        Column("shard_index", Integer, nullable=False),
        Column("platform_task_id", IdText, nullable=False),
        Column("backend", IdText, nullable=False),
        Column("circuit_count", Integer, nullable=False, server_default=text("1")),
        Column("sub_index_offset", Integer, nullable=False, server_default=text("0")),
        Column("status", StatusText, nullable=False),
        Column("result_json", JsonDocument),
        Column("error_message", MessageText),
        Column("submit_time", Timestamp, nullable=False),
        Column("update_time", Timestamp, nullable=False),
        # The platform job id case-folded by the store, for ``search`` (v11).
        Column("search_key", SearchText),
    ]


tasks = Table("tasks", metadata, *_task_columns())
# Each filter's column, then the sort key: a page is a range read with no sort (v9).
Index("tasks_status_submit_idx", tasks.c.status, tasks.c.submit_time, tasks.c.task_id)
Index("tasks_backend_submit_idx", tasks.c.backend, tasks.c.submit_time, tasks.c.task_id)
Index("tasks_platform_submit_idx", tasks.c.platform, tasks.c.submit_time, tasks.c.task_id)
Index("tasks_submit_task_idx", tasks.c.submit_time, tasks.c.task_id)
Index("tasks_update_time_idx", tasks.c.update_time, tasks.c.task_id)
Index("tasks_name_idx", tasks.c.name)

archived_tasks = Table(
    "archived_tasks",
    metadata,
    *_task_columns(),
    Column("archived_at", Timestamp, nullable=False),
)
Index(
    "archived_status_submit_idx",
    archived_tasks.c.status,
    archived_tasks.c.submit_time,
    archived_tasks.c.task_id,
)
Index(
    "archived_backend_submit_idx",
    archived_tasks.c.backend,
    archived_tasks.c.submit_time,
    archived_tasks.c.task_id,
)
Index(
    "archived_platform_submit_idx",
    archived_tasks.c.platform,
    archived_tasks.c.submit_time,
    archived_tasks.c.task_id,
)
Index("archived_submit_task_idx", archived_tasks.c.submit_time, archived_tasks.c.task_id)
Index("archived_update_time_idx", archived_tasks.c.update_time, archived_tasks.c.task_id)
Index("archived_name_idx", archived_tasks.c.name)
Index("archived_archived_at_idx", archived_tasks.c.archived_at)

task_shards = Table(
    "task_shards",
    metadata,
    *_shard_columns(),
    PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
    ForeignKeyConstraint(["uniqc_task_id"], ["tasks.task_id"], ondelete="CASCADE"),
)
# A platform job id, newest first (get_shard_by_platform_id), without a sort (v9).
Index(
    "task_shards_platform_submit_idx",
    task_shards.c.platform_task_id,
    task_shards.c.submit_time,
    task_shards.c.uniqc_task_id,
    task_shards.c.shard_index,
)
Index("task_shards_status_idx", task_shards.c.status)
Index("task_shards_task_status_idx", task_shards.c.uniqc_task_id, task_shards.c.status)

archived_task_shards = Table(
    "archived_task_shards",
    metadata,
    *_shard_columns(),
    Column("archived_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
)
Index(
    "archived_task_shards_platform_submit_idx",
    archived_task_shards.c.platform_task_id,
    archived_task_shards.c.submit_time,
    archived_task_shards.c.uniqc_task_id,
    archived_task_shards.c.shard_index,
)

task_tags = Table(
    "task_tags",
    metadata,
    *_tag_columns(),
    ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
)
"""One row per tag of a live task, so that a tag filter is an index probe."""
Index(
    "task_tags_key_value_submit_idx",
    task_tags.c.key,
    task_tags.c.value,
    task_tags.c.submit_time,
    task_tags.c.task_id,
)

archived_task_tags = Table("archived_task_tags", metadata, *_tag_columns())
Index(
    "archived_task_tags_key_value_submit_idx",
    archived_task_tags.c.key,
    archived_task_tags.c.value,
    archived_task_tags.c.submit_time,
    archived_task_tags.c.task_id,
)

task_counts = Table(
    "task_counts",
    metadata,
    Column("status", StatusText, primary_key=True),
    Column("stripe", Integer, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
)
"""Live tasks per status, kept by triggers on ``tasks`` in the writing transaction
(v14): a status's count is the sum of its stripes (:mod:`~uniqc_taskstore.counters`)."""

schema_stamp = Table(
    "uniqc_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("application_id", Integer, nullable=False),
    Column("schema_version", Integer, nullable=False),
)
"""Server databases only: the application id and schema version that SQLite keeps
in ``PRAGMA application_id`` / ``PRAGMA user_version``. One row, ``id`` = 1."""

changes = Table(
    "changes",
    metadata,
    # SQLite: the rowid, AUTOINCREMENT so a number is never handed out twice, even after
    # retention or clear_all emptied the table (a follower's token names a number).
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("task_id", IdText, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", StatusText),
    # The writing transaction: PostgreSQL's transaction id, MariaDB's commit tick (the
    # counter in change_marks) where innodb_autoinc_lock_mode is 2 or the row is from
    # before v15; NULL on SQLite (writers are serialised: seq is order) and on MariaDB
    # otherwise (seq is read with a dirty-read horizon: backends/changefeed.py).
    Column("txid", BigInteger),
    Column("changed_at", Timestamp, nullable=False),
    sqlite_autoincrement=True,
)
"""The change log (v12): one row per task a committed write changed, written in the
write's own transaction (see :mod:`uniqc_taskstore.changes`)."""
# Servers read the feed by transaction; SQLite never fills txid, so its index stays empty.
Index(
    "changes_txid_idx",
    changes.c.txid,
    changes.c.seq,
    sqlite_where=changes.c.txid.isnot(None),
)

change_marks = Table(
    "change_marks",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
"""Named numbers of the change log (v12): ``tick``, MariaDB's commit counter (tick
design); ``pruned``, the last position retention (or clear_all) deleted (on MariaDB
the last tick); ``pruned_seq``, MariaDB's last ``seq`` deleted (seq design, v15);
``seq_start``, the largest ``seq`` when v15 ran on MariaDB; ``pruned_by``,
PostgreSQL's id of the transaction that did."""

LIVE_TABLES = (tasks, task_shards, task_tags)
ARCHIVE_TABLES = (archived_tasks, archived_task_shards, archived_task_tags)
"""Parents first: delete in reverse order."""


def declare_mysql_options() -> None:
    """Give every table its MySQL options (``_MYSQL_TABLE``). The MySQL backend calls
    it when first imported: SQLAlchemy checks such options by importing the MySQL
    dialect, which a process that only uses SQLite should not pay for."""
    for table in metadata.tables.values():
        for key, value in _MYSQL_TABLE.items():
            table.dialect_kwargs[key] = value
