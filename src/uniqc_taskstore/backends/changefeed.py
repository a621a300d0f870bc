"""What differs between databases in the change log: how a write names its
transaction, in what order committed changes are read, and how far a reader may read
without ever passing a change that has yet to commit (its visibility horizon).

- **SQLite** runs one writer at a time (``BEGIN IMMEDIATE``), so ``seq`` (AUTOINCREMENT)
  is handed out in commit order: a reader reads ``seq`` past its token.
- **MariaDB** (``innodb_autoinc_lock_mode`` 0 or 1; 1 is MariaDB's default) is read by
  ``seq`` (``AUTO_INCREMENT``) alone, and writers serialise nothing but what InnoDB
  already does. Every insert into ``changes`` is an ``INSERT ... SELECT`` (deletions
  too: a ``UNION ALL`` of one-row SELECTs of their ids), which in these modes holds the
  table's AUTO-INC lock until the statement ends: a ``seq`` is handed out and its row
  is in the index atomically with respect to every other change insert. So if ``seq``
  s is in the index, every smaller ``seq`` that will ever commit is already in it
  (perhaps uncommitted). A reader first reads the ``seq`` past its token *dirty*
  (``READ UNCOMMITTED``, a transaction of its own: :meth:`Database.read_after_dirty`),
  then, in a snapshot taken after that, which of them committed: its horizon is just
  below the smallest one still in flight (or the largest it saw, when none is), and it
  reads committed rows up to it. A row rolled back counts as in flight once and is
  gone the next time. Writes run no extra statement and ``txid`` stays NULL.
- **MariaDB/MySQL with ``innodb_autoinc_lock_mode`` = 2** (MySQL 8's default,
  "interleaved") hands ``AUTO_INCREMENT`` values out without that lock, so the above
  does not hold: there each write bumps a one-row counter (``change_marks.tick``) as its
  last statement before ``COMMIT`` and stamps its rows with it: the counter's row lock
  is held to commit, so ticks are taken in commit order, every tick up to the
  committed counter is complete, and a reader reads ``(txid, seq)`` past its token up
  to the counter it read first. This serialises commits (no group commit). The mode is
  read once per engine, at its first connection (:func:`note_autoinc_lock_mode`), and
  tokens say which design made them ("q": ``seq``; "m": ``(tick, seq)``).
- **PostgreSQL** stamps rows with the writing transaction's id and reads by snapshot:
  a token holds the snapshot its reader last read up to, and the next page is the
  rows whose transaction a new snapshot sees committed and the old one did not, in
  ``seq`` order. Nothing is serialised; a transaction that commits late is in the
  snapshot difference whenever it commits.

Within one page, changes of one task come in commit order on every database: a write
appends its rows after it holds the task's row lock, so a later writer of the same
task takes a larger ``seq`` (and in the tick design a larger tick).

A "m" token (the tick design's, e.g. from before schema version 15) read where the
``seq`` design is used resumes at the smallest ``seq`` of a change it had not read
(a row with no tick, or a larger ``(tick, seq)``), read dirty so that one in flight
counts: nothing is skipped, and changes between that one and the token's own
position are delivered again. A "q" token read where the tick design is used (the
server's mode changed to 2) raises :class:`ChangesExpiredError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from weakref import WeakKeyDictionary

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
from sqlalchemy.engine import Dialect
from sqlalchemy.types import UserDefinedType

from ..errors import ChangesExpiredError, InvalidInputError
from ..schema import change_marks, changes

if TYPE_CHECKING:
    from ..engine import Database

Position = list[Any]
"""Where a reader stands in the feed, as JSON-able values (the token's payload)."""

_PRUNE_BATCH = 1000


Page = tuple[list[Any], list[Position], Position, dict[str, int]]
"""A page as read: rows, the position after each, the position after them all, and
the change marks read after the rows."""


class FeedDialect:
    """One database's side of the change log."""

    tag: ClassVar[str]
    select_deletions: ClassVar[bool] = False
    """Whether deletions are recorded by ``INSERT ... SELECT`` (else ``VALUES``)."""
    pruned_mark: ClassVar[str] = "pruned"
    """The change mark retention raises to the last position it deleted."""

    def read_start(self, db: Database) -> Position:
        """The position of "now", read on ``db``."""
        return db.read(self.start)

    def read_page(
        self, db: Database, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> Page:
        """:meth:`page` read on ``db``, and the change marks read after it (a prune that
        deleted some of the rows before has marked it)."""

        def work(conn: Connection) -> Page:
            rows, each, after = self.page(conn, at, where, limit)
            return rows, each, after, read_marks(conn)

        return db.read(work)

    def decode(self, tag: object, at: Position) -> Position:
        """A token's payload, refused unless it is one of ours (ValueError)."""
        if tag != self.tag:
            raise ValueError
        return self.check(at)

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

    def also_pruned(self, conn: Connection, rows: Sequence[Any]) -> None:
        """Marks besides :attr:`pruned_mark` that deleting ``rows`` raises."""


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
    """MariaDB/MySQL with ``innodb_autoinc_lock_mode`` = 2: the commit tick."""

    tag = "m"

    def decode(self, tag: object, at: Position) -> Position:
        if tag == SeqFeed.tag:
            raise _design_changed()
        return super().decode(tag, at)

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
        return _tick_expired(at, marks)

    def last_key(self, rows: Sequence[Any]) -> int:
        # Rows of the seq design (no tick) come first and are never read here.
        ticks = [int(row.txid) for row in rows if row.txid is not None]
        return ticks[-1] if ticks else 0

    def prune_where(self, last: int) -> ColumnElement[bool]:
        return or_(changes.c.txid.is_(None), changes.c.txid <= last)


def _tick_expired(at: Position, marks: dict[str, int]) -> bool:
    pruned = marks.get("pruned", 0)
    return bool(at[0] < pruned or (at[0] == pruned and at[1] is not None))


def _design_changed() -> ChangesExpiredError:
    return ChangesExpiredError(
        "this change-feed token was made while the MariaDB server ran with another "
        "innodb_autoinc_lock_mode (the feed is ordered differently in mode 2); re-read "
        "the tasks you track and start again with changes(since=None)"
    )


WINDOW = 1000
"""How many ``seq`` past its position a MariaDB reader reads dirty (at least its page)."""
START_WINDOW = 10_000
"""How many ``seq`` :meth:`SeqFeed.read_start` reads dirty at a time, newest first:
"now" is below the smallest in flight among them. While a window holds a change in
flight, the one before it is read too, until a window is all committed: a transaction
that writes more changes than a window (an import with a large ``batch_size``) is
never placed behind a fresh token. One that holds a single uncommitted change while
a whole window of later changes commits could be."""


class SeqFeed(FeedDialect):
    """MariaDB/MySQL with ``innodb_autoinc_lock_mode`` 0 or 1: ``seq`` order, with a
    dirty read for the horizon (see the module docstring)."""

    tag = "q"
    select_deletions = True
    pruned_mark = "pruned_seq"

    def txid(self) -> ColumnElement[Any] | None:
        return None

    def order(self) -> list[ColumnElement[Any]]:
        return [changes.c.seq]

    def decode(self, tag: object, at: Position) -> Position:
        if tag == MariaFeed.tag:
            tick, seq = MariaFeed().check(at)
            return ["m", tick, seq]
        return super().decode(tag, at)

    def read_start(self, db: Database) -> Position:
        def work(conn: Connection, seen: list[int]) -> tuple[int, list[int], list[int]]:
            pruned = read_marks(conn).get(self.pruned_mark, 0)
            return pruned, seen, _in_flight(conn, min(seen) - 1, seen) if seen else []

        below = ""
        newest: int | None = None
        lowest: int | None = None  # the smallest seq seen in flight (windows go back)
        while True:
            dirty = f"SELECT seq FROM changes{below} ORDER BY seq DESC LIMIT {START_WINDOW}"
            pruned, seen, flight = db.read_after_dirty(dirty, work)
            if newest is None:
                newest = max(seen, default=None)
            if flight:
                lowest = min(flight)
            if not flight or len(seen) < START_WINDOW:
                break
            below = f" WHERE seq < {min(seen)}"
        if lowest is not None:
            return [lowest - 1]
        return [pruned] if newest is None else [max(newest, pruned)]

    def read_page(
        self, db: Database, at: Position, where: list[ColumnElement[bool]], limit: int
    ) -> Page:
        if len(at) == 3:  # a tick token: where it resumes in seq order
            at = [db.read_after_dirty(_resume_sql(at[1], at[2]), lambda conn, seen: seen[0])]
        after = int(at[0])
        window = max(limit + 1, WINDOW)
        dirty = f"SELECT seq FROM changes WHERE seq > {after} ORDER BY seq LIMIT {window}"

        def work(conn: Connection, seen: list[int]) -> Page:
            if not seen:
                return [], [], [after], read_marks(conn)
            flight = _in_flight(conn, after, seen)
            horizon = min(flight) - 1 if flight else max(seen)
            rows: list[Any] = []
            if horizon > after:
                rows = list(
                    conn.execute(
                        select(changes)
                        .where(changes.c.seq > after, changes.c.seq <= horizon, *where)
                        .order_by(changes.c.seq)
                        .limit(limit + 1)
                    )
                )
            marks = read_marks(conn)
            each: list[Position] = [[row.seq] for row in rows[:limit]]
            if len(rows) > limit:
                return rows[:limit], each, each[-1], marks
            return rows, each, [max(after, horizon)], marks

        return db.read_after_dirty(dirty, work)

    def check(self, at: Position) -> Position:
        if len(at) != 1 or not _is_int(at[0]) or at[0] < 0:
            raise ValueError
        return at

    def expired(self, at: Position, marks: dict[str, int]) -> bool:
        pruned = marks.get(self.pruned_mark, 0)
        if len(at) == 3:
            # A tick token has read no row without a tick: any such row pruned (they
            # all have a seq above the one v15 recorded) was lost to it.
            return _tick_expired(at[1:], marks) or pruned > marks.get("seq_start", 0)
        return bool(at[0] < pruned)

    def last_key(self, rows: Sequence[Any]) -> int:
        return int(rows[-1].seq)

    def prune_where(self, last: int) -> ColumnElement[bool]:
        return changes.c.seq <= last

    def also_pruned(self, conn: Connection, rows: Sequence[Any]) -> None:
        # Rows of the tick design deleted: tick tokens older than them expire.
        ticks = [int(row.txid) for row in rows if row.txid is not None]
        if ticks:
            raise_mark(conn, "pruned", max(ticks))


def _in_flight(conn: Connection, after: int, seen: list[int]) -> list[int]:
    """Which of ``seen`` (read dirty, all past ``after``) this snapshot does not see
    committed: in flight, or rolled back."""
    committed = set(
        conn.execute(
            select(changes.c.seq).where(changes.c.seq > after, changes.c.seq <= max(seen))
        ).scalars()
    )
    return [seq for seq in seen if seq not in committed]


def _resume_sql(tick: int, seq: int | None) -> str:
    """Dirty: the seq position just before the first change a tick token has not read
    (a row without a tick, or a larger ``(tick, seq)``); past every row if none."""
    later = f"txid > {int(tick)}"
    if seq is not None:
        later += f" OR (txid = {int(tick)} AND seq > {int(seq)})"
    return (
        "SELECT COALESCE("
        f"(SELECT MIN(seq) - 1 FROM changes WHERE txid IS NULL OR {later}), "
        "(SELECT MAX(seq) FROM changes), 0)"
    )


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
    "mysql": SeqFeed(),
    "mariadb": SeqFeed(),
    "mysql-tick": MariaFeed(),
    "mariadb-tick": MariaFeed(),
}

_AUTOINC_LOCK_MODES: WeakKeyDictionary[Dialect, int] = WeakKeyDictionary()


def note_autoinc_lock_mode(dialect: Dialect, mode: int) -> None:
    """Record the server's ``innodb_autoinc_lock_mode`` for ``dialect``'s engine (read
    at its first connection): 2 chooses the tick design."""
    _AUTOINC_LOCK_MODES[dialect] = mode


def autoinc_lock_mode(dialect: Dialect) -> int | None:
    return _AUTOINC_LOCK_MODES.get(dialect)


def feed_key(dialect: Dialect) -> str:
    """The :data:`FEEDS` key of this engine's dialect: on MariaDB/MySQL, which design
    its server's ``innodb_autoinc_lock_mode`` allows."""
    name = dialect.name
    if name in ("mysql", "mariadb") and _AUTOINC_LOCK_MODES.get(dialect) == 2:
        return f"{name}-tick"
    return name


def feed_for(dialect: Dialect | str) -> FeedDialect:
    """The change log's side of the database of this SQLAlchemy dialect (or
    :func:`feed_key`)."""
    return FEEDS[dialect if isinstance(dialect, str) else feed_key(dialect)]


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
    raise_mark(conn, feed.pruned_mark, last)
    feed.also_pruned(conn, old)
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
    seq_design = feed.pruned_mark != "pruned"
    ticks = conn.execute(select(func.max(changes.c.txid))).scalar() if seq_design else None
    conn.execute(delete(changes))
    if last is None or last[0] is None:
        return
    raise_mark(conn, feed.pruned_mark, int(last[0]))
    if ticks is not None:
        raise_mark(conn, "pruned", int(ticks))
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
