"""The filter options every command that picks tasks by criteria shares (``list``,
``stats``, ``watch``, ``prune``, ``export``, and the bulk ``archive``, ``restore``,
``delete``, ``tag``), and the duration parser behind the time options.

:func:`filter_options` adds ``--status``, ``--backend``, ``--since``, ``--until``,
``--updated-since``, ``--updated-before``, ``--tag``, ``--name`` and ``--search`` to a
command and hands it one
:class:`TaskFilter` as ``task_filter``; a value the filter refuses is a usage error
naming the option.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from ..errors import InvalidInputError
from ..filters import TaskFilter
from .completion import complete_statuses
from .options import parse_statuses

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
"""Seconds per unit; case-sensitive, so ``m`` is minutes and ``M`` is refused."""
_WORDS = {
    **dict.fromkeys(("sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
    **dict.fromkeys(("wk", "wks", "week", "weeks"), "w"),
}
"""Spelled-out units (any case: they cannot be mistaken for one another)."""
_MONTHS = ("M", "mo", "mon", "mos", "month", "months")
_YEARS = ("y", "Y", "yr", "yrs", "year", "years")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)")
_SEPARATOR = re.compile(r"[\s,]*(?:and)?[\s,]*")
_AGO = re.compile(r"\s+ago\s*$", re.IGNORECASE)
DURATION_HELP = "a duration such as 30d, 12h, 90m (minutes), 45s, 2w, 1d12h or '3 days'"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``2h``, ``90m`` (minutes), ``45s``, ``1w``, several (``1d12h``) or
    spelled out (``3 days``, ``1 hour 30 minutes``) as a timedelta.

    Units are case-sensitive and unambiguous: ``M``, ``mo`` and ``y`` (months and
    years, which have no fixed length) are refused with the weeks and days to write
    instead, and ``2D`` is refused rather than guessed. Raises ValueError saying what
    to write."""
    compact = text.strip()
    position, seconds = 0, 0.0
    if not compact:
        raise ValueError(f"not a duration: {text!r}; write {DURATION_HELP}")
    while position < len(compact):
        match = _PART.match(compact, position)
        if match is None:
            raise ValueError(f"not a duration: {text!r}; write {DURATION_HELP}")
        number, unit = match.groups()
        seconds += float(number) * _unit_seconds(text, number, unit)
        position = _SEPARATOR.match(compact, match.end()).end()  # type: ignore[union-attr]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"not a duration: {text!r} is longer than the calendar") from None


def _unit_seconds(text: str, number: str, unit: str) -> int:
    if unit in _UNITS:
        return _UNITS[unit]
    if unit.lower() in _WORDS:
        return _UNITS[_WORDS[unit.lower()]]
    n = float(number)
    if unit in _MONTHS or unit.lower() in _MONTHS[1:]:
        days, weeks = n * 30, n * 30 / 7
        raise ValueError(
            f"not a duration: {text!r}: a month has no fixed length (and M is not m, "
            f"minutes); use {_whole(weeks)}w or {_whole(days)}d"
        )
    if unit in _YEARS or unit.lower() in _YEARS:
        raise ValueError(
            f"not a duration: {text!r}: a year has no fixed length; use "
            f"{_whole(n * 52)}w or {_whole(n * 365)}d"
        )
    if unit.lower() in _UNITS:
        raise ValueError(
            f"not a duration: {text!r}: units are case-sensitive; write {number}"
            f"{unit.lower()} (s, m for minutes, h, d, w)"
        )
    raise ValueError(f"not a duration: {text!r}; write {DURATION_HELP}")


