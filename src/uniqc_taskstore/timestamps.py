"""Timestamps as the store writes them: aware UTC ISO-8601 text.

Every timestamp is written as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` so that text
order is instant order, in the same form the original implementation used
(``datetime.now(timezone.utc).isoformat()``). The oldest files hold naive local
times; :func:`normalize_timestamp` turns those into the canonical form.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import InvalidInputError


def utc_now() -> str:
    """The current instant in the canonical text form."""
    return format_timestamp(datetime.now(UTC))


def format_timestamp(moment: datetime) -> str:
    """Canonical text of ``moment``; a naive value is taken as local time."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str, field: str = "timestamp") -> datetime:
    """Aware UTC datetime of an ISO-8601 text; naive text is taken as local time."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, text, "not an ISO-8601 timestamp") from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC)


def normalize_timestamp(value: str | datetime, field: str = "timestamp") -> str:
    """Canonical text of an ISO-8601 text or datetime."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if not isinstance(value, str):
        raise InvalidInputError(field, value, "expected an ISO-8601 string or a datetime")
    return format_timestamp(parse_timestamp(value, field))
