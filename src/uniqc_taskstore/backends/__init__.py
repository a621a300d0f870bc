"""Database backends: what differs between SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import InvalidInputError
from .base import APPLICATION_ID, Backend
from .sqlite import SqliteBackend

__all__ = ["APPLICATION_ID", "Backend", "SqliteBackend", "backend_for_url"]


def backend_for_url(url: str | URL, *, schema: str | None = None) -> Backend:
    """The backend that speaks to ``url`` (``sqlite:///path``, ``postgresql+psycopg://``,
    ``mysql+pymysql://`` or ``mariadb+pymysql://``)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInputError("url", url, "is not a database URL") from exc
    family = parsed.get_backend_name()
    if schema is not None and family != "postgresql":
        raise InvalidInputError("schema", schema, "only PostgreSQL databases take a schema name")
    if family == "sqlite":
        from pathlib import Path

        database = parsed.database
        return SqliteBackend(Path(database).expanduser().resolve() if database else None)
    if family == "postgresql":
        from .postgresql import PostgresBackend

        return PostgresBackend(parsed, schema=schema)
    if family in ("mysql", "mariadb"):
        from .mysql import MysqlBackend

        return MysqlBackend(parsed)
    raise InvalidInputError(
        "url",
        parsed.render_as_string(hide_password=True),
        "unsupported database; use sqlite, postgresql+psycopg or mysql+pymysql",
    )
