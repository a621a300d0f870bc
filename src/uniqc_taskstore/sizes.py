"""How much room a store takes: the SQLite file with its write-ahead log, or the
store's tables on a server (data and indexes), in bytes.

The figure is what the database itself reports: the files' sizes on SQLite, the sum
of ``pg_total_relation_size`` over the store's tables on PostgreSQL (their TOAST
data and indexes included), ``data_length + index_length`` from
``information_schema.tables`` on MariaDB/MySQL (InnoDB's estimate, refreshed by its
statistics, so it lags recent writes).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, column, func, select, table

from .engine import Database
from .schema import metadata

_TABLE_NAMES = sorted(metadata.tables)


def storage_bytes(db: Database) -> int | None:
    """Bytes the store takes on disk, or None where there is no such figure (in memory)."""
    return db.read(lambda conn: _bytes(conn, getattr(db.backend, "path", None)))


def _bytes(conn: Connection, path: Path | None) -> int | None:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        if path is None:
            return None
        return sum(_file_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))
    if dialect == "postgresql":
        return _postgresql_bytes(conn)
    if dialect in ("mysql", "mariadb"):
        return _mysql_bytes(conn)
    return None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _postgresql_bytes(conn: Connection) -> int:
    pg_class = table("pg_class", column("oid"), column("relname"), column("relnamespace"))
    pg_namespace = table("pg_namespace", column("oid"), column("nspname"))
    stmt = (
        select(func.coalesce(func.sum(func.pg_total_relation_size(pg_class.c.oid)), 0))
        .select_from(pg_class.join(pg_namespace, pg_namespace.c.oid == pg_class.c.relnamespace))
        .where(
            pg_namespace.c.nspname == func.current_schema(),
            pg_class.c.relname.in_(_TABLE_NAMES),
        )
    )
    return int(conn.execute(stmt).scalar_one())


def _mysql_bytes(conn: Connection) -> int:
    tables = table(
        "tables",
        column("table_schema"),
        column("table_name"),
        column("data_length"),
        column("index_length"),
        schema="information_schema",
    )
    stmt = select(func.coalesce(func.sum(tables.c.data_length + tables.c.index_length), 0)).where(
        tables.c.table_schema == func.database(), tables.c.table_name.in_(_TABLE_NAMES)
    )
    return int(conn.execute(stmt).scalar_one())
