"""Version 12: the change log behind ``TaskStore.changes``: one row per task a committed
write changed, appended in the write's own transaction, and a few named numbers.

``changes.seq`` numbers rows (SQLite: AUTOINCREMENT, never reused after retention
deletes rows); ``txid`` names the writing transaction on the servers (PostgreSQL's
transaction id, MariaDB's commit tick), and (txid, seq) is the servers' read order.
``change_marks`` holds MariaDB's commit counter and what retention last deleted. New
tables only: a reader that knows version 10 reads the file as before. ``checkfirst``
on every step: MariaDB cannot roll DDL back, so a step that stopped halfway is
finished by running it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, MetaData, String, Table

from uniqc_taskstore.column_types import IdText, StatusText, Timestamp
from uniqc_taskstore.migrator import create_missing

_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade(conn: Connection) -> None:
    """Adds the changes table (seq, task_id, kind, status, txid, changed_at) with
    (txid, seq), change_marks (name, value), and on PostgreSQL a trigger that notifies
    uniqc_changes when changes are written."""
    meta = MetaData()
    changes = Table(
        "changes",
        meta,
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("task_id", IdText, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("status", StatusText),
        Column("txid", BigInteger),
        Column("changed_at", Timestamp, nullable=False),
        sqlite_autoincrement=True,
        **_MYSQL_TABLE,
    )
    Index(
        "changes_txid_idx",
        changes.c.txid,
        changes.c.seq,
        sqlite_where=changes.c.txid.isnot(None),
    )
    marks = Table(
        "change_marks",
        meta,
        Column("name", String(16), primary_key=True),
        Column("value", BigInteger, nullable=False),
        **_MYSQL_TABLE,
    )
    create_missing(conn, [changes, marks])
    if conn.dialect.name == "postgresql":
        # Wakes followers (LISTEN uniqc_changes) when a write commits: one notification
        # per transaction, sent by the server, so writers send no statement for it.
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION uniqc_changes_notify() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('uniqc_changes', ''); "
            "RETURN NULL; END $$"
        )
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS uniqc_changes_notify ON changes")
        conn.exec_driver_sql(
            "CREATE TRIGGER uniqc_changes_notify AFTER INSERT ON changes "
            "FOR EACH STATEMENT EXECUTE FUNCTION uniqc_changes_notify()"
        )
