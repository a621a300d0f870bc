"""Named stores: ``~/.config/uniqc-tasks/config.toml`` (``$XDG_CONFIG_HOME`` respected),
read with :mod:`tomllib`, like kubectl contexts or gh hosts::

    [stores.lab]
    url = "postgresql+psycopg://me@db.lab/quantum"
    schema = "team_a"

    [stores.laptop]
    cache_dir = "~/.uniqc/cache"

``--store NAME`` or ``UNIQC_TASKSTORE=NAME`` picks one; ``uniqc-tasks stores`` lists
them. A store has ``url`` (with an optional ``schema``) or ``cache_dir``. The library
knows nothing of this file: it takes URLs and paths."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .options import output_options

STORE_ENV = "UNIQC_TASKSTORE"
"""The variable naming the store to use, as ``--store`` does."""
SCHEMA_ENV = "UNIQC_TASKSTORE_SCHEMA"
"""The PostgreSQL schema for ``UNIQC_TASKSTORE_URL``, as ``--schema`` is for ``--url``."""


class ConfigError(click.ClickException):
    """The config file or a store named in it cannot be used; the message says why."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"uniqc-tasks: {self.message}", err=True)


@dataclass(frozen=True)
class NamedStore:
    """One ``[stores.NAME]`` table."""

    name: str
    url: str | None = None
    schema: str | None = None
    cache_dir: str | None = None


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/uniqc-tasks/config.toml``, else ``~/.config/uniqc-tasks/…``."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "uniqc-tasks" / "config.toml"


def load_stores() -> dict[str, NamedStore]:
    """The named stores of the config file (none when there is no file)."""
    path = config_path()
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it") from None
    tables = data.get("stores", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: 'stores' must be a table of [stores.NAME] tables")
    found = {}
    for name, table in tables.items():
        found[name] = _named(path, name, table)
    return found


def _named(path: Path, name: str, table: object) -> NamedStore:
    where = f"{path}: [stores.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with url (and schema) or cache_dir")
    unknown = sorted(set(table) - {"url", "schema", "cache_dir"})
    if unknown:
        raise ConfigError(f"{where} has {unknown[0]!r}; a store takes url, schema, cache_dir")
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be non-empty text")
    if ("url" in table) == ("cache_dir" in table):
        raise ConfigError(f"{where} needs url or cache_dir (one of them)")
    if "schema" in table and "url" not in table:
        raise ConfigError(f"{where}: schema goes with a PostgreSQL url")
    return NamedStore(name, table.get("url"), table.get("schema"), table.get("cache_dir"))


def named_store(name: str, *, source: str) -> NamedStore:
    """The store called ``name`` (given by ``source``: ``--store`` or the variable)."""
    stores = load_stores()
    if name in stores:
        return stores[name]
    known = ", ".join(sorted(stores)) or "none"
    raise ConfigError(
        f"no store named {name!r} ({source}) in {config_path()} (named stores: {known}); "
        "`uniqc-tasks stores` lists them"
    )


@click.command(
    "stores",
    epilog='Example config.toml: [stores.lab] url = "postgresql+psycopg://me@db/quantum" '
    'schema = "team_a"; [stores.laptop] cache_dir = "~/.uniqc/cache". Then: '
    "uniqc-tasks --store lab list, or UNIQC_TASKSTORE=lab uniqc-tasks list.",
)
@output_options
def stores_command() -> None:
    """The named stores of the config file (passwords masked), * marking the one in use."""
    from . import output
    from .options import settings, shown_url

    stores = load_stores()
    chosen = settings().store or os.environ.get(STORE_ENV) or None
    rows: list[dict[str, Any]] = [
        {
            "name": s.name,
            "in_use": s.name == chosen,
            "kind": "url" if s.url else "cache_dir",
            "location": shown_url(s.url) if s.url else s.cache_dir,
            "schema": s.schema,
        }
        for s in stores.values()
    ]
    if output.wants_json():
        output.emit({"config": str(config_path()), "stores": rows})
        return
    if not rows:
        output.note(f"no named stores: {config_path()} has none (see --help for the form)")
        return
    output.table(
        ["", "NAME", "LOCATION", "SCHEMA"],
        [
            ["*" if r["in_use"] else "", r["name"], str(r["location"]), r["schema"] or "-"]
            for r in rows
        ],
    )


COMMANDS = (stores_command,)
