"""What differs between databases in the change log: how a write names its
transaction, in what order committed changes are read, and how far a reader may read
without ever passing a change that has yet to commit (its visibility horizon).

- **SQLite** runs one writer at a time (``BEGIN IMMEDIATE``), so ``seq`` (AUTOINCREMENT)
  is handed out in commit order: a reader reads ``seq`` past its token.
- **MariaDB** hands out ``AUTO_INCREMENT`` values when rows are inserted, not when they
  commit: row 11 can be visible before row 10. Each write therefore bumps a one-row
  counter (``change_marks.tick``) as its last statement before ``COMMIT`` and stamps its
  rows with it: the counter's row lock is held to commit, so ticks are taken in commit
  order, every tick up to the committed counter is complete, and a reader reads
  ``(txid, seq)`` past its token up to the counter it read first. Only that one
  increment and the commit itself are serialised; every other statement of a write
  runs concurrently as before.
- **PostgreSQL** stamps rows with the writing transaction's id and reads by snapshot:
  a token holds the snapshot its reader last read up to, and the next page is the
  rows whose transaction a new snapshot sees committed and the old one did not, in
  ``seq`` order. Nothing is serialised; a transaction that commits late is in the
  snapshot difference whenever it commits.

Within one page, changes of one task come in commit order on every database: a write
appends its rows after it holds the task's row lock, so a later writer of the same
task takes a larger ``seq`` (and on MariaDB a larger tick).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.types import UserDefinedType

from ..errors import InvalidInputError
from ..schema import change_marks, changes

Position = list[Any]
"""Where a reader stands in the feed, as JSON-able values (the token's payload)."""

_PRUNE_BATCH = 1000


class FeedDialect:
    """One database's side of the change log."""

    tag: ClassVar[str]

    def txid(self) -> ColumnElement[Any] | None:
        """The value of ``changes.txid`` for the current write, or None (left NULL)."""
        return None

    def tick(self) -> Any | None:
        """A statement each write runs just before its change rows (MariaDB: take the
        next commit tick), or None."""
        return None

    def order(self) -> list[ColumnElement[Any]]:
        """The columns the feed is read in order of."""
        return [changes.c.txid, changes.c.seq]

    def start(self, conn: Connection) -> Position:
        """The position of "now": past every change committed so far."""
        raise NotImplementedError

    def page(
        self, conn: Connection, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> tuple[list[Any], list[Position], Position]:
        """Up to ``limit`` changes committed after ``at`` that match ``where``, in order,
        the position just after each, and the position after them all (past every
        change committed, matching or not, when fewer than ``limit`` matched)."""
        raise NotImplementedError

    def expired(self, at: Position, marks: dict[str, int]) -> bool:
        """Whether retention (or clear_all) may have deleted a change after ``at``."""
        return bool(at[0] < marks.get("pruned", 0))

    def check(self, at: Position) -> Position:
        """``at`` as decoded from a token, refused unless it is one of ours."""
        if len(at) != 1 or not _is_int(at[0]):
            raise ValueError
        return at

    def last_key(self, rows: Sequence[Any]) -> int:
        """The position retention records after deleting ``rows`` (in read order)."""
        return int(rows[-1].txid)

    def prune_where(self, last: int) -> ColumnElement[bool]:
        return changes.c.txid <= last

    def pruned_by(self, conn: Connection) -> int | None:
        return None


class SqliteFeed(FeedDialect):
    tag = "s"

    def order(self) -> list[ColumnElement[Any]]:
        return [changes.c.seq]

    def start(self, conn: Connection) -> Position:
        return [max(_max_seq(conn), read_marks(conn).get("pruned", 0))]

    def page(
        self, conn: Connection, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> tuple[list[Any], list[Position], Position]:
        horizon = _max_seq(conn)  # one writer at a time: every seq up to it committed
        rows = list(
            conn.execute(
                select(changes)
                .where(changes.c.seq > at[0], changes.c.seq <= horizon, *where)
                .order_by(changes.c.seq)
                .limit(limit + 1)
            )
        )
        each: list[Position] = [[row.seq] for row in rows[:limit]]
        if len(rows) > limit:
            return rows[:limit], each, each[-1]
        return rows, each, [max(at[0], horizon)]

    def last_key(self, rows: Sequence[Any]) -> int:
        return int(rows[-1].seq)

    def prune_where(self, last: int) -> ColumnElement[bool]:
        return changes.c.seq <= last


class MariaFeed(FeedDialect):
    tag = "m"

    def txid(self) -> ColumnElement[Any] | None:
        tick: ColumnElement[Any] = _tick_value().scalar_subquery()
        return tick

    def tick(self) -> Any | None:
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(change_marks).values(name="tick", value=1)
        return stmt.on_duplicate_key_update(value=change_marks.c.value + 1)

    def start(self, conn: Connection) -> Position:
        return [_tick(conn), None]

    def check(self, at: Position) -> Position:
        if len(at) != 2 or not _is_int(at[0]) or not (at[1] is None or _is_int(at[1])):
            raise ValueError
        return at

    def page(
        self, conn: Connection, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> tuple[list[Any], list[Position], Position]:
        # Read first: every tick up to the committed counter is complete (its writer
        # held the counter's lock until its commit), and later ones are larger.
        horizon = _tick(conn)
        tick, seq = at
        after = (
            changes.c.txid > tick
            if seq is None
            else or_(changes.c.txid > tick, and_(changes.c.txid == tick, changes.c.seq > seq))
        )
        rows = list(
            conn.execute(
                select(changes)
                .where(after, changes.c.txid <= horizon, *where)
                .order_by(changes.c.txid, changes.c.seq)
                .limit(limit + 1)
            )
        )
        each: list[Position] = [[row.txid, row.seq] for row in rows[:limit]]
        if len(rows) > limit:
            return rows[:limit], each, each[-1]
        if horizon > tick:
            return rows, each, [horizon, None]
        return rows, each, each[-1] if each else at

    def expired(self, at: Position, marks: dict[str, int]) -> bool:
        pruned = marks.get("pruned", 0)
        return bool(at[0] < pruned or (at[0] == pruned and at[1] is not None))


class _Xid8(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class _Snapshot(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "pg_snapshot"


class PostgresFeed(FeedDialect):
    tag = "p"

    def txid(self) -> ColumnElement[Any] | None:
        return _current_xid()

    def start(self, conn: Connection) -> Position:
        return [_snapshot(conn), None, None]

    def check(self, at: Position) -> Position:
        if len(at) != 3 or not isinstance(at[0], str):
            raise ValueError
        if not (at[1] is None or isinstance(at[1], str)):
            raise ValueError
        for snapshot in at[:2]:
            if snapshot is not None:
                parse_snapshot(snapshot)
        if not (at[2] is None or _is_int(at[2])):
            raise ValueError
        return at

    def page(
        self, conn: Connection, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> tuple[list[Any], list[Position], Position]:
        lower, upper, after = at
        if upper is None:
            upper = _snapshot(conn)
        low_xmin = parse_snapshot(lower)[0]
        high_xmax = parse_snapshot(upper)[1]
        xid = cast(cast(changes.c.txid, Text), _Xid8())
        seen = func.pg_visible_in_snapshot(xid, cast(bindparam("lower", lower), _Snapshot()))
        now = func.pg_visible_in_snapshot(xid, cast(bindparam("upper", upper), _Snapshot()))
        rows = list(
            conn.execute(
                select(changes)
                .where(
                    changes.c.txid >= low_xmin,
                    changes.c.txid < high_xmax,
                    not_(seen),
                    now,
                    *([changes.c.seq > after] if after is not None else []),
                    *where,
                )
                .order_by(changes.c.seq)
                .limit(limit + 1)
            )
        )
        each: list[Position] = [[lower, upper, row.seq] for row in rows[:limit]]
        if len(rows) > limit:
            return rows[:limit], each, each[-1]
        return rows, each, [upper, None, None]

    def expired(self, at: Position, marks: dict[str, int]) -> bool:
        pruned = marks.get("pruned", 0)
        if not pruned:
            return False
        xmin, xmax, running = parse_snapshot(at[0])
        if pruned < xmin:  # every row deleted was committed before this snapshot
            return False
        by = marks.get("pruned_by", 0)
        # The snapshot saw the pruning transaction commit: it saw all that it deleted.
        return not (by < xmin or (by < xmax and by not in running))

    def pruned_by(self, conn: Connection) -> int | None:
        return int(conn.execute(select(_current_xid())).scalar_one())


def _current_xid() -> ColumnElement[Any]:
    return cast(cast(func.pg_current_xact_id(), Text), BigInteger)


def parse_snapshot(text: str) -> tuple[int, int, set[int]]:
    """``xmin:xmax:xip,...`` (PostgreSQL's ``pg_snapshot`` text) as numbers."""
    xmin, xmax, running = text.split(":")
    return int(xmin), int(xmax), {int(x) for x in running.split(",") if x}


FEEDS: dict[str, FeedDialect] = {
    "sqlite": SqliteFeed(),
    "postgresql": PostgresFeed(),
    "mysql": MariaFeed(),
    "mariadb": MariaFeed(),
}


def feed_for(dialect_name: str) -> FeedDialect:
    """The change log's side of the database of this SQLAlchemy dialect."""
    return FEEDS[dialect_name]


def read_marks(conn: Connection) -> dict[str, int]:
    return {name: int(value) for name, value in conn.execute(select(change_marks))}


def raise_mark(conn: Connection, name: str, value: int, *, highest: bool = True) -> None:
    """Set mark ``name`` to ``value`` (``highest``: unless it holds more already)."""
    current = conn.execute(
        select(change_marks.c.value).where(change_marks.c.name == name).with_for_update()
    ).scalar()
    if current is None:
        conn.execute(change_marks.insert().values(name=name, value=value))
    elif not highest or value > current:
        conn.execute(change_marks.update().where(change_marks.c.name == name).values(value=value))


def prune(conn: Connection, feed: FeedDialect, before: str) -> tuple[int, bool]:
    """Delete up to one batch of the oldest changes made before ``before`` (canonical
    time text), in read order, whole transactions at a time; record how far. Returns
    how many rows went, and whether older ones may be left."""
    order = feed.order()
    rows = list(
        conn.execute(
            select(changes.c.seq, changes.c.txid, changes.c.changed_at)
            .order_by(*order)
            .limit(_PRUNE_BATCH)
        )
    )
    old = []
    for row in rows:
        if row.changed_at >= before:
            break
        old.append(row)
    if not old:
        return 0, False
    last = feed.last_key(old)
    gone = int(conn.execute(delete(changes).where(feed.prune_where(last))).rowcount)
    raise_mark(conn, "pruned", last)
    by = feed.pruned_by(conn)
    if by is not None:
        raise_mark(conn, "pruned_by", by, highest=False)
    return gone, len(old) == _PRUNE_BATCH


def forget_all(conn: Connection, feed: FeedDialect) -> None:
    """Delete every change (clear_all), recording that tokens from before are stale."""
    order = feed.order()
    last = conn.execute(
        select(*order).order_by(*(column.desc() for column in order)).limit(1)
    ).first()
    conn.execute(delete(changes))
    if last is None:
        return
    raise_mark(conn, "pruned", int(last[0]))
    by = feed.pruned_by(conn)
    if by is not None:
        raise_mark(conn, "pruned_by", by, highest=False)


def _tick_value() -> Any:
    return select(change_marks.c.value).where(change_marks.c.name == "tick")


def _tick(conn: Connection) -> int:
    value = conn.execute(_tick_value()).scalar()
    return int(value or 0)


def _max_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(changes.c.seq), 0))).scalar_one())


def _snapshot(conn: Connection) -> str:
    return str(conn.execute(select(cast(func.pg_current_snapshot(), Text))).scalar_one())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def refuse_token(token: object, reason: str) -> InvalidInputError:
    return InvalidInputError("since", token, reason)
