"""Every error the store raises derives from :class:`TaskStoreError`.

Callers catch the root to handle anything the store refuses, or a subclass to
react precisely (retry on :class:`DatabaseBusyError`, fix the input on
:class:`InvalidInputError`, point the store elsewhere on
:class:`StoreLocationError`).

Every error says whether the failed call may simply be made again: ``retry_safe``
is True when calling again with the same arguments may succeed and cannot apply a
write twice (nothing of the call was written, or the call is one whose repetition
changes nothing more: see :class:`OutcomeUnknownError`).
"""

from __future__ import annotations


class TaskStoreError(Exception):
    """Root of every error raised by uniqc-taskstore."""

    retry_safe: bool = False
    """Whether making the same call again may succeed and cannot apply a write twice.
    False for refusals that another try would repeat (bad input, a missing task) and
    for a write whose outcome is unknown."""


class InvalidInputError(TaskStoreError, ValueError):
    """A value handed to the store is not acceptable; nothing was written.

    ``field`` names what was wrong and ``value`` holds the offending value.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={_short_repr(value)}: {reason}")


class UnserializableValueError(InvalidInputError, TypeError):
    """A result or metadata value cannot be stored as JSON; nothing was written."""


class ImportLineError(InvalidInputError):
    """A line of a file given to ``import`` cannot be read or stored (line 1: the file
    is not an export). ``file`` and ``line`` name it; ``report`` (an
    :class:`~uniqc_taskstore.exchange.ImportReport`) says what was imported: the task
    lines before it, none from it on."""

    def __init__(self, file: str, line: int, reason: str, report: object = None) -> None:
        self.field = f"{file}, line {line}"
        self.value = None
        self.reason = reason
        self.file = file
        self.line = line
        self.report = report
        Exception.__init__(self, f"{file}, line {line}: {reason}")


class ShardLayoutError(InvalidInputError):
    """Shards of one task overlap, leave a gap, or disagree with their results."""


class TaskNotFoundError(TaskStoreError, LookupError):
    """The task (or the shard's parent task) does not exist."""


class ShardNotFoundError(TaskStoreError, LookupError):
    """No shard with that task id and index exists."""


class TaskStateError(TaskStoreError):
    """The operation is not allowed in the task's current state."""


class DatabaseError(TaskStoreError):
    """The database cannot be used as it is; the message says why and what to do."""


class ForeignDatabaseError(DatabaseError):
    """The file or database belongs to another application; it was left untouched."""


class SchemaTooNewError(DatabaseError):
    """The database was written by a newer uniqc-taskstore than this one."""

    def __init__(self, found: int, supported: int, where: str) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{where} is at schema version {found}, but this uniqc-taskstore only knows "
            f"versions up to {supported}. Upgrade uniqc-taskstore "
            f"(pip install -U uniqc-taskstore) to open it; it was left untouched."
        )


class CorruptDatabaseError(DatabaseError):
    """The file is not a readable SQLite database (truncated or damaged), or a stored
    row cannot be read (:class:`CorruptRowError`)."""


class CorruptRowError(CorruptDatabaseError):
    """One stored row holds a value the store cannot read back.

    ``table`` and ``key`` name the row (``key`` is the task id, or ``(task id, shard
    index)`` for a shard), ``column`` the bad value and ``reason`` what is wrong with
    it. Listing methods take ``on_corrupt=`` to skip such rows and report them;
    :func:`uniqc_taskstore.integrity.find_corrupt_rows` finds every one.
    """

    def __init__(self, table: str, key: object, column: str, reason: str) -> None:
        self.table = table
        self.key = key
        self.column = column
        self.reason = reason
        super().__init__(
            f"{table} row {_short_repr(key)}: column {column} cannot be read ({reason}); "
            "fix or delete that row (uniqc_taskstore.integrity.find_corrupt_rows lists them all)"
        )


class MigrationError(DatabaseError):
    """A schema migration failed; the database stays at its previous version."""


class StoreNotFoundError(DatabaseError):
    """No task store exists at that location, and the caller asked not to create one."""


class StoreLocationError(DatabaseError):
    """The cache directory or database file cannot be created or opened there."""


class DatabaseConnectionError(DatabaseError):
    """The database server could not be reached, refused the login, or did not answer
    within the connect timeout; nothing was written."""

    retry_safe = True


class ConnectionLostError(DatabaseConnectionError):
    """The connection to the server was lost (restart, network, a proxy) before the
    call's commit was sent, and no new one could be made within the store's retry
    budget: nothing of the call was written. Safe to call again."""


class OutcomeUnknownError(DatabaseConnectionError):
    """The connection was lost after the write's ``COMMIT`` was sent and before the
    server answered: the write may or may not have been applied.

    ``retry_safe`` is True for the writes that are idempotent by construction (the
    store retried them itself until its retry budget ran out: ``save``,
    ``save_many``, ``save_shard(s)``, ``update_shard``, ``archive``); for any other
    write it is False: read the state back before deciding to write again.
    """

    def __init__(self, message: str, *, retry_safe: bool) -> None:
        self.retry_safe = retry_safe
        super().__init__(message)


class SdkSwapError(TaskStoreError):
    """The SDK swap cannot be made or undone here (the SDK is not installed, is a release
    the swap was not checked with, or its site-packages cannot be written); the message
    says what to do."""


class BackupUnavailableError(TaskStoreError):
    """This store cannot be backed up by uniqc-taskstore (a server database, or one in
    memory); ``command`` is the native tool's command line to use instead (password
    masked), or None."""

    def __init__(self, message: str, command: str | None = None) -> None:
        self.command = command
        super().__init__(message)


class ChangesExpiredError(TaskStoreError):
    """The change feed no longer holds every change after this token: retention (or
    ``clear_all``) deleted some. Start again from ``changes(since=None)`` after
    re-reading the tasks you track."""


class DatabaseBusyError(DatabaseError):
    """The database stayed locked by other writers past the retry budget.

    Nothing of the failed call was written; it is safe to call again.
    """

    retryable = True
    retry_safe = True


class StatementTimeoutError(DatabaseBusyError):
    """A statement ran longer than the store's ``statement_timeout`` (waiting on a
    lock, or working): it was cancelled and its transaction rolled back, nothing was
    written. Safe to call again, or allow longer statements (``?statement_timeout=``
    in the URL)."""


def _short_repr(value: object, limit: int = 120) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception:  # e.g. an int too long for str(): the error must still be built
        return f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
