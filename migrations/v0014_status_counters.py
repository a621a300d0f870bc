"""Version 14: live tasks counted per status by triggers, so that the dashboard's counts
cost the same at a million tasks as at ten thousand.

``task_counts(status, stripe, n)``: a status's count is the sum of its rows. Triggers
on ``tasks`` (after insert, after delete, after an update that changes ``status``)
add and subtract in the statement's own transaction, so every write path (the store's,
a bulk copy, another program's, a migration's) keeps the counts exact, and a writer
killed mid-transaction leaves neither its rows nor its counts. On the servers each
connection writes its own stripe (``pg_backend_pid()`` / ``CONNECTION_ID()`` modulo
:data:`STRIPES`), so concurrent writers do not queue on one counter row; SQLite has one
writer at a time and one stripe. The table is filled from the rows already there.
Every step skips what is done: MariaDB cannot roll DDL back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Integer, MetaData, Table, text

from uniqc_taskstore.column_types import StatusText

STRIPES = 64
"""Counter rows per status on a server (SQLite: 1)."""

_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

_SQLITE = [
    """CREATE TRIGGER IF NOT EXISTS uniqc_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts (status, stripe, n) VALUES (NEW.status, 0, 1)
    ON CONFLICT (status, stripe) DO UPDATE SET n = n + 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS uniqc_count_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO task_counts (status, stripe, n) VALUES (OLD.status, 0, -1)
    ON CONFLICT (status, stripe) DO UPDATE SET n = n - 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS uniqc_count_update AFTER UPDATE OF status ON tasks
WHEN OLD.status IS NOT NEW.status BEGIN
    INSERT INTO task_counts (status, stripe, n) VALUES (OLD.status, 0, -1)
    ON CONFLICT (status, stripe) DO UPDATE SET n = n - 1;
    INSERT INTO task_counts (status, stripe, n) VALUES (NEW.status, 0, 1)
    ON CONFLICT (status, stripe) DO UPDATE SET n = n + 1;
END""",
]

_POSTGRESQL = [
    # search_path FROM CURRENT: the store's schema (the migration runs in it), whatever
    # the search_path of the session whose write fires the trigger.
    f"""CREATE OR REPLACE FUNCTION uniqc_count_tasks() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    s integer := mod(pg_backend_pid(), {STRIPES});
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO task_counts AS c (status, stripe, n) VALUES (OLD.status, s, -1)
        ON CONFLICT (status, stripe) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO task_counts AS c (status, stripe, n) VALUES (NEW.status, s, 1)
        ON CONFLICT (status, stripe) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END
$$""",
    "DROP TRIGGER IF EXISTS uniqc_count_insert_delete ON tasks",
    """CREATE TRIGGER uniqc_count_insert_delete AFTER INSERT OR DELETE ON tasks
FOR EACH ROW EXECUTE FUNCTION uniqc_count_tasks()""",
    "DROP TRIGGER IF EXISTS uniqc_count_update ON tasks",
    """CREATE TRIGGER uniqc_count_update AFTER UPDATE OF status ON tasks FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION uniqc_count_tasks()""",
]

_STRIPE = f"MOD(CONNECTION_ID(), {STRIPES})"
_MYSQL = [
    "DROP TRIGGER IF EXISTS uniqc_count_insert",
    f"""CREATE TRIGGER uniqc_count_insert AFTER INSERT ON tasks FOR EACH ROW
INSERT INTO task_counts (status, stripe, n) VALUES (NEW.status, {_STRIPE}, 1)
ON DUPLICATE KEY UPDATE n = n + 1""",
    "DROP TRIGGER IF EXISTS uniqc_count_delete",
    f"""CREATE TRIGGER uniqc_count_delete AFTER DELETE ON tasks FOR EACH ROW
INSERT INTO task_counts (status, stripe, n) VALUES (OLD.status, {_STRIPE}, -1)
ON DUPLICATE KEY UPDATE n = n - 1""",
    "DROP TRIGGER IF EXISTS uniqc_count_update",
    f"""CREATE TRIGGER uniqc_count_update AFTER UPDATE ON tasks FOR EACH ROW
BEGIN
    IF NOT (OLD.status <=> NEW.status) THEN
        INSERT INTO task_counts (status, stripe, n) VALUES (OLD.status, {_STRIPE}, -1)
        ON DUPLICATE KEY UPDATE n = n - 1;
        INSERT INTO task_counts (status, stripe, n) VALUES (NEW.status, {_STRIPE}, 1)
        ON DUPLICATE KEY UPDATE n = n + 1;
    END IF;
END""",
]

TRIGGERS = {"sqlite": _SQLITE, "postgresql": _POSTGRESQL, "mysql": _MYSQL, "mariadb": _MYSQL}
"""The trigger DDL per dialect (raw SQL: Core has no construct for triggers)."""


def upgrade(conn: Connection) -> None:
    """Adds task_counts (live tasks per status, striped on servers), filled from the rows
    there, and the triggers on tasks that keep it in every writing transaction."""
    meta = MetaData()
    counts = Table(
        "task_counts",
        meta,
        Column("status", StatusText, primary_key=True),
        Column("stripe", Integer, primary_key=True, autoincrement=False),
        Column("n", BigInteger, nullable=False),
        **_MYSQL_TABLE,
    )
    counts.create(conn, checkfirst=True)
    # Filled before the triggers exist (MariaDB commits DDL on its own): a rerun after a
    # stop in between refills from scratch; nothing else writes during a migration.
    conn.execute(counts.delete())
    conn.execute(
        text(
            "INSERT INTO task_counts (status, stripe, n) "
            "SELECT status, 0, COUNT(*) FROM tasks GROUP BY status"
        )
    )
    for statement in TRIGGERS[conn.dialect.name]:
        conn.exec_driver_sql(statement)
