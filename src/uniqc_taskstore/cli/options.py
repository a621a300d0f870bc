"""Options every command takes (where the store is, how to print), and opening the store.

``--cache-dir``, ``--url``, ``--schema``, ``--json`` and ``--jsonl`` are declared on
the group and again on every command, so they work before or after the command name;
both places fill one :class:`Settings` on the context.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from ..errors import DatabaseError, StoreNotFoundError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from ..model import TaskStatus
    from ..store import TaskStore

# SQLAlchemy and the store are imported where a store is opened or a URL read, so that
# --version, --help and completion start without them.
URL_ENV = "UNIQC_TASKSTORE_URL"
"""The variable naming the store's URL (``uniqc_taskstore.store.URL_ENV``)."""

Format = Literal["text", "json", "jsonl", "csv"]
FORMATS: dict[str, Format] = {"table": "text", "json": "json", "jsonl": "jsonl", "csv": "csv"}
"""``--format`` names and the output each means (``table`` is the text form)."""
F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(Exception):
    """Ctrl-C arrived; the message says what was done and how to carry on."""


@dataclass
class Settings:
    """The store location and output format, gathered from wherever they were given."""

    cache_dir: str | None = None
    url: str | None = None
    schema: str | None = None
    format: Format = "text"
    table_asked: bool = False
    """``--format table`` was given: a later --json/--jsonl/--format contradicts it."""
    store: str | None = None
    """``--store NAME``: a named store of the config file."""
    given_by: str | None = None
    """Which option or variable named the location, once :func:`resolve_location` ran."""


def settings() -> Settings:
    """This invocation's settings."""
    return click.get_current_context().ensure_object(Settings)


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        found = ctx.ensure_object(Settings)
        before = getattr(found, field)
        if before is not None and before != value:
            raise click.BadParameter(f"given twice ({before!r} and {value!r})", param=param)
        setattr(found, field, value)

    return callback


def _remember_format(fmt: Format) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value:
            return
        found = ctx.ensure_object(Settings)
        if found.format not in ("text", fmt) or found.table_asked:
            raise click.UsageError(
                f"--format {_format_name(found.format)} and --format "
                f"{_format_name(fmt)} (or --json/--jsonl) cannot be used together",
                ctx=ctx,
            )
        found.format = fmt

    return callback


