"""Timestamps as the store writes them: aware UTC ISO-8601 text.

Every timestamp is written as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` so that text
order is instant order, in the same form the original implementation used
(``datetime.now(timezone.utc).isoformat()``).

**A naive time means UTC**, wherever it comes from: ``save``, filters, cursors, the
CLI, a row read back (:func:`canonical_timestamp`, :func:`parse_timestamp`,
:func:`format_timestamp`). The one exception ran once, in the past: schema version 6
rewrote the naive times of the original's oldest files, which its code wrote as the
machine's local time, with :func:`normalize_timestamp` (kept as it ran).

The instants that can be stored are those of :class:`datetime` in UTC, from
:data:`EARLIEST` to :data:`LATEST`, on every database. A naive local time within a
day of either end can name an instant outside that range (``0001-01-01T00:00:00``
under UTC+8 is a moment of year 0); the v6 rewrite clamps such a value to the
nearest end, so that a file holding one still opens. Handed in by a caller, an
instant outside the range is refused with :class:`InvalidInputError`.

Legacy files may also hold text that is no timestamp at all (``sometime
yesterday``): the original implementation stored whatever it was given.
:func:`repair_times` is the one rule for those rows, applied wherever such a row is
read (``get``/``list``, ``copy_tasks``), so that saving the task again stores the
repaired form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidInputError

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
EPOCH = "1970-01-01T00:00:00.000000+00:00"
"""The fallback of :func:`repair_times` for a row none of whose times can be read."""

UNREADABLE_TIMES_KEY = "unreadable_timestamps"
"""Metadata key under which :func:`repair_times` keeps the original text it replaced."""

_FALLBACKS = {
    "submit_time": ("update_time", "archived_at"),
    "update_time": ("submit_time", "archived_at"),
    "archived_at": ("update_time", "submit_time"),
}


CANONICAL_FORM = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00"
)
"""The form :func:`format_timestamp` writes (what a date in it means is checked apart)."""


def utc_now() -> str:
    """The current instant in the canonical text form."""
    return datetime.now(UTC).isoformat(timespec="microseconds")  # in UTC already


def format_timestamp(moment: datetime) -> str:
    """Canonical text of ``moment``; a naive value is taken as UTC, and one outside
    :data:`EARLIEST`..:data:`LATEST` is clamped to the nearest end."""
    return _to_utc(moment, clamp=True).isoformat(timespec="microseconds")


def parse_timestamp(text: str, field: str = "timestamp") -> datetime:
    """Aware UTC datetime of an ISO-8601 text; naive text is taken as UTC.

    Raises :class:`InvalidInputError` for text that is not ISO-8601 or names an
    instant outside :data:`EARLIEST`..:data:`LATEST`."""
    moment = _parse(text, field)
    try:
        return _to_utc(moment, clamp=False)
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(
            field,
            text,
            f"is outside the storable range {EARLIEST.isoformat()} to {LATEST.isoformat()}",
        ) from exc


def canonical_timestamp(value: str | datetime, field: str = "timestamp") -> str:
    """Canonical text of an ISO-8601 text or datetime (naive: UTC), for a value to
    write or read from storage: an instant outside the storable range is clamped to
    its nearest end. Text that is not ISO-8601 raises :class:`InvalidInputError`."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if not isinstance(value, str):
        raise InvalidInputError(field, value, "expected an ISO-8601 string or a datetime")
    moment = _parse(value, field)
    if CANONICAL_FORM.fullmatch(value):
        return value  # already canonical: every write path hands such text in (twice)
    return format_timestamp(moment)


def normalize_timestamp(value: str | datetime, field: str = "timestamp") -> str:
    """The v6 migration's reading of the original's oldest files, kept as it ran: a
    naive value is the local time of the machine that wrote it (clamped to the
    storable range). Nothing but that migration uses it; see :func:`canonical_timestamp`."""
    if isinstance(value, str) and not CANONICAL_FORM.fullmatch(value):
        moment = _parse(value, field)
        if moment.tzinfo is None:
            return _to_utc(moment, clamp=True, naive_is_local=True).isoformat(
                timespec="microseconds"
            )
    return canonical_timestamp(value, field)


def is_canonical_timestamp(value: object) -> bool:
    """True for None or text in the canonical form naming a real instant: a stored
    time that :func:`repair_times` and :func:`canonical_timestamp` keep as it is."""
    if value is None:
        return True
    if type(value) is not str or CANONICAL_FORM.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_readable_timestamp(value: object) -> bool:
    """True for a datetime or an ISO-8601 text (which :func:`canonical_timestamp` takes)."""
    if isinstance(value, datetime):
        return True
    try:
        canonical_timestamp(value)  # type: ignore[arg-type]
    except InvalidInputError:
        return False
    return True


def repair_times(times: Mapping[str, Any], metadata: Any) -> tuple[dict[str, Any], Any]:
    """The rule for stored text that is no timestamp (``sometime yesterday``).

    ``times`` maps ``submit_time``, ``update_time`` and (archived rows)
    ``archived_at`` to their stored values. Each unreadable one is read as the first
    readable of the others (submit time as update time, update time as submit time,
    archive time as update time), or as :data:`EPOCH` when none is readable. When
    ``metadata`` is a dict, ``metadata[UNREADABLE_TIMES_KEY][name]`` records
    ``{"stored": original text, "read_as": replacement}``, and a recorded
    replacement for the same stored text is reused: a task saved again (which stamps
    a new update time but keeps the stored submit time) or copied reads the same.
    Shards have no metadata; the shards the original implementation wrote hold
    their task's times. Returns the times and metadata; both are unchanged when
    every time is readable.
    """
    unreadable = {
        name: value
        for name, value in times.items()
        if value is not None and not is_readable_timestamp(value)
    }
    if not unreadable:
        return dict(times), metadata
    kept = metadata.get(UNREADABLE_TIMES_KEY) if isinstance(metadata, dict) else None
    kept = dict(kept) if isinstance(kept, dict) else {}
    readable = {n: v for n, v in times.items() if v is not None and n not in unreadable}
    repaired = dict(times)
    for name, value in unreadable.items():
        record = kept.get(name)
        if (
            isinstance(record, dict)
            and record.get("stored") == str(value)
            and is_readable_timestamp(record.get("read_as"))
        ):
            repaired[name] = canonical_timestamp(record["read_as"])
        else:
            repaired[name] = next(
                (
                    canonical_timestamp(readable[o])
                    for o in _FALLBACKS.get(name, ())
                    if o in readable
                ),
                EPOCH,
            )
        kept[name] = {"stored": str(value), "read_as": repaired[name]}
    if isinstance(metadata, dict):
        metadata = {**metadata, UNREADABLE_TIMES_KEY: kept}
    return repaired, metadata


def _parse(text: object, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, text, "not an ISO-8601 timestamp") from exc


def _to_utc(moment: datetime, *, clamp: bool, naive_is_local: bool = False) -> datetime:
    if moment.tzinfo is None and not naive_is_local:
        return moment.replace(tzinfo=UTC)
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        # Only possible within a day of the calendar's ends, where the offset to
        # UTC carries the instant past year 1 or year 9999.
        if not clamp:
            raise
        return EARLIEST if moment.year == 1 else LATEST
