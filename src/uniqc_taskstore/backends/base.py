"""What differs between databases, as one small interface.

The repository (:mod:`uniqc_taskstore.store`) is written once against the
tables; a :class:`Backend` supplies only how to connect, how to upsert, where
the application id and schema version live, how migrations are serialised
across processes, and which driver errors mean "busy, try again".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, Table, delete, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from ..errors import ForeignDatabaseError
from ..schema import ARCHIVE_TABLES, LIVE_TABLES, metadata

APPLICATION_ID = 0x554E4943
"""``PRAGMA application_id`` of our SQLite files: ASCII ``UNIC``."""

Incoming = ReadOnlyColumnCollection[str, Any]
"""The row an upsert tried to insert (``excluded`` / ``VALUES()``), by column name."""

Assignments = Callable[[Incoming], list[tuple[str, ColumnElement[Any]]]]
"""Builds the ``SET`` list of an upsert from the incoming row.

MySQL applies assignments left to right and later ones see earlier results, so
columns that other assignments' conditions read must come last."""


class Backend(ABC):
    """One kind of database: SQLite, PostgreSQL or MariaDB/MySQL."""

    name: ClassVar[str]

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for messages (a path or a URL without password)."""

    def registry_key(self) -> str:
        """What identifies this database and login within one process (never shown)."""
        return self.describe()

    @abstractmethod
    def create_engine(self) -> Engine:
        """A pooled engine with this backend's connection settings applied."""

    def configure_engine(self, engine: Engine) -> None:
        """Apply connection settings to an engine the caller built."""

    @abstractmethod
    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        """``INSERT`` into ``table``; on a ``key`` conflict apply ``set_`` to the existing
        row. Executed with a list of rows (executemany), so it compiles once."""

    @abstractmethod
    def migration_connection(self, engine: Engine) -> AbstractContextManager[Connection]:
        """A connection holding the database-wide migration lock while open."""

    @abstractmethod
    def claim(self, conn: Connection, *, stamp: bool = True) -> int:
        """Check the database is ours and return its schema version; with ``stamp``,
        mark a fresh database as ours (without, nothing is written).

        Raises :class:`ForeignDatabaseError` for somebody else's database.
        """

    @abstractmethod
    def write_version(self, conn: Connection, version: int) -> None:
        """Record ``version`` as the schema version, inside the current transaction."""

    @abstractmethod
    def is_busy(self, error: DBAPIError) -> bool:
        """True when ``error`` means another writer holds a lock: retrying may succeed."""

    def translate(self, error: DBAPIError) -> Exception | None:
        """A clearer error for a driver failure, or None to keep the driver's."""
        return None

    def prepare(self, *, create: bool = True) -> None:
        """Make the location usable before the first connection (SQLite: the file).

        With ``create=False`` nothing is created: a missing store raises
        :class:`StoreNotFoundError`."""

    def after_open(self, engine: Engine) -> None:
        """Settings that need an open database but no transaction (SQLite: WAL)."""

    def clear_all(self, engine: Engine) -> bool:
        """Remove every task; return True when the database itself was removed and must
        be created again."""
        with engine.begin() as conn:
            for table in (*reversed(LIVE_TABLES), *reversed(ARCHIVE_TABLES)):
                conn.execute(delete(table))
        return False


def foreign_tables(conn: Connection) -> set[str]:
    """Tables present that are not ours."""
    return set(inspect(conn).get_table_names()) - set(metadata.tables)


def refuse_foreign(where: str, reason: str) -> ForeignDatabaseError:
    """The error for a database that is not ours."""
    return ForeignDatabaseError(
        f"{where} {reason}; it does not look like a uniqc-taskstore database and was left "
        "untouched. Point the store at another location (cache_dir=, UNIQC_CACHE_DIR or "
        "UNIQC_TASKSTORE_URL)."
    )
