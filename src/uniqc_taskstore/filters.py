"""Which tasks a call is about, and in what order: the one :class:`TaskFilter`.

Every listing, count, summary, stream, bulk and retention call takes a
:class:`TaskFilter` (or its fields as keyword arguments) and turns it into SQL
here, with :func:`filter_clauses`, for live and archived tasks alike. Sorts and
their opaque page cursors live here too (:class:`Sort`, :func:`encode_cursor`).

Which index serves what (see ``schema.py``): ``status`` the status index,
``backend`` the platform index for a platform (``platform = 'x'``) or the backend
index for a device (the label, and its sub-labels as a range ``backend >= 'x:y:' AND
backend < 'x:y;'``), ``name`` the name index, ``tags`` the (key, value, submit_time,
task_id) tag index (in sort order, :func:`task_source`), time ranges and sorts the
submit-time / (update_time, task_id) indexes. ``search`` is a substring match of the
folded text the store writes (``search_key``) and scans.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypedDict, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Table,
    Text,
    and_,
    exists,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .column_types import IdText, SearchText, Timestamp
from .errors import InvalidInputError
from .model import (
    MAX_ID_LENGTH,
    TaskStatus,
    validate_id,
    validate_optional_text,
    validate_statuses,
    validate_tag_value,
)
from .schema import (
    archived_task_shards,
    archived_task_tags,
    archived_tasks,
    task_shards,
    task_tags,
    tasks,
)
from .search import fold
from .timestamps import format_timestamp, parse_timestamp

StatusFilter = TaskStatus | str | Iterable[TaskStatus | str] | None
"""One status or several."""

TimeBound = datetime | str | None
"""A ``datetime`` or an ISO-8601 string; naive means UTC."""

OrderBy = Literal["submit_time", "update_time"]
SORT_COLUMNS: tuple[str, ...] = ("submit_time", "update_time")


class TaskTables(NamedTuple):
    """The tables of one side of the store: live or archived."""

    tasks: Table
    shards: Table
    tags: Table


LIVE = TaskTables(tasks, task_shards, task_tags)
ARCHIVED = TaskTables(archived_tasks, archived_task_shards, archived_task_tags)


class FilterArgs(TypedDict, total=False):
    """:class:`TaskFilter`'s fields, accepted as keyword arguments by every call."""

    status: StatusFilter
    backend: str | None
    submitted_after: TimeBound
    submitted_before: TimeBound
    updated_after: TimeBound
    updated_before: TimeBound
    tags: Mapping[str, str | None] | None
    name: str | None
    search: str | None


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a call is about; every given field must match (None: any).

    - ``status``: one status or several.
    - ``backend``: a device label (``originq:WK_C180``) or a platform (``originq``
      matches all of its devices); case-sensitive.
    - ``submitted_after`` / ``submitted_before`` and ``updated_after`` /
      ``updated_before``: a half-open range, ``after <= time < before``, so
      consecutive windows neither overlap nor leave gaps. A ``datetime`` or an
      ISO-8601 string; a naive one means UTC, as everywhere in the store.
    - ``tags``: every ``key: value`` pair must be on the task; a value of None
      only requires the key.
    - ``name``: exactly this name.
    - ``search``: a substring of the task id, its platform job ids, its backend or
      its name, ignoring case by Unicode case folding and nothing else (accents,
      symbols, ``%`` and ``_`` count as they are; :mod:`uniqc_taskstore.search`).

    Fields are checked and normalised when the filter is made (statuses to a tuple
    of :class:`TaskStatus`, times to canonical UTC text); a bad one raises
    :class:`InvalidInputError` naming it: a status that is not one (or a mapping or
    bytes for several), an unparseable time, tags that are not a mapping of
    non-empty strings to strings or None, a ``search`` that is not text without NUL
    of at most 255 characters.
    """

    status: StatusFilter = None
    backend: str | None = None
    submitted_after: TimeBound = None
    submitted_before: TimeBound = None
    updated_after: TimeBound = None
    updated_before: TimeBound = None
    tags: Mapping[str, str | None] | None = None
    name: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None:
            statuses = tuple(dict.fromkeys(validate_statuses(self.status)))
            object.__setattr__(self, "status", statuses)
        if self.backend is not None:
            validate_id(self.backend, "backend")
        for name in ("submitted_after", "submitted_before", "updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, filter_timestamp(value, name))
        if self.tags is not None:
            if not isinstance(self.tags, Mapping):
                raise InvalidInputError("tags", self.tags, "must be a mapping of key to value")
            checked: dict[str, str | None] = {}
            for key, value in self.tags.items():
                validate_id(key, "tags key")
                if value is not None:
                    validate_tag_value(value, f"tags[{key!r}]")
                checked[key] = value
            object.__setattr__(self, "tags", checked)
        if self.name is not None:
            validate_id(self.name, "name")
        if self.search is not None:
            validate_optional_text(self.search, "search")
            if len(self.search) > MAX_ID_LENGTH:
                raise InvalidInputError("search", self.search, "longer than 255 characters")

    @property
    def statuses(self) -> tuple[TaskStatus, ...] | None:
        """The wanted statuses, or None for any."""
        return cast("tuple[TaskStatus, ...] | None", self.status)

    @property
    def tag_pairs(self) -> dict[str, str | None]:
        """The wanted tags (empty for any)."""
        return dict(self.tags or {})


_FIELDS = frozenset(f.name for f in fields(TaskFilter))


def make_filter(filter: TaskFilter | None, criteria: Mapping[str, Any]) -> TaskFilter:
    """``filter`` with the keyword arguments ``criteria`` applied on top (they win)."""
    unknown = sorted(set(criteria) - _FIELDS)
    if unknown:
        raise InvalidInputError(
            unknown[0], criteria[unknown[0]], f"unknown filter; known: {', '.join(sorted(_FIELDS))}"
        )
    if filter is None:
        return TaskFilter(**criteria)
    if not isinstance(filter, TaskFilter):
        raise InvalidInputError("filter", filter, "expected a TaskFilter or None")
    return replace(filter, **criteria) if criteria else filter


def filter_timestamp(value: object, field: str) -> str:
    """Canonical UTC text of a datetime or ISO-8601 string (naive: UTC); an instant
    outside the storable range is refused, naming ``field``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInputError(field, value, "not an ISO-8601 timestamp") from exc
    else:
        raise InvalidInputError(field, value, "must be a datetime or an ISO-8601 string")
    if moment.tzinfo is not None and moment.utcoffset() is None:
        raise InvalidInputError(field, value, "has a time zone without an offset")
    return format_timestamp(parse_timestamp(format_timestamp(moment), field))


