"""Database backends: what differs between SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL

from ..errors import InvalidInputError, StoreLocationError
from .base import APPLICATION_ID, Backend
from .sqlite import SqliteBackend
from .urls import mask_text, parse_url, require_driver, safe_url

__all__ = ["APPLICATION_ID", "Backend", "SqliteBackend", "backend_for_url"]


def backend_for_url(
    url: str | os.PathLike[str] | URL, *, schema: str | None = None, source: str = "url"
) -> Backend:
    """The backend that speaks to ``url`` (``sqlite:///path``, ``postgresql://``,
    ``mysql://`` or ``mariadb://``, with psycopg 3 and PyMySQL unless the URL names
    another driver). Errors name ``source``, where the URL came from."""
    parsed = parse_url(url, source=source)
    # Errors echo the URL as written (postgres://…), not as completed (postgresql+psycopg).
    shown = safe_url(url) if isinstance(url, URL) else mask_text(os.fspath(url))
    family = parsed.get_backend_name()
    if schema is not None and family != "postgresql":
        raise InvalidInputError("schema", schema, "only PostgreSQL databases take a schema name")
    if family == "sqlite":
        from pathlib import Path

        database = parsed.database
        if not database or database == ":memory:":  # sqlite:// and sqlite:///:memory:
            return SqliteBackend(None)
        path = Path(database).expanduser()
        try:
            return SqliteBackend(path.resolve())
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, Python < 3.13
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise StoreLocationError(f"cannot use {path} for the task store ({reason})") from exc
    if family == "postgresql":
        from .postgresql import PostgresBackend

        require_driver(parsed, shown)
        return PostgresBackend(parsed, schema=schema)
    if family in ("mysql", "mariadb"):
        from .mysql import MysqlBackend

        require_driver(parsed, shown)
        return MysqlBackend(parsed)
    raise InvalidInputError(
        source,
        safe_url(parsed),
        "unsupported database; use sqlite:///PATH, postgresql://… or mysql://…",
    )
