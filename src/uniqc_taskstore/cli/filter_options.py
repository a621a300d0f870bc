"""The filter options every command that picks tasks by criteria shares (``list``,
``stats``, ``watch``, ``prune``, ``export``), and the duration parser behind
``--since``, ``--until`` and ``--older-than``.

:func:`filter_options` adds ``--status``, ``--backend``, ``--since``, ``--until``,
``--tag``, ``--name`` and ``--search`` to a command and hands it one
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
from .options import parse_statuses

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
DURATION_HELP = "a duration such as 30d, 2h, 90m, 45s, 1w or 1d12h"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``2h``, ``90m``, ``45s``, ``1w`` (or several, ``1d12h``) as a timedelta.
    Raises ValueError for anything else."""
    compact = text.strip()
    if not compact or _PART.sub("", compact).strip():
        raise ValueError(f"not a duration: {text!r}")
    seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in _PART.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"not a duration: {text!r}") from None


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration means that long ago (``2d``); otherwise ISO-8601
    (``2026-11-01``, ``2026-11-01T08:00``, ``…+08:00``), read as UTC when it has no
    offset, since every time the CLI prints is UTC. Raises ValueError."""
    try:
        ago = parse_duration(text)
    except ValueError:
        pass
    else:
        try:
            return (now or datetime.now(UTC)) - ago
        except OverflowError:
            raise ValueError(f"not a duration: {text!r}") from None
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: ``value`` as a timedelta, or a usage error naming the option."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not {DURATION_HELP}", ctx=ctx, param=param
        ) from None


def _moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither {DURATION_HELP} (that long ago) nor an ISO-8601 time "
            "such as 2026-11-01 or 2026-11-01T08:00:00+00:00",
            ctx=ctx,
            param=param,
        ) from None


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
    "tags": "--tag",
    "name": "--name",
    "search": "--search",
}


def make_task_filter(**fields: Any) -> TaskFilter:
    """A :class:`TaskFilter`, or a usage error naming the option it refused."""
    try:
        return TaskFilter(**fields)
    except InvalidInputError as exc:
        field = exc.field.split("[", 1)[0].split(" ", 1)[0]
        raise click.BadParameter(
            str(exc), param_hint=_OPTION_OF_FIELD.get(field, exc.field)
        ) from None


def filter_options(command: F) -> F:
    """Add the filter options to a command; it receives ``task_filter``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        statuses: tuple[Any, ...],
        backend: str | None,
        since: datetime | None,
        until: datetime | None,
        tags: dict[str, str | None],
        name: str | None,
        search: str | None,
        **kwargs: Any,
    ) -> Any:
        task_filter = make_task_filter(
            status=list(statuses) or None,
            backend=backend,
            submitted_after=since,
            submitted_before=until,
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
            help="Only these statuses: --status success,failed or the option repeated.",
        ),
        click.option("--backend", help="Platform or device, e.g. originq or originq:WK_C180."),
        click.option(
            "--since",
            metavar="WHEN",
            callback=_moment_option,
            help="Submitted at or after WHEN: a duration ago (2d, 12h) or an ISO-8601 time "
            "(UTC unless it has an offset).",
        ),
        click.option(
            "--until",
            metavar="WHEN",
            callback=_moment_option,
            help="Submitted before WHEN (same forms as --since).",
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