# -- WHERE -------------------------------------------------------------------------------


def filter_clauses(
    f: TaskFilter, side: TaskTables = LIVE, *, skip_tag: str | None = None
) -> list[ColumnElement[bool]]:
    """The WHERE clauses (joined by AND) selecting ``f``'s tasks from ``side.tasks``
    (without the tag ``skip_tag``, which :func:`task_source` matches by a join)."""
    t = side.tasks
    clauses: list[ColumnElement[bool]] = []
    if f.statuses is not None and len(f.statuses) == 1:
        clauses.append(exactly(t.c.status, literal(f.statuses[0].value, t.c.status.type)))
    elif f.statuses is not None:
        clauses.append(t.c.status.in_([s.value for s in f.statuses]))
    if f.backend is not None:
        clauses.append(backend_matches(t, f.backend))
    bounds = (
        ("submit_time", f.submitted_after, f.submitted_before),
        ("update_time", f.updated_after, f.updated_before),
    )
    for column, after, before in bounds:
        if after is not None:
            clauses.append(t.c[column] >= after)
        if before is not None:
            clauses.append(t.c[column] < before)
    for key, value in f.tag_pairs.items():
        if key == skip_tag:
            continue
        # IN (uncorrelated) rather than EXISTS, so the (key, value, submit_time,
        # task_id) index finds the tagged ids first instead of probing once per task.
        match = [side.tags.c["key"] == key]
        if value is not None:
            match.append(side.tags.c["value"] == value)
        clauses.append(t.c.task_id.in_(select(side.tags.c.task_id).where(*match)))
    if f.name is not None:
        clauses.append(t.c.name == f.name)
    if f.search is not None:
        # The folded term in the folded text the store wrote (see search.py): exact,
        # the same on every database.
        term = literal(fold(f.search), SearchText)
        clauses.append(
            or_(
                holds(t.c.search_key, term),
                exists().where(
                    side.shards.c.uniqc_task_id == t.c.task_id,
                    holds(side.shards.c.search_key, term),
                ),
            )
        )
    return clauses


