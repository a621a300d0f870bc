"""Column types whose storage differs per database, declared once.

On SQLite every type below is TEXT, exactly as the files written by the original
implementation hold it. PostgreSQL gets native ``JSON`` and ``TIMESTAMP WITH
TIME ZONE``; MariaDB/MySQL gets bounded ``VARCHAR`` keys (an index needs a
length), ``LONGTEXT`` documents and ``DATETIME(6)`` in UTC. ``JSON`` rather than
``JSONB`` on PostgreSQL and ``LONGTEXT`` on MySQL keep a document's text as it
was written (``JSONB`` and MySQL's ``JSON`` reorder keys).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, DateTime, String, Text, cast, func, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from .jsoncodec import JsonReady, decode_json, dump_jsonable, from_jsonable, to_jsonable
from .model import Unreadable
from .timestamps import canonical_timestamp, format_timestamp, parse_timestamp

_MYSQL = ("mysql", "mariadb")
# The PostgreSQL and MySQL types are imported where a dialect asks for them, so that a
# process using only SQLite never loads those dialects (the CLI starts faster).


class IdText(TypeDecorator[str]):
    """Task, platform and backend ids (at most 255 characters, checked before writing),
    compared and ordered by code point everywhere: ``COLLATE "C"`` on PostgreSQL and
    UTF-8 bytes on MySQL, whose text collations ignore trailing spaces."""

    impl = Text
    cache_ok = True
    unchanged_on_sqlite: ClassVar[tuple[type, ...]] = (str, type(None))
    """Read as they are (:meth:`process_result_value`); the SQLite read path skips it."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Text(collation="C"))
        if dialect.name in _MYSQL:
            from sqlalchemy.dialects.mysql import VARBINARY

            return dialect.type_descriptor(VARBINARY(4 * 255))
        return dialect.type_descriptor(Text())

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name not in _MYSQL:
            return None  # bound as it is: no call per value on the write paths
        return super().bind_processor(dialect)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name in _MYSQL and isinstance(value, str):
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:  # str, or Unreadable
        if isinstance(value, (bytes, bytearray)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return Unreadable("bytes that are not UTF-8 text")
        return value


StatusText: TypeEngine[str] = Text().with_variant(String(16), *_MYSQL)
"""A :class:`~uniqc_taskstore.model.TaskStatus` value."""


class _MessageText(TypeDecorator[str]):
    impl = Text
    cache_ok = True
    unchanged_on_sqlite: ClassVar[tuple[type, ...]] = (str, type(None))

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(Text())


MessageText: TypeEngine[str] = _MessageText()
"""An error message; MySQL's plain TEXT would stop at 64 KiB, short of a traceback."""

SearchText: TypeEngine[str] = Text()
"""Case-folded text the store writes for ``search`` (:mod:`uniqc_taskstore.search`),
searched byte for byte, never through a collation."""


class JsonDocument(TypeDecorator[Any]):
    """A result or metadata value, stored through :mod:`uniqc_taskstore.jsoncodec`.

    Bind a :class:`~uniqc_taskstore.jsoncodec.JsonReady` (from ``prepare_json``) to
    have a refused value named by its field before any statement runs. A stored
    document that cannot be decoded reads as :class:`~uniqc_taskstore.model.Unreadable`
    rather than failing the whole result, so one bad row can be named and skipped;
    PostgreSQL hands the text over uncooked for the same reason (its driver would
    parse it while fetching)."""

    impl = Text
    cache_ok = True
    unchanged_on_sqlite: ClassVar[tuple[type, ...]] = (type(None),)
    """Read as they are (:meth:`process_result_value`); the SQLite read path skips it."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSON

            return dialect.type_descriptor(JSON(none_as_null=True))
        if dialect.name in _MYSQL:
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        tree = value.tree if isinstance(value, JsonReady) else to_jsonable(value)
        if dialect.name == "postgresql":
            return tree
        return dump_jsonable(tree)

    def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        postgresql = sys.modules.get("sqlalchemy.dialects.postgresql")  # loaded if in use
        if postgresql is not None and isinstance(self.impl, postgresql.JSON):
            return type_coerce(cast(column, Text), self)  # this dialect's copy of the type
        return column

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, (str, bytes, bytearray)):
                return decode_json(bytes(value) if isinstance(value, bytearray) else value)
            return from_jsonable(value)
        except (ValueError, TypeError, RecursionError) as exc:
            return Unreadable(_reason(exc, "JSON"))


class Timestamp(TypeDecorator[str]):
    """An instant, handed in and out as canonical UTC ISO-8601 text.

    PostgreSQL hands it over as UTC whatever the session's time zone, so that
    instants near year 1 or 9999 read back in any zone."""

    impl = Text
    cache_ok = True
    unchanged_on_sqlite: ClassVar[tuple[type, ...]] = (str, type(None))
    """Read as they are (:meth:`process_result_value`); the SQLite read path skips it."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import TIMESTAMP

            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        if dialect.name in _MYSQL:
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return _as_utc(value)
        if dialect.name in _MYSQL:
            return _as_utc(value).replace(tzinfo=None)
        return canonical_timestamp(value)

    def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        if isinstance(self.impl, DateTime) and self.impl.timezone:  # PostgreSQL's copy
            return func.timezone("UTC", column, type_=self)
        return column

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:  # str, or Unreadable
        if value is None or isinstance(value, str):
            return value  # unreadable text is repaired with its row: timestamps.repair_times
        if not isinstance(value, datetime):
            return Unreadable(f"a {type(value).__name__} where a timestamp belongs")
        if value.tzinfo is None:  # UTC without a zone (MySQL DATETIME; PostgreSQL, above)
            value = value.replace(tzinfo=UTC)
        return format_timestamp(value)


def _reason(exc: BaseException, what: str) -> str:
    if isinstance(exc, RecursionError):
        return f"{what} nested too deeply to read"
    try:
        return f"not readable {what}: {exc}"[:200]
    except ValueError:  # an exception whose message cannot be built
        return f"not readable {what}: {type(exc).__name__}"


def _as_utc(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return parse_timestamp(format_timestamp(value))
    return parse_timestamp(value)