def _remember_format_name(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        fmt = FORMATS[value]
        if fmt == "text":
            found = ctx.ensure_object(Settings)
            if found.format != "text":
                raise click.UsageError(
                    f"--format table and --format {_format_name(found.format)} (or "
                    "--json/--jsonl) cannot be used together",
                    ctx=ctx,
                )
            found.table_asked = True
            return
        _remember_format(fmt)(ctx, param, True)


def _format_name(fmt: Format) -> str:
    return "table" if fmt == "text" else fmt


def _check_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        check_url(value, param=param)
    return value


def parse_url(value: str) -> URL:
    """``value`` as a SQLAlchemy URL; ValueError if it is not one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(value)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None


def check_url(value: str, *, param: click.Parameter | None = None, what: str = "--url") -> None:
    """Refuse, as a usage error, a path or an unparseable string where a URL belongs."""
    if "://" not in value:
        path = Path(value).expanduser()
        directory = path.parent if path.suffix == ".sqlite" else path
        raise click.BadParameter(
            f"{value!r} is a path, not a URL: use --cache-dir {directory} for the "
            f"directory holding tasks.sqlite, or sqlite:///{directory.resolve()}/tasks.sqlite",
            param=param,
            param_hint=None if param else what,
        )
    try:
        parse_url(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a database URL; write it like "
            "postgresql+psycopg://user@host/db or sqlite:///path/to/tasks.sqlite",
            param=param,
            param_hint=None if param else what,
        ) from None


def _check_cache_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        check_cache_dir(value, param=param)
    return value


def check_cache_dir(value: str, *, param: click.Parameter | None = None, what: str = "") -> None:
    """Refuse, as a usage error, a file where a cache directory belongs, and a path the
    file system cannot take."""
    # Imported here: --help and completion must not load SQLAlchemy (backends.sqlite does).
    from ..backends.sqlite import path_too_long

    path = Path(value).expanduser()
    problem = path_too_long(path / "tasks.sqlite")
    if problem is not None:
        raise click.BadParameter(
            f"{value[:100]}{'...' if len(value) > 100 else ''}: {problem}; choose a shorter "
            "directory",
            param=param,
            param_hint=None if param else what,
        )
    if path.is_file():
        raise click.BadParameter(
            f"{value} is a file; give the directory holding tasks.sqlite "
            f"({path.parent}), or --url sqlite:///{path.resolve()}",
            param=param,
            param_hint=None if param else what,
        )


def common_options(command: F) -> F:
    """Add the store and output options to a command (or the group)."""
    return _store_options(output_options(command))


def _store_options(command: F) -> F:
    decorators = [
        click.option(
            "--cache-dir",
            metavar="DIR",
            expose_value=False,
            callback=_chain(_check_cache_dir, _remember("cache_dir")),
            help="Directory of tasks.sqlite [default: UNIQC_CACHE_DIR or ~/.uniqc/cache].",
        ),
        click.option(
            "--url",
            metavar="URL",
            expose_value=False,
            callback=_chain(_check_url, _remember("url")),
            help=f"SQLAlchemy URL of the database instead [default: {URL_ENV} if set].",
        ),
        click.option(
            "--schema",
            metavar="NAME",
            expose_value=False,
            callback=_remember("schema"),
            help="PostgreSQL schema holding the tables (PostgreSQL URLs only) "
            "[default: UNIQC_TASKSTORE_SCHEMA with UNIQC_TASKSTORE_URL].",
        ),
        click.option(
            "--store",
            metavar="NAME",
            expose_value=False,
            callback=_remember("store"),
            help="A named store of ~/.config/uniqc-tasks/config.toml (`uniqc-tasks stores` "
            "lists them) [default: UNIQC_TASKSTORE if set].",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def output_options(command: F) -> F:
    """Add only the output options (--json, --jsonl, --format) to a command."""
    decorators = [
        click.option(
            "--json",
            "json_",
            is_flag=True,
            expose_value=False,
            callback=_remember_format("json"),
            help="Print standard JSON (values JSON cannot hold in their tagged form).",
        ),
        click.option(
            "--jsonl",
            is_flag=True,
            expose_value=False,
            callback=_remember_format("jsonl"),
            help="Print one JSON object per line.",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_log_to_stderr,
            help="Log what the store does to stderr: -v retries, refusals and migrations, "
            "-vv also slow calls.",
        ),
        click.option(
            "--format",
            "format_",
            type=click.Choice(list(FORMATS)),
            expose_value=False,
            callback=_remember_format_name,
            help="Output form [default: table]; --json and --jsonl are short for it.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


_LOG_LEVELS = {1: logging.INFO, 2: logging.DEBUG}


class _StderrHandler(logging.Handler):
    """Writes each record as one line to whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _log_to_stderr(_ctx: click.Context, _param: click.Parameter, count: int) -> None:
    """-v: the ``uniqc_taskstore`` loggers at INFO on stderr; -vv: at DEBUG. Messages
    never hold stored values or passwords."""
    if not count:
        return
    logger = logging.getLogger("uniqc_taskstore")
    level = _LOG_LEVELS.get(count, logging.DEBUG)
    logger.setLevel(min(level, logger.level or level))
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("uniqc-tasks: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def stop_logging() -> None:
    """Undo -v/-vv (after a command, for callers that run several in one process)."""
    logger = logging.getLogger("uniqc_taskstore")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def _chain(
    *callbacks: Callable[[click.Context, click.Parameter, Any], Any],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        for step in callbacks:
            step(ctx, param, value)
        return value

    return callback


def resolve_location() -> Settings:
    """Fill the settings from a named store (``--store``, else ``UNIQC_TASKSTORE`` when
    no location option was given) and ``UNIQC_TASKSTORE_SCHEMA``; refuse conflicting
    location options. Run before a store is opened."""
    from .config import SCHEMA_ENV, STORE_ENV, named_store

    found = settings()
    if found.given_by is not None:
        return found
    given = [o for o, v in (("--cache-dir", found.cache_dir), ("--url", found.url)) if v]
    if found.store is not None and given:
        raise click.UsageError(f"give --store or {given[0]}, not both")
    if len(given) == 2:
        raise click.UsageError("give --cache-dir or --url, not both")
    name, source = found.store, "--store"
    if name is None and not given and os.environ.get(STORE_ENV):
        name, source = os.environ[STORE_ENV], STORE_ENV
    if name is not None:
        chosen = named_store(name, source=source)
        if chosen.url is not None:
            check_url(chosen.url, what=f"store {name!r}")
        found.url, found.cache_dir = chosen.url, chosen.cache_dir
        found.schema = found.schema or chosen.schema
        found.given_by = f"{source} {name}"
        return found
    if not given and os.environ.get(URL_ENV) and found.schema is None:
        schema = os.environ.get(SCHEMA_ENV) or None
        if schema is not None:
            check_schema(schema, os.environ[URL_ENV], SCHEMA_ENV)
        found.schema = schema
    found.given_by = given[0] if given else ""
    return found


def open_store(*, create: bool) -> TaskStore:
    """The store the options point at. ``create=False`` (commands that only read)
    opens an existing store and creates nothing. A store that is not there is named
    as the user wrote it, with the option that points elsewhere."""
    found = resolve_location()
    url, given_by = found.url, found.given_by or "--url"
    if url is None and found.cache_dir is None:
        url, given_by = os.environ.get(URL_ENV) or None, URL_ENV
        if url is not None:
            check_url(url, what=URL_ENV)
    check_schema(found.schema, url, "--schema")
    from ..store import TaskStore

    try:
        if found.cache_dir is not None:
            return TaskStore(found.cache_dir, create=create)
        if url is not None:
            return store_at(url, found.schema, create=create)
        return TaskStore(create=create)
    except StoreNotFoundError:
        if url is not None:
            raise StoreNotFoundError(
                f"no task store at {shown_url(url)} ({given_by}); check the URL, or create "
                "one with `uniqc-tasks import FILE` or `uniqc-tasks demo`"
            ) from None
        if found.cache_dir is not None:
            raise StoreNotFoundError(
                f"no task store at {os.path.join(found.cache_dir, 'tasks.sqlite')} "
                f"({found.given_by or '--cache-dir'}); check the directory, or create one with "
                "`uniqc-tasks import FILE` or `uniqc-tasks demo`"
            ) from None
        raise


def shown_url(url: str) -> str:
    """A URL as the user wrote it, with its password masked."""
    try:
        parsed = parse_url(url)
    except ValueError:
        return url
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


_FAMILIES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def store_at(where: str, schema: str | None, *, create: bool) -> TaskStore:
    """The store at a cache directory or a URL (already checked by :func:`check_url`)."""
    from ..store import TaskStore

    if "://" not in where:
        return TaskStore(where, create=create)
    family = parse_url(where).get_backend_name()
    if family not in _FAMILIES:
        raise DatabaseError(
            f"{shown_url(where)} names a database uniqc-taskstore does not support "
            f"({family}); use sqlite:///PATH, postgresql://user@host/db or mysql://user@host/db"
        )
    _check_driver(where)
    return TaskStore.from_url(where, schema=schema, create=create)


_SUPPORTED = {
    "postgresql": ("postgresql+psycopg", "postgresql"),
    "mysql": ("mysql+pymysql", "mysql"),
    "mariadb": ("mysql+pymysql", "mysql"),
}


def _check_driver(url: str) -> None:
    """A URL naming a driver that is not installed is a one-line error saying what to
    install. (A URL without a driver is left to the store, which picks one.)"""
    from sqlalchemy.exc import NoSuchModuleError

    parsed = parse_url(url)
    if "+" not in parsed.drivername:
        return
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        return  # not a database SQLAlchemy knows: the store names the ones it supports
    except ImportError as exc:
        supported, extra = _SUPPORTED.get(parsed.get_backend_name(), (None, None))
        if supported is None:
            hint = "install it"
        elif parsed.drivername == supported:
            hint = f"pip install 'uniqc-taskstore[{extra}]'"
        else:
            hint = f"install it, or use {supported}:// (pip install 'uniqc-taskstore[{extra}]')"
        raise DatabaseError(
            f"{parsed.drivername} URLs need the Python package {exc.name!r}, which is not "
            f"installed: {hint}"
        ) from None


def check_schema(schema: str | None, url: str | None, option: str) -> None:
    """A schema is a PostgreSQL notion: anywhere else it would be ignored, so refuse it."""
    if schema is None:
        return
    try:
        family = parse_url(url).get_backend_name() if url is not None else "sqlite"
    except ValueError:
        return  # not a URL at all: opening the store says so
    if family not in ("postgresql", "postgres"):  # postgres:// is PostgreSQL too
        where = "a SQLite file" if family == "sqlite" else f"a {family} database"
        raise click.UsageError(
            f"{option} applies to PostgreSQL URLs only; the store here is {where}"
        )


def parse_statuses(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[TaskStatus, ...]:
    """``--status a,b --status c``: the statuses named, in the order of :class:`TaskStatus`."""
    from ..model import TaskStatus

    known = [s.value for s in TaskStatus]
    found: set[TaskStatus] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if name not in known:
                raise click.BadParameter(
                    f"{part.strip()!r} is not a status; choose from {', '.join(known)}",
                    ctx=ctx,
                    param=param,
                )
            found.add(TaskStatus(name))
    return tuple(s for s in TaskStatus if s in found)
