"""The change feed: every committed change to a task, in commit order, resumable by
token (see :mod:`uniqc_taskstore.change_log` for how writes fill it and
:mod:`uniqc_taskstore.backends.changefeed` for how each database orders it).

A token is opaque text (URL-safe base64 of the reader's position); keep the last one
you handled and pass it back to miss nothing, across restarts of either side.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from .backends.changefeed import FeedDialect, Position, feed_for, prune
from .change_log import KINDS
from .engine import Database
from .errors import ChangesExpiredError, InvalidInputError
from .model import TaskStatus, coerce_status, validate_names
from .retention import cutoff

DEFAULT_LIMIT = 500
MAX_LIMIT = 10_000
DEFAULT_RETENTION = timedelta(days=7)
"""How long the change log keeps a change unless told otherwise (``prune_changes``)."""
POLL_INTERVAL = {"sqlite": 0.02, "mysql": 0.05, "mariadb": 0.05, "postgresql": 0.25}
"""Seconds between probes while waiting (PostgreSQL is woken by NOTIFY; its probe is
a safety net)."""
PUSH_SAFETY_NET = 1.0
"""Longest wait of ``follow`` for a wake-up before it reads the log anyway: a writer
that died between its commit and its ``NOTIFY`` delays a follower by this at most."""


@dataclass(frozen=True)
class Change:
    """One committed change: which task, what happened (``saved``, ``updated``,
    ``tagged``, ``archived``, ``restored``, ``deleted``, ``purged``), the task's status
    right after it (None once deleted or purged), when it was written, and the token
    that resumes the feed just after it."""

    task_id: str
    kind: str
    status: TaskStatus | None
    changed_at: str
    token: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "status": None if self.status is None else self.status.value,
            "changed_at": self.changed_at,
            "token": self.token,
        }


@dataclass(frozen=True)
class ChangePage:
    """Changes committed after a token, in commit order, and the token to pass next.
    ``more`` is True when the page was cut at ``limit``: read again at once."""

    changes: list[Change] = field(default_factory=list)
    token: str = ""
    more: bool = False

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


@dataclass(frozen=True)
class ChangeFilter:
    """Which changes a reader wants: of these ``task_ids`` and of these ``kinds`` (None:
    any). The token still moves past changes that do not match."""

    task_ids: Iterable[str] | None = None
    kinds: Iterable[str] | None = None

    def __post_init__(self) -> None:
        if self.task_ids is not None:
            object.__setattr__(
                self, "task_ids", tuple(dict.fromkeys(validate_names(self.task_ids, "task_ids")))
            )
        if self.kinds is not None:
            kinds = tuple(dict.fromkeys(validate_names(self.kinds, "kinds")))
            for kind in kinds:
                if kind not in KINDS:
                    raise InvalidInputError("kinds", kind, f"must be one of {', '.join(KINDS)}")
            object.__setattr__(self, "kinds", kinds)


def _where(f: ChangeFilter | None) -> list[Any]:
    from .schema import changes

    if f is None:
        return []
    where = []
    if f.task_ids is not None:
        where.append(changes.c.task_id.in_(list(f.task_ids)))
    if f.kinds is not None:
        where.append(changes.c.kind.in_(list(f.kinds)))
    return where


def encode_token(feed: FeedDialect, at: Position) -> str:
    raw = json.dumps([feed.tag, *at], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(feed: FeedDialect, token: object) -> Position:
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise InvalidInputError("since", token, "give a token from a change page, or None")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
        if not isinstance(decoded, list) or not decoded:
            raise ValueError
        tag, *at = decoded
        return feed.decode(tag, at)
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        raise InvalidInputError(
            "since", token, "is not a change-feed token of this store; start with since=None"
        ) from None


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError("limit", limit, f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def check_filter(f: object) -> ChangeFilter | None:
    if f is not None and not isinstance(f, ChangeFilter):
        raise InvalidInputError("filter", f, "must be a ChangeFilter or None")
    return f


def check_token(db: Database, token: object) -> None:
    """Refuse a token this kind of store did not make (:class:`InvalidInputError`)."""
    decode_token(feed_for(db.engine.dialect), token)


def current_token(db: Database) -> str:
    """A token for "now": past every change committed so far."""
    feed = feed_for(db.engine.dialect)
    return encode_token(feed, feed.read_start(db))


def read_changes(db: Database, since: str | None, f: ChangeFilter | None, limit: int) -> ChangePage:
    """:meth:`TaskStore.changes` (arguments checked)."""
    feed = feed_for(db.engine.dialect)
    if since is None:
        return ChangePage([], current_token(db), False)
    at = decode_token(feed, since)
    # The marks are read after the rows: a prune that deleted some of them has marked it.
    rows, each, after, marks = feed.read_page(db, at, _where(f), limit)
    if feed.expired(at, marks):
        raise ChangesExpiredError(
            "the change feed no longer holds every change after this token (retention or "
            "clear_all deleted some); re-read the tasks you track and start again with "
            "changes(since=None)"
        )
    found = [
        Change(
            row.task_id,
            row.kind,
            None if row.status is None else coerce_status(row.status),
            row.changed_at,
            encode_token(feed, position),
        )
        for row, position in zip(rows, each, strict=True)
    ]
    return ChangePage(found, encode_token(feed, after), len(found) >= limit)


def has_changes(db: Database, token: str) -> bool:
    """Whether any change (matching or not) committed after ``token``."""
    feed = feed_for(db.engine.dialect)
    at = decode_token(feed, token)
    rows = feed.read_page(db, at, [], 1)[0]
    return bool(rows)


def wait_for_changes(db: Database, token: str, timeout: float) -> bool:
    """:meth:`TaskStore.wait_for_changes` (arguments checked)."""
    deadline = time.monotonic() + timeout
    dialect = db.engine.dialect.name
    listener = db.backend.change_listener(db.engine)
    try:
        while True:
            if has_changes(db, token):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pause = min(left, POLL_INTERVAL.get(dialect, 0.05))
            if listener is not None:
                listener.wait(pause)
            else:
                time.sleep(pause)
    finally:
        if listener is not None:
            listener.close()


def follow(
    db: Database,
    since: str | None,
    f: ChangeFilter | None,
    *,
    limit: int = DEFAULT_LIMIT,
    wait: float = 30.0,
) -> Generator[Change, None, None]:
    """:meth:`TaskStore.follow`: every change after ``since`` (None: from now), as it
    commits, forever; each :class:`Change` carries the token to resume after it."""
    # Listening starts before the first read: a commit after any read wakes the wait.
    listener = db.backend.change_listener(db.engine)
    dialect = db.engine.dialect.name
    try:
        token = current_token(db) if since is None else since
        while True:
            page = read_changes(db, token, f, limit)
            yield from page.changes
            token = page.token
            if page.more:
                continue
            if listener is not None:
                # Woken by the NOTIFY sent after a commit, or not for a while: read.
                listener.wait(min(wait, PUSH_SAFETY_NET))
                continue
            deadline = time.monotonic() + wait
            while not has_changes(db, token) and time.monotonic() < deadline:
                time.sleep(min(POLL_INTERVAL.get(dialect, 0.05), wait))
    finally:
        if listener is not None:
            listener.close()


def check_timeout(timeout: object, name: str = "timeout") -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout <= 86_400
    ):
        raise InvalidInputError(name, timeout, "must be a number of seconds from 0 to 86400")
    return float(timeout)


def prune_changes(db: Database, older_than: timedelta | float | None) -> int:
    """:meth:`TaskStore.prune_changes`: delete changes older than ``older_than``
    (default :data:`DEFAULT_RETENTION`), in batches; how many went."""
    before = cutoff(DEFAULT_RETENTION if older_than is None else older_than, "older_than")
    feed = feed_for(db.engine.dialect)
    total = 0
    while True:
        gone, more = db.write(lambda conn: prune(conn, feed, before))
        total += gone
        if not more:
            return total


def feed_summary(db: Database) -> dict[str, Any]:
    """How many changes the log holds and the oldest one's time (for ``doctor``)."""
    from sqlalchemy import func, select

    from .schema import changes

    def work(conn: Connection) -> dict[str, Any]:
        count, oldest = conn.execute(select(func.count(), func.min(changes.c.changed_at))).one()
        return {"changes": int(count), "oldest_change": oldest}

    return db.read(work)
