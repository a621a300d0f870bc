"""What a call does when the database has a bad day: another writer's lock, a server
that restarts, a connection cut (by the network, a proxy, a killed session), a server
out of connections, a statement past its timeout.

One loop, :func:`with_retries`, runs every attempt of every call
(:class:`~uniqc_taskstore.engine.Database`) and decides, from the driver error:

- **busy** (a lock held by another writer, a deadlock): try again after a jittered,
  growing pause, up to :attr:`BusyPolicy.attempts` attempts, then
  :class:`DatabaseBusyError`;
- **connection** (refused, lost, too many connections, the server shutting down),
  once the store has opened the database: try again on a fresh connection, pausing
  longer each time, until the store's retry budget (``?retry_budget=`` seconds in
  the URL, :data:`RETRY_BUDGET_SECONDS` by default) runs out. Nothing of an attempt
  whose ``COMMIT`` was not sent was written, so any call may be retried; an attempt
  lost *after* its ``COMMIT`` was sent may have been applied, so only an idempotent
  call (``idempotent=True``: its repetition changes nothing more) is retried then;
  any other raises :class:`OutcomeUnknownError` with ``retry_safe=False`` at once;
- **statement timeout**: :class:`StatementTimeoutError` (rolled back; not retried,
  which would only multiply the wait);
- **a stale session** (:meth:`Backend.is_stale_session`: the connection, already
  discarded, had lost track of its prepared statements): tried again at once on
  another connection, within the busy attempts;
- **an interruption** (``KeyboardInterrupt``, ``SystemExit``) that a driver error
  replaced on its way out (:func:`raise_interruption`): raised again at once, never
  retried nor translated.

Every retry is logged (WARNING, with the attempt count and the error's type, never
its values) on this module's logger.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from .backends.base import Backend, BusyPolicy
from .errors import ConnectionLostError, DatabaseConnectionError, OutcomeUnknownError

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_BUDGET_SECONDS = 30.0
"""How long, by default, a call keeps retrying a lost or refused server connection:
longer than a server's restart takes."""

_COMMIT_SENT = "_uniqc_commit_sent"
_after_unknown: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "uniqc_after_unknown_outcome", default=False
)


def mark_commit_sent(error: BaseException) -> BaseException:
    """Record on ``error`` that it was raised after the transaction's ``COMMIT`` was
    sent: if the connection was lost, the outcome is unknown."""
    setattr(error, _COMMIT_SENT, True)
    return error