def backend_matches(table: FromClause, backend: str) -> ColumnElement[bool]:
    """``backend`` itself or any of its devices: ``originq`` matches ``originq:WK_C180``.

    A platform (no ``:``) is the ``platform`` column, so that ``(platform,
    submit_time, task_id)`` serves the filter and the sort (v10). A device label
    (``ibm:dev1``, which also matches ``ibm:dev1:*``) is the label or a range of
    ``backend`` in code-point order (``';'`` follows ``':'``) rather than LIKE, which
    ignores case on SQLite; ``(backend, submit_time, task_id)`` finds them."""
    return or_(*backend_branches(table, backend))


def backend_branches(table: FromClause, backend: str) -> list[ColumnElement[bool]]:
    """:func:`backend_matches` as alternatives each of which one index serves in sort
    order: the platform; or the device label itself, and its sub-labels (a range, in
    practice empty). A page of a device reads each alternative's index in order and
    merges the two (``queries.select_tasks``) rather than sorting the device's tasks."""
    if ":" not in backend:
        return [exactly(table.c.platform, literal(backend, IdText()))]
    column = table.c.backend
    return [
        exactly(column, literal(backend, IdText())),
        and_(column >= literal(backend + ":", IdText()), column < literal(backend + ";", IdText())),
    ]


class TaskSource(NamedTuple):
    """Where a filtered, sorted read of tasks comes from: the FROM, the WHERE, and the
    table whose sort column and ``task_id`` order the rows (and carry the keyset)."""

    from_: FromClause
    where: list[ColumnElement[bool]]
    order: FromClause


def task_source(f: TaskFilter, sort: Sort, side: TaskTables = LIVE) -> TaskSource:
    """The tasks of ``f`` for a read in ``sort`` order.

    With a ``key: value`` tag and the submit-time sort, the read starts from that tag's
    rows, which carry their task's ``submit_time`` (v10): ``(key, value, submit_time,
    task_id)`` yields them in sort order and each task is then one primary-key lookup,
    so a page reads ``limit`` entries and sorts nothing. Otherwise: ``side.tasks`` and
    :func:`filter_clauses`."""
    t = side.tasks
    pair = next(((k, v) for k, v in f.tag_pairs.items() if v is not None), None)
    if pair is None or sort.order_by != "submit_time":
        return TaskSource(t, filter_clauses(f, side), t)
    key, value = pair
    tag = side.tags.alias("uniqc_sort_tag")
    return TaskSource(
        tag.join(t, t.c.task_id == tag.c.task_id),
        [
            tag.c["key"] == literal(key, IdText()),
            tag.c["value"] == literal(value, IdText()),
            *filter_clauses(f, side, skip_tag=key),
        ],
        tag,
    )


