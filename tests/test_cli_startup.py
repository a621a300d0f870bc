"""``uniqc-tasks`` starts without loading what it does not need (issue 20, item 12):
``--version``, ``--help``, the completion script and command-name completion load
neither SQLAlchemy nor rich, and a command on a SQLite store never loads the
PostgreSQL or MySQL dialects or drivers. Each runs in a fresh interpreter and reports
``sys.modules``; timings live in ``benchmarks/cli_startup.py`` and BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

import uniqc_taskstore
from uniqc_taskstore import TaskInfo, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import COMMANDS, cli

_PROBE = """
import json, sys
from uniqc_taskstore.cli import main
try:
    main(sys.argv[1:])
finally:  # completion ends in sys.exit
    sys.stdout.flush()
    print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
HEAVY = ("sqlalchemy", "rich")
SERVER = ("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql", "psycopg", "pymysql")


def loaded_by(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> set[str]:
    finished = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )
    marker = finished.stderr.rindex("MODULES ")
    modules: list[str] = json.loads(finished.stderr[marker + len("MODULES ") :])
    return set(modules)


def top(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["completion", "bash"], ["completion", "zsh"]],
    ids=["version", "help", "completion-bash", "completion-zsh"],
)
def test_version_help_and_completion_load_neither_sqlalchemy_nor_rich(argv: list[str]) -> None:
    assert top(loaded_by(*argv), HEAVY) == set()


def test_completing_a_command_name_loads_neither_sqlalchemy_nor_rich() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "uniqc_taskstore.cli"],
        env={
            **os.environ,
            "_UNIQC_TASKS_COMPLETE": "bash_complete",
            "COMP_WORDS": "x li",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert "plain,list" in finished.stdout.splitlines()
    env = {
        "_UNIQC_TASKS_COMPLETE": "bash_complete",
        "COMP_WORDS": "uniqc-tasks li",
        "COMP_CWORD": "1",
    }
    assert top(loaded_by(env=env), HEAVY) == set()


def test_a_sqlite_command_loads_no_server_dialect_or_driver(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "c") as store:
        store.save(TaskInfo(generate_uniqc_task_id(), "dummy"))
    for argv in (["list", "--limit", "5"], ["stats"], ["list", "--json"]):
        loaded = loaded_by("--cache-dir", str(tmp_path / "c"), *argv)
        assert "sqlalchemy" in loaded  # it did open the store
        assert top(loaded, SERVER) == set(), argv
        assert top(loaded, ("rich",)) == set(), argv  # piped: plain tables


def test_importing_the_package_loads_no_sqlalchemy_until_a_name_needs_it() -> None:
    probe = (
        "import sys, uniqc_taskstore as u; a = 'sqlalchemy' in sys.modules; "
        "u.TaskStatus; b = 'sqlalchemy' in sys.modules; u.TaskStore; "
        "print(a, b, 'sqlalchemy' in sys.modules, u.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "True", uniqc_taskstore.__version__]


def test_every_public_name_and_submodule_resolves() -> None:
    for name in uniqc_taskstore.__all__:
        assert getattr(uniqc_taskstore, name) is not None
    assert uniqc_taskstore.jsoncodec.__name__ == "uniqc_taskstore.jsoncodec"
    with pytest.raises(AttributeError):
        uniqc_taskstore.no_such_name  # noqa: B018


def test_the_lazy_command_table_matches_every_command() -> None:
    """The help ``--help`` lists without importing must be each command's own."""
    ctx = click.Context(cli)
    for name, (_, _, short) in COMMANDS.items():
        command: Any = cli.get_command(ctx, name)
        assert command is not None
        assert command.name == name
        assert command.get_short_help_str(limit=10_000) == short, name
