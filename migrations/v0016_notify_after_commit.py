"""Version 16: on PostgreSQL, writers wake followers with a ``NOTIFY`` sent right after
their ``COMMIT`` (in the same pipeline), no longer from a trigger inside the writing
transaction.

PostgreSQL queues a transaction's notifications at commit under one database-wide
lock held until the commit record is flushed, so a notifying write serialised the
commits of all writers (8 writers lost 16 % of their throughput to it,
``benchmarks/notify_cost``). A ``NOTIFY`` of its own after the commit writes no commit
record and holds that lock for microseconds. The change log itself is unchanged; the
notification is only a wake-up (a follower also reads the log at a short interval), so
a writer that dies between its commit and its ``NOTIFY`` delays a follower and loses
nothing. The version is bumped so that code of version 15, which relied on the trigger
and would no longer wake followers, refuses the store. Nothing on SQLite and MariaDB.
Safe to run again.
"""

from __future__ import annotations

from sqlalchemy import Connection


def upgrade(conn: Connection) -> None:
    """On PostgreSQL: drops the trigger uniqc_changes_notify on changes and its function."""
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("DROP TRIGGER IF EXISTS uniqc_changes_notify ON changes")
    conn.exec_driver_sql("DROP FUNCTION IF EXISTS uniqc_changes_notify()")