def interruption_behind(
    error: BaseException, before: BaseException | None = None
) -> BaseException | None:
    """The ``KeyboardInterrupt`` or ``SystemExit`` (any exception that is not an
    :class:`Exception`) that ``error`` was raised while handling, if any.

    A signal that lands while a driver reads from its socket raises there; the driver
    closes the connection and lets it through (PyMySQL does), and then the cleanup on
    its way out (the ``ROLLBACK`` of ``with conn.begin()``, a pool reset) fails on that
    closed connection with a driver error that *replaces* the interruption, leaving it
    only as the new error's ``__context__``. Seen as a lost connection, that error would
    be retried: Ctrl-C would be swallowed. Found here, the interruption is raised again.

    ``before``: the exception the caller was already handling when the call began (a
    store call made in an ``except KeyboardInterrupt:`` block, to mark tasks cancelled,
    say). It and what lies behind it are older than the call and not its interruption."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if current is before:
            return None
        if not isinstance(current, Exception):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def raise_interruption(error: BaseException, before: BaseException | None = None) -> None:
    """Raise again the interruption behind ``error`` (:func:`interruption_behind`), if
    there is one; otherwise return, and mark ``error`` as looked at, so that a caller
    that translates it later does not take an older interruption for its own."""
    if getattr(error, _INTERRUPTION_CHECKED, False):
        return
    stop = interruption_behind(error, before)
    if stop is not None:
        raise stop from None
    with contextlib.suppress(AttributeError):  # a type that takes no attributes
        setattr(error, _INTERRUPTION_CHECKED, True)


_INTERRUPTION_CHECKED = "_uniqc_interruption_checked"


def commit_was_sent(error: BaseException) -> bool:
    return bool(getattr(error, _COMMIT_SENT, False))


def retrying_unknown_outcome() -> bool:
    """Whether the running attempt repeats a write whose earlier attempt may have been
    applied (for a write whose result depends on it: ``archive`` then reports the
    task archived rather than "not live")."""
    return _after_unknown.get()


def with_retries(
    backend: Backend,
    busy: BusyPolicy,
    attempt: Callable[[], T],
    *,
    budget: float,
    idempotent: bool,
) -> T:
    """``attempt()``, retried as the module says. A ``budget`` of 0 retries no
    connection failure (a store that has not opened its database yet: a wrong URL
    fails at once). Raises the driver's :class:`DBAPIError` for what it does not
    retry (the caller translates it), or our own connection errors."""
    busy_tries = 0
    reconnects = 0
    deadline: float | None = None
    unknown = False
    where = backend.describe()
    handling = sys.exception()  # older than this call: not an interruption of it
    token = _after_unknown.set(False)
    try:
        while True:
            try:
                return attempt()
            except DBAPIError as exc:
                raise_interruption(exc, handling)
                if backend.is_busy(exc):
                    busy_tries += 1
                    if busy_tries >= busy.attempts:
                        raise
                    log.warning(
                        "%s is busy (%s); retrying, attempt %d of %d",
                        where,
                        _kind(exc),
                        busy_tries + 1,
                        busy.attempts,
                    )
                    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** (busy_tries - 1))))
                    continue
                if backend.is_stale_session(exc) and busy_tries + 1 < busy.attempts:
                    # The statement failed on a connection now discarded: nothing was
                    # written, whether or not the COMMIT went with it.
                    busy_tries += 1
                    log.warning(
                        "%s: a connection's state went stale (%s); retrying on another, "
                        "attempt %d of %d",
                        where,
                        _kind(exc),
                        busy_tries + 1,
                        busy.attempts,
                    )
                    continue
                if not is_connection_failure(backend, exc):
                    raise
                if commit_was_sent(exc):
                    if not idempotent:
                        raise _outcome_unknown(where, exc, retry_safe=False) from exc
                    unknown = True
                    _after_unknown.set(True)
                if budget <= 0 and not unknown and exc.statement is None:
                    raise  # not opened yet: the caller's translation says what to check
                now = time.monotonic()
                if deadline is None:
                    deadline = now + budget
                if now >= deadline:
                    raise _gave_up(backend, exc, unknown, reconnects, budget) from exc
                reconnects += 1
                growing = min(1.0, 0.05 * 2**reconnects)
                pause = min(deadline - now, random.uniform(0.5, 1.0) * growing)
                log.warning(
                    "%s: connection failed (%s)%s; reconnecting, attempt %d (retry budget %g s)",
                    where,
                    _kind(exc),
                    "; the commit's outcome is unknown, repeating an idempotent write"
                    if unknown
                    else "",
                    reconnects + 1,
                    budget,
                )
                time.sleep(max(0.0, pause))
    finally:
        _after_unknown.reset(token)


def is_connection_failure(backend: Backend, error: DBAPIError) -> bool:
    """Whether ``error`` means the connection failed rather than the statement: it
    could not be opened, was lost, or the server refused new ones for now."""
    return (
        error.statement is None
        or bool(error.connection_invalidated)
        or backend.is_connection_failure(error)
    ) and not backend.is_login_refused(error)


def _kind(exc: DBAPIError) -> str:
    """The driver error's type and code: what went wrong, never a value."""
    orig = exc.orig
    args = getattr(orig, "args", ()) or ()
    code = getattr(orig, "sqlstate", None) or (
        args[0] if args and isinstance(args[0], int) else None
    )
    name = type(orig).__name__ if orig is not None else type(exc).__name__
    return f"{name} {code}" if code else name


def _outcome_unknown(where: str, exc: DBAPIError, *, retry_safe: bool) -> OutcomeUnknownError:
    advice = (
        "the write is idempotent: calling it again is safe"
        if retry_safe
        else "read the state back before writing again"
    )
    return OutcomeUnknownError(
        f"{where}: the connection was lost ({_kind(exc)}) after the COMMIT was sent and "
        f"before the server answered, so the write may or may not have been applied; "
        f"{advice}.",
        retry_safe=retry_safe,
    )


def _gave_up(
    backend: Backend, exc: DBAPIError, unknown: bool, reconnects: int, budget: float
) -> DatabaseConnectionError:
    where = backend.describe()
    if unknown:
        return _outcome_unknown(where, exc, retry_safe=True)
    tried = (
        f" (tried {reconnects + 1} times within the retry budget of {budget:g} s; "
        "set ?retry_budget=SECONDS in the URL to wait longer)"
        if reconnects
        else ""
    )
    if exc.statement is None:
        said = backend.translate(exc)
        detail = str(said).rstrip(".") if said is not None else f"cannot connect to {where}"
        return DatabaseConnectionError(f"{detail}{tried}; nothing was written.")
    return ConnectionLostError(
        f"the connection to {where} was lost ({_kind(exc)}) before the commit{tried}; "
        "nothing was written. Try again once the server is back."
    )