class exactly(FunctionElement[bool]):
    """``column = value``, for a filter whose index continues with the sort key.

    On MariaDB it is written as the range ``column >= value AND column <= value``: given
    ``=``, MariaDB reads the index by ``ref`` on that column alone, from the newest entry
    down to a keyset page's position (a page 1,000 deep read 50,000 entries), instead of
    seeking to ``(value, submit_time)``; given the range, it seeks (checked with
    ``ANALYZE`` on 300,000 tasks). SQLite and PostgreSQL get ``=``, which SQLite needs
    to see that the index is in sort order."""

    name = "uniqc_exactly"
    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison: no ``= 1`` where booleans are integers


@compiles(exactly)
def _exactly(element: exactly, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} = {value}"


@compiles(exactly, "mysql")
@compiles(exactly, "mariadb")
def _exactly_mysql(element: exactly, compiler: SQLCompiler, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} >= {value} AND {column} <= {value})"


class holds(FunctionElement[bool]):
    """Whether text ``needle`` occurs in text ``haystack``, compared code point for code
    point (no collation, no pattern characters): ``instr`` on SQLite, ``strpos`` on
    PostgreSQL, ``LOCATE`` of the UTF-8 bytes on MariaDB (a byte match of valid UTF-8
    is a character match)."""

    name = "uniqc_holds"
    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True


@compiles(holds)
def _holds(element: holds, compiler: SQLCompiler, **kw: Any) -> str:
    haystack, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"instr({haystack}, {needle}) > 0"


@compiles(holds, "postgresql")
def _holds_postgresql(element: holds, compiler: SQLCompiler, **kw: Any) -> str:
    haystack, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"strpos({haystack}, {needle}) > 0"


@compiles(holds, "mysql")
@compiles(holds, "mariadb")
def _holds_mysql(element: holds, compiler: SQLCompiler, **kw: Any) -> str:
    haystack, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"LOCATE(CAST({needle} AS BINARY), CAST({haystack} AS BINARY)) > 0"


# -- ORDER BY and cursors ------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """An order of tasks: by a time column, ties broken by task id in the same direction."""

    order_by: str = "submit_time"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.order_by not in SORT_COLUMNS:
            raise InvalidInputError(
                "order_by", self.order_by, f"must be one of {', '.join(SORT_COLUMNS)}"
            )
        if not isinstance(self.descending, bool):
            raise InvalidInputError("descending", self.descending, "must be True or False")

    def order_clauses(self, table: FromClause) -> list[Any]:
        """ORDER BY for this sort."""
        columns = (table.c[self.order_by], table.c.task_id)
        return [c.desc() if self.descending else c.asc() for c in columns]

    def after(self, table: FromClause, value: Any, task_id: Any) -> ColumnElement[bool]:
        """Rows that come after the row ``(value, task_id)`` in this order (keyset).

        ``value`` is the sort column's value as the row stores it (or a parameter of
        type :data:`STORED_TIME`): on SQLite it is compared as the stored text,
        whatever it holds (legacy text that is no timestamp, or one in another form,
        sorts where its text sorts), so that every row is read exactly once."""
        # The leading bound (column <= value) repeats what the OR implies, so that every
        # database seeks the (filter, sort column, task_id) index to the position instead
        # of filtering the pages before it (PostgreSQL and MariaDB do not split the OR).
        column = table.c[self.order_by]

        def at() -> Any:
            return value if not isinstance(value, str) else literal(value, STORED_TIME)

        if self.descending:
            return and_(
                column <= at(),
                or_(column < at(), and_(column == at(), table.c.task_id < task_id)),
            )
        return and_(
            column >= at(), or_(column > at(), and_(column == at(), table.c.task_id > task_id))
        )

    def key(self, row: Mapping[Any, Any]) -> tuple[Any, str]:
        """The keyset position of a stored row: its sort column as stored, its id."""
        return (row[self.order_by], row["task_id"])


STORED_TIME: Any = Timestamp().with_variant(Text(), "sqlite")
"""A keyset position's time: bound as it is stored (text, on SQLite)."""