def _whole(value: float) -> str:
    return str(max(1, round(value)))


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration means that long ago (``2d``, ``3 days ago``);
    ``now``, ``today`` and ``yesterday`` (midnight UTC); otherwise ISO-8601
    (``2026-11-01``, ``2026-11-01T08:00``, ``…+08:00``), read as UTC when it has no
    offset, as the library reads naive times. Raises ValueError saying what to write."""
    moment_now = now or datetime.now(UTC)
    word = text.strip().lower()
    midnight = moment_now.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"now": moment_now, "today": midnight, "yesterday": midnight - timedelta(days=1)}
    if word in named:
        return named[word]
    stripped = _AGO.sub("", text)
    try:
        ago = parse_duration(stripped)
    except ValueError as exc:
        if _PART.match(stripped.strip()) and not _looks_like_date(stripped):
            raise
        why = exc
    else:
        try:
            return moment_now - ago
        except OverflowError:
            raise ValueError(f"not a time: {text!r} ago is before the calendar") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither {DURATION_HELP} (that long ago, 'ago' optional), "
            "yesterday/today/now, nor an ISO-8601 time such as 2026-11-01 or "
            "2026-11-01T08:00:00+00:00"
        ) from why
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _looks_like_date(text: str) -> bool:
    return bool(re.match(r"\s*\d{4}-\d\d", text))


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: ``value`` as a timedelta, or a usage error naming the option."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _tags_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not key:
            raise click.BadParameter(
                f"{value!r}: write KEY=VALUE, or KEY for any value", ctx=ctx, param=param
            )
        found[key] = tag_value if sep else None
    return found


_OPTION_OF_FIELD = {
    "status": "--status",
    "backend": "--backend",
    "submitted_after": "--since",
    "submitted_before": "--until",
    "updated_after": "--updated-since",
    "updated_before": "--updated-before",
    "tags": "--tag",
    "name": "--name",
    "search": "--search",
}


def make_task_filter(**fields: Any) -> TaskFilter:
    """A :class:`TaskFilter`, or a usage error naming the option it refused."""
    for start, end in (("since", "until"), ("updated_since", "updated_before")):
        after, before = fields.pop(start, None), fields.pop(end, None)
        if after is not None and before is not None and after >= before:
            first, second = (f"--{name.replace('_', '-')}" for name in (start, end))
            raise click.UsageError(
                f"{first} {_shown(after)} is not earlier than {second} {_shown(before)}, "
                f"so nothing could match; swap them, or {first} an earlier time"
            )
        prefix = "submitted" if start == "since" else "updated"
        fields[f"{prefix}_after"], fields[f"{prefix}_before"] = after, before
    try:
        return TaskFilter(**fields)
    except InvalidInputError as exc:
        field = exc.field.split("[", 1)[0].split(" ", 1)[0]
        raise click.BadParameter(
            str(exc), param_hint=_OPTION_OF_FIELD.get(field, exc.field)
        ) from None


def _shown(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


skip_corrupt_option = click.option(
    "--skip-corrupt",
    is_flag=True,
    help="Skip stored rows that cannot be read (stderr says how many and which) "
    "instead of stopping at the first.",
)


def filter_options(command: F) -> F:
    """Add the filter options to a command; it receives ``task_filter``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        statuses: tuple[Any, ...],
        backend: str | None,
        since: datetime | None,
        until: datetime | None,
        updated_since: datetime | None,
        updated_before: datetime | None,
        tags: dict[str, str | None],
        name: str | None,
        search: str | None,
        **kwargs: Any,
    ) -> Any:
        task_filter = make_task_filter(
            status=list(statuses) or None,
            backend=backend,
            since=since,
            until=until,
            updated_since=updated_since,
            updated_before=updated_before,
            tags=tags or None,
            name=name,
            search=search,
        )
        return command(*args, task_filter=task_filter, **kwargs)

    decorators = [
        click.option(
            "--status",
            "statuses",
            metavar="STATUS[,STATUS...]",
            multiple=True,
            callback=parse_statuses,
            shell_complete=complete_statuses,
            help="Only these statuses: --status success,failed or the option repeated.",
        ),
        click.option("--backend", help="Platform or device, e.g. originq or originq:WK_C180."),
        click.option(
            "--since",
            metavar="WHEN",
            callback=_moment_option,
            help="Submitted at or after WHEN: a duration ago (2d, 90m, '3 days ago'), "
            "yesterday, today, or an ISO-8601 date/time (UTC unless it has an offset).",
        ),
        click.option(
            "--until",
            metavar="WHEN",
            callback=_moment_option,
            help="Submitted before WHEN (same forms as --since).",
        ),
        click.option(
            "--updated-since",
            metavar="WHEN",
            callback=_moment_option,
            help="Last updated at or after WHEN (same forms as --since).",
        ),
        click.option(
            "--updated-before",
            metavar="WHEN",
            callback=_moment_option,
            help="Last updated before WHEN (same forms as --since).",
        ),
        click.option(
            "--tag",
            "tags",
            metavar="KEY=VALUE",
            multiple=True,
            callback=_tags_option,
            help="Has this tag (KEY alone: any value); repeat for several, all must match.",
        ),
        click.option("--name", help="Exactly this task name."),
        click.option(
            "--search",
            metavar="TEXT",
            help="TEXT in the task id, a platform job id, the backend or the name (ignoring case).",
        ),
    ]
    decorated: Any = wrapper
    for decorate in reversed(decorators):
        decorated = decorate(decorated)
    return decorated  # type: ignore[no-any-return]
