"""Version 15: MariaDB's change feed is read in ``seq`` order with a dirty read for its
horizon, and writes no longer take the commit tick (see
:mod:`uniqc_taskstore.backends.changefeed`), where the server's
``innodb_autoinc_lock_mode`` is 0 or 1.

No table changes: the version is bumped because a reader of version 14 reads MariaDB's
feed by ``(txid, seq)`` up to the tick counter, and rows written without a tick
(``txid`` NULL) would be silently invisible to it; with this version such code refuses
the store as made by a newer version instead. On MariaDB/MySQL the change mark
``seq_start`` records the largest ``seq`` at this step: a token of the tick design
(read on after this version, resuming in ``seq`` order) expires once retention deletes
a change above it, since it had read none of those. Nothing else on SQLite and
PostgreSQL. Safe to run again.
"""

from __future__ import annotations

from sqlalchemy import Connection, text


def upgrade(conn: Connection) -> None:
    """On MariaDB/MySQL: sets change mark seq_start to the largest seq in changes."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return
    conn.execute(text("DELETE FROM change_marks WHERE name = 'seq_start'"))
    conn.execute(
        text(
            "INSERT INTO change_marks (name, value) "
            "SELECT 'seq_start', COALESCE(MAX(seq), 0) FROM changes"
        )
    )