# A cursor is base64 (URL-safe, padded) of its JSON payload followed by a check: a
# BLAKE2b digest of the payload. The key is fixed, so the check is no secret (a
# forger who reads this code can make one); it makes any edit, a flipped bit or a
# hand-made cursor fail, and a cursor can only ever name a position in the order and
# filter it was made for, which the caller could have asked for anyway.
_CURSOR_VERSION = 2
_CURSOR_KEY = b"uniqc-taskstore page cursor"
_CHECK_BYTES = 16


def filter_fingerprint(f: TaskFilter, table: str) -> str:
    """A short digest of what a page reads: the (normalised) filter and the table."""
    fields_ = [
        table,
        [s.value for s in f.statuses] if f.statuses is not None else None,
        f.backend,
        f.submitted_after,
        f.submitted_before,
        f.updated_after,
        f.updated_before,
        sorted(f.tag_pairs.items()) if f.tags is not None else None,
        f.name,
        f.search,
    ]
    raw = json.dumps(fields_, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def encode_cursor(sort: Sort, fingerprint: str, value: str, task_id: str) -> str:
    """An opaque cursor: the page ends at the stored ``(value, task_id)`` in ``sort``,
    for the filter and table of ``fingerprint`` (:func:`filter_fingerprint`)."""
    payload = json.dumps(
        [_CURSOR_VERSION, sort.order_by, sort.descending, fingerprint, value, task_id],
        separators=(",", ":"),
    ).encode("ascii")
    return base64.urlsafe_b64encode(payload + _check(payload)).decode("ascii")


def decode_cursor(cursor: object, sort: Sort, fingerprint: str) -> tuple[str, str]:
    """The stored ``(value, task_id)`` a cursor points after. Refuses a cursor that
    this store did not make or that was altered (its check fails), and one made for
    another sort, filter or table, each with :class:`InvalidInputError`."""
    if not isinstance(cursor, str):
        raise InvalidInputError("cursor", cursor, "must be a string from next_cursor")
    foreign = InvalidInputError(
        "cursor", cursor, "is not a cursor this store made (altered or damaged)"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (ValueError, binascii.Error, UnicodeError):
        raise foreign from None
    # The one encoding of these bytes: no ignored characters, padding or spare bits.
    payload, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if (
        len(raw) <= _CHECK_BYTES
        or base64.urlsafe_b64encode(raw).decode("ascii") != cursor
        or not hmac.compare_digest(check, _check(payload))
    ):
        if _is_old_cursor(raw):
            raise InvalidInputError(
                "cursor",
                cursor,
                "was made by an older version of uniqc-taskstore; start again from the first page",
            )
        raise foreign
    try:
        version, order_by, descending, made_for, value, task_id = json.loads(payload)
    except (ValueError, TypeError, RecursionError, UnicodeError):
        raise foreign from None
    if version != _CURSOR_VERSION or not isinstance(value, str) or not isinstance(task_id, str):
        raise foreign
    if (order_by, descending) != (sort.order_by, sort.descending):
        raise InvalidInputError(
            "cursor",
            cursor,
            f"was made for order_by={order_by!r}, descending={descending!r}; "
            "use the same sort for every page",
        )
    if made_for != fingerprint:
        raise InvalidInputError(
            "cursor",
            cursor,
            "was made for another filter (or for the other of live and archived tasks); "
            "pass the same filter for every page",
        )
    return value, task_id


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_BYTES, key=_CURSOR_KEY).digest()


def _is_old_cursor(raw: bytes) -> bool:
    """Whether ``raw`` is a cursor of the first form: JSON ``[order_by, descending,
    value, task_id]`` without a check."""
    try:
        old = json.loads(raw)
    except (ValueError, TypeError, RecursionError, UnicodeError):
        return False
    return isinstance(old, list) and len(old) == 4 and old[0] in SORT_COLUMNS
