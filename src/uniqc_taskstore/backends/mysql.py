"""MariaDB / MySQL: ON DUPLICATE KEY UPDATE, GET_LOCK for migrations.

MariaDB commits DDL implicitly, so a migration that fails halfway cannot be
rolled back there. Every migration is therefore written to be re-runnable
(tables and indexes created only if missing, columns added only if absent, data
steps that skip rows already done) and the version is stamped only after the
step completes: a failed step leaves the old version, and the next open simply
runs the step again and finishes it.

PyMySQL bounds only the TCP connect by ``connect_timeout``; the handshake that
follows is a read, which waits forever for a server that accepted and never
answers. Connections are therefore opened with a read timeout equal to the connect
timeout, and given back the URL's ``read_timeout`` (by default none: a statement
may wait up to ``innodb_lock_wait_timeout`` for a row lock) once open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, column, create_engine, event, func, select, table
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from ..errors import InvalidInputError
from ..schema import declare_mysql_options
from .base import Assignments, DriverBatch, Listener, Outcome, Step, driver_errors
from .changefeed import autoinc_lock_mode, note_autoinc_lock_mode
from .server import MIGRATION_LOCK_NAME, ServerBackend
from .urls import safe_url

# ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_RETRYABLE_ERRORS = {1213, 1205}
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
# ER_CON_COUNT_ERROR (too many connections), ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED,
# CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST,
# CR_SERVER_LOST_EXTENDED, ER_CLIENT_INTERACTION_TIMEOUT
_CONNECTION_ERRORS = {1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
# ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR
_LOGIN_ERRORS = {1044, 1045}
# ER_STATEMENT_TIMEOUT (MariaDB max_statement_time), ER_QUERY_TIMEOUT (MySQL)
_TIMEOUT_ERRORS = {1969, 3024}
_ENDED = "uniqc_taskstore_transaction_ended"

_processlist = table(
    "PROCESSLIST", column("ID"), column("USER"), column("HOST"), schema="information_schema"
)

declare_mysql_options()


class MysqlBackend(ServerBackend):
    """MariaDB or MySQL through PyMySQL, utf8mb4 throughout."""

    name = "mysql"
    _resets_on_return = False
    """Whether the engine is ours, with :meth:`_end_open_transaction` as its reset."""

    def __init__(self, url: str | URL) -> None:
        super().__init__(url)
        charset = self.url.query.get("charset")
        if charset is None:
            self.url = self.url.update_query_dict({"charset": "utf8mb4"})
        elif not (isinstance(charset, str) and charset.lower() == "utf8mb4"):
            # latin1 cannot encode most text (the driver raised UnicodeEncodeError), and
            # MariaDB's utf8 is utf8mb3, which refuses 4-byte characters such as emoji.
            raise InvalidInputError(
                "url",
                safe_url(self.url),
                f"asks for charset={charset}; the task store needs charset=utf8mb4 (ids, "
                "messages and results may hold any character): remove charset= from the "
                "URL or set it to utf8mb4",
            )

    def create_engine(self) -> Engine:
        connect_args: dict[str, Any] = {}
        if self.url.get_driver_name() == "pymysql":
            given = self.url.query.get("read_timeout")
            after_connect = float(given) if isinstance(given, str) else None
            connect_args = {
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.connect_timeout,
            }
        engine = create_engine(
            self.url,
            connect_args=connect_args,
            pool_recycle=3600,
            # The pool's ROLLBACK of every returned connection is a round trip even
            # after our COMMIT (PyMySQL sends it regardless): _end_open_transaction
            # skips it after a commit of ours.
            pool_reset_on_return=None,
            **self.engine_options(),
        )
        event.listen(engine, "reset", self._end_open_transaction)
        self._resets_on_return = True
        if connect_args:
            event.listen(engine, "do_connect", _allow_multiple_statements)
        if connect_args:

            @event.listens_for(engine, "connect")
            def _end_handshake_timeout(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
                dbapi_conn._read_timeout = after_connect

        self.configure_engine(engine)
        return engine

    def configure_engine(self, engine: Engine) -> list[Listener]:
        listeners = super().configure_engine(engine)
        dialect = engine.dialect

        def _learn_autoinc_lock_mode(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # Once per engine: which design the change feed uses on this server (see
            # backends/changefeed.py). Unknown (NULL): the design safe in every mode.
            if autoinc_lock_mode(dialect) is not None:
                return
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT @@innodb_autoinc_lock_mode")
                row = cursor.fetchone()
            finally:
                cursor.close()
            mode = row[0] if row else None
            note_autoinc_lock_mode(dialect, 2 if mode is None else int(mode))

        event.listen(engine, "connect", _learn_autoinc_lock_mode)
        return [*listeners, ("connect", _learn_autoinc_lock_mode)]

    def connection_listeners(self) -> list[Listener]:
        seconds = int(self.busy.timeout_whole_seconds)
        statement_seconds = float(self.statement_timeout)

        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # A held row lock (or table lock) becomes a retryable busy error after this
            # many seconds; a statement running past the statement timeout is cancelled.
            settings = [f"innodb_lock_wait_timeout = {seconds}", f"lock_wait_timeout = {seconds}"]
            if "mariadb" in str(dbapi_conn.get_server_info()).lower():
                settings.append(f"max_statement_time = {statement_seconds:.3f}")
            elif statement_seconds:  # MySQL: SELECTs only
                settings.append(f"max_execution_time = {round(statement_seconds * 1000)}")
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SET SESSION " + ", ".join(settings))
            finally:
                cursor.close()

        return [*super().connection_listeners(), ("connect", _on_connect)]

    def _end_open_transaction(
        self, dbapi_conn: Any, record: ConnectionPoolEntry, state: PoolResetState
    ) -> None:
        """The pool's reset of a returned connection: a ROLLBACK, unless our transaction
        on it just committed (:meth:`after_commit`). MariaDB's own status flag cannot
        tell: a read-only transaction (which still holds its tables' metadata locks)
        does not set it."""
        ended = record.info.pop(_ENDED, False)
        if state.terminate_only or not state.asyncio_safe or ended:
            return
        dbapi_conn.rollback()

    def begin_snapshot(self, conn: Connection) -> None:
        """``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` at REPEATABLE READ
        for this transaction only (the session stays READ COMMITTED for writes): the
        snapshot is taken now, not at the first read. One round trip on our own
        engines' connections (several statements per query), two on a caller's."""
        dbapi_conn: Any = conn.connection.driver_connection
        statements: Sequence[str] = _SNAPSHOT
        if self.url.get_driver_name() == "pymysql" and _multi_statements(dbapi_conn):
            statements = (";\n".join(_SNAPSHOT),)
        with driver_errors(conn.dialect, statements[0]), dbapi_conn.cursor() as cursor:
            for text in statements:
                cursor.execute(text)
                while cursor.nextset():
                    pass

    def dirty_read_then_snapshot(self, conn: Connection, text: str) -> list[int]:
        """``SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED`` (the next transaction
        only: ``SET STATEMENT tx_isolation=... FOR`` is refused, error 1971), ``text``
        and ``COMMIT``, then :meth:`begin_snapshot`'s statements: one round trip on our
        own engines' connections. A failure part-way closes the connection, so that no
        later transaction on it can inherit READ UNCOMMITTED."""
        dbapi_conn: Any = conn.connection.driver_connection
        statements: Sequence[str] = (
            "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
            text,
            "COMMIT",
            *_SNAPSHOT,
        )
        if self.url.get_driver_name() == "pymysql" and _multi_statements(dbapi_conn):
            statements = (";\n".join(statements),)
        found: list[int] = []
        try:
            with driver_errors(conn.dialect, text), dbapi_conn.cursor() as cursor:
                for sql_text in statements:
                    cursor.execute(sql_text)
                    while True:
                        if cursor.description is not None:
                            found.extend(int(row[0]) for row in cursor.fetchall())
                        if not cursor.nextset():
                            break
        except BaseException:
            conn.invalidate()
            raise
        return found

    def after_commit(self, conn: Connection) -> None:
        if self._resets_on_return:
            conn.connection.info[_ENDED] = True

    def after_finished_batch(self, record_info: dict[Any, Any]) -> None:
        if self._resets_on_return:
            record_info[_ENDED] = True

    def batched_writes(self) -> bool:
        """With PyMySQL; in one round trip on the connections of our own engines, which
        allow several statements in one query (see :class:`_MultiStatement`)."""
        return self.url.get_driver_name() == "pymysql"

    def driver_batch(self, dbapi_conn: Any) -> DriverBatch:
        return _MultiStatement(dbapi_conn)

    def in_transaction(self, record_info: dict[Any, Any]) -> bool:
        """Whether the pool's reset will send a ROLLBACK for this connection."""
        return not (self._resets_on_return and record_info.get(_ENDED, False))

    def socket_of(self, dbapi_conn: Any) -> int | None:
        sock = getattr(dbapi_conn, "_sock", None)
        try:
            return None if sock is None else int(sock.fileno())
        except Exception:
            return None

    def acquire_migration_lock(self, conn: Connection) -> None:
        name = _lock_name(conn)
        got = conn.execute(select(func.get_lock(name, self.migration_lock_timeout))).scalar()
        conn.commit()
        if got != 1:
            raise self.lock_wait_error(self._lock_holder(conn, name))

    def _lock_holder(self, conn: Connection, name: str) -> str | None:
        """Who holds the migration lock: its connection id, and its user and host when
        this login may see them."""
        holder = conn.execute(select(func.is_used_lock(name))).scalar()
        row = None
        if holder is not None:
            query = select(_processlist.c.USER, _processlist.c.HOST).where(
                holder == _processlist.c.ID
            )
            row = conn.execute(query).first()
        conn.rollback()
        if holder is None:
            return None
        seen = f" (user {row.USER}, host {row.HOST})" if row is not None else ""
        return f"MariaDB/MySQL connection id {holder}{seen}"

    def release_migration_lock(self, conn: Connection) -> None:
        name = _lock_name(conn)
        conn.execute(select(func.release_lock(name)))
        conn.commit()

    def upsert(self, table: Table, key: Sequence[str], set_: Assignments) -> Any:
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(set_(stmt.inserted))

    def bulk_insert_bound(
        self, conn: Connection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Multi-row ``INSERT ... VALUES`` statements of rows already bound, each value
        rendered by PyMySQL's own escaping as its executemany renders it, but once per
        distinct value of a column rather than once per row; statements stay under
        PyMySQL's own size limit. Other drivers get the executemany."""
        raw = conn.connection.driver_connection
        if not rows or self.url.get_driver_name() != "pymysql" or raw is None:
            super().bulk_insert_bound(conn, table, rows)
            return
        quote = conn.dialect.identifier_preparer
        names = ", ".join(quote.quote(column.name) for column in table.columns)
        prefix = f"INSERT INTO {quote.format_table(table)} ({names}) VALUES "
        escape = raw.escape
        columns = []
        for values in zip(*rows, strict=True):
            try:
                literals = {value: escape(value) for value in set(values)}
                columns.append([literals[value] for value in values])
            except TypeError:  # a value that cannot key the dict
                columns.append([escape(value) for value in values])
        tuples = ["(" + ",".join(row) + ")" for row in zip(*columns, strict=True)]
        start, size = 0, 0
        with driver_errors(conn.dialect, prefix), raw.cursor() as cursor:
            limit = cursor.max_stmt_length - len(prefix)
            for end, text in enumerate(tuples, start=1):
                size += len(text) + 1
                if size >= limit or end == len(tuples):
                    cursor.execute(prefix + ",".join(tuples[start:end]))
                    start, size = end, 0

    def is_busy(self, error: DBAPIError) -> bool:
        return _code(error) in _RETRYABLE_ERRORS

    def is_connection_failure(self, error: DBAPIError) -> bool:
        return _code(error) in _CONNECTION_ERRORS

    def is_login_refused(self, error: DBAPIError) -> bool:
        return _code(error) in _LOGIN_ERRORS

    def is_statement_timeout(self, error: DBAPIError) -> bool:
        return _code(error) in _TIMEOUT_ERRORS

    def is_conflict(self, error: DBAPIError) -> bool:
        return _code(error) == _DUPLICATE_KEY


def _code(error: DBAPIError) -> object:
    """The MariaDB/MySQL error number of a PyMySQL error (None if it has none)."""
    args: tuple[Any, ...] = getattr(error.orig, "args", ())
    return args[0] if args else None


def _lock_name(conn: Connection) -> str:
    # GET_LOCK names are server-wide and at most 64 characters: one per database.
    database = conn.engine.url.database or ""
    name = f"{MIGRATION_LOCK_NAME}:{database}"
    if len(name) > 64:
        name = f"{MIGRATION_LOCK_NAME}:{hashlib.sha256(database.encode()).hexdigest()[:32]}"
    return name


def _allow_multiple_statements(
    _dialect: Any, _record: ConnectionPoolEntry, _cargs: Any, cparams: dict[str, Any]
) -> None:
    """Open the connection with ``CLIENT.MULTI_STATEMENTS``, for :class:`_MultiStatement`.

    What that allows: a query text holding several statements. It adds no way in for
    a caller's data: every value we send, in every statement, is a bound parameter
    that PyMySQL escapes into a string literal (no value is ever pasted into SQL
    unescaped, and the SQL texts themselves are compiled from our own tables), so no
    value can end one statement and start another. It would only widen the damage of
    an escaping bug, which would already be an injection without it."""
    from pymysql.constants import CLIENT  # type: ignore[import-untyped]

    cparams["client_flag"] = int(cparams.get("client_flag", 0)) | CLIENT.MULTI_STATEMENTS


class _MultiStatement(DriverBatch):
    """A transaction sent as PyMySQL text: each :meth:`send` joins its statements (and
    ``COMMIT``), each with its parameters escaped by PyMySQL exactly as its
    ``execute`` would, into one query: one round trip, answered with one result per
    statement. On a connection opened without ``CLIENT.MULTI_STATEMENTS`` (a caller's engine) the
    statements go one by one: the same transaction, more round trips."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._together = _multi_statements(conn)
        self._begun = False

    def send(self, steps: Sequence[Step], *, commit: bool = False) -> list[Outcome]:
        head = [] if self._begun else _BEGIN
        self._begun = True
        self.commit_sent = self.commit_sent or commit
        with self._conn.cursor() as cursor:
            # Each statement's text, with the step it belongs to (None: ours).
            texts: list[tuple[int | None, str]] = [(None, text) for text in head]
            texts += [(i, text) for i, step in enumerate(steps) for text in _texts(cursor, step)]
            texts += [(None, "COMMIT")] if commit else []
            results: list[Outcome] = []
            if self._together:
                cursor.execute(";\n".join(text for _, text in texts))
                results.append(_outcome(cursor))
                while cursor.nextset():
                    results.append(_outcome(cursor))
            else:
                for _, text in texts:
                    cursor.execute(text)
                    results.append(_outcome(cursor))
        if commit:
            self.finished = True
        rows: list[list[Any]] = [[] for _ in steps]
        counts = [0 for _ in steps]
        for (owner, _), result in zip(texts, results, strict=True):
            if owner is not None:  # an executemany split into several statements: summed
                rows[owner] += result.rows
                counts[owner] += result.rowcount
        return [
            step.outcome(found, count)
            for step, found, count in zip(steps, rows, counts, strict=True)
        ]

    def end(self) -> None:
        if not self.finished:
            self._conn.rollback()
            self.finished = True


_SNAPSHOT = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
)
"""How :meth:`MysqlBackend.begin_snapshot` opens a snapshot read."""


def _multi_statements(dbapi_conn: Any) -> bool:
    """Whether the connection was opened with ``CLIENT.MULTI_STATEMENTS``."""
    from pymysql.constants import CLIENT

    return bool(getattr(dbapi_conn, "client_flag", 0) & CLIENT.MULTI_STATEMENTS)


_BEGIN = ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "START TRANSACTION")
"""The first batch's head: the transaction explicit and READ COMMITTED whatever the
session says (a caller's engine may run in autocommit or another isolation level)."""


def _texts(cursor: Any, step: Step) -> list[str]:
    """A step as the SQL text PyMySQL would send for it (``executemany`` of an
    ``INSERT``: one multi-row ``INSERT``, as PyMySQL writes it)."""
    if not step.many:
        return [str(cursor.mogrify(step.sql, step.params))]
    from pymysql.cursors import RE_INSERT_VALUES  # type: ignore[import-untyped]

    match = RE_INSERT_VALUES.match(step.sql)
    if match is None:
        return [str(cursor.mogrify(step.sql, params)) for params in step.params]
    head, values, tail = match.group(1), match.group(2).rstrip(), match.group(3) or ""
    rows = ",".join(str(cursor.mogrify(values, params)) for params in step.params)
    return [head + rows + tail]


def _outcome(cursor: Any) -> Outcome:
    rows = list(cursor.fetchall()) if cursor.description is not None else []
    return Outcome(rows, int(cursor.rowcount))
