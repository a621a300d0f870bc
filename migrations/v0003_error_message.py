"""Version 3: an ``error_message`` column on live and archived tasks."""

from __future__ import annotations

from sqlalchemy import Column, Connection

from uniqc_taskstore.column_types import MessageText
from uniqc_taskstore.migrator import add_column


def upgrade(conn: Connection) -> None:
    """Adds error_message (text, may be null) to tasks and archived_tasks."""
    for table_name in ("tasks", "archived_tasks"):
        add_column(conn, table_name, Column("error_message", MessageText))
