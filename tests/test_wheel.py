"""The built wheel: it ships every migration and the console script, and once installed
into a fresh virtual environment it works from anywhere, without the source tree."""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from uniqc_taskstore.demo import DEMO_BACKEND, fake_counts
from uniqc_taskstore.sdk_swap import PTH_LINE, PTH_NAME

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[1]
REPO_MIGRATIONS = sorted(REPO.glob("migrations/v*.py"))


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path
    """A scratch directory outside the repository to run commands from."""

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.venv / "bin" / "uniqc-tasks"


def _clean_env(home: Path) -> dict[str, str]:
    """The environment for the installed tools: a throwaway HOME, nothing pointing at
    the source tree or at a configured store."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "UNIQC_CACHE_DIR", "UNIQC_TASKSTORE_URL"}
    }
    env["HOME"] = str(home)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _check(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    finished = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert finished.returncode == 0, (
        f"{command} exited {finished.returncode}\n{finished.stdout}\n{finished.stderr}"
    )
    return finished.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel once, and install it into one fresh virtual environment."""
    root = tmp_path_factory.mktemp("wheel")
    dist, workdir = root / "dist", root / "work"
    workdir.mkdir()
    # pip and build keep their caches under the real HOME: allowed, it is not ~/.uniqc.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "UNIQC_CACHE_DIR", "UNIQC_TASKSTORE_URL"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _check([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], root, env)
    [wheel] = dist.glob("uniqc_taskstore-*.whl")
    venv = root / "venv"
    # Without its own pip (ensurepip is slow); this interpreter's pip installs into it.
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    _check(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            str(wheel),
        ],
        workdir,
        env,
    )
    return Installed(wheel, venv, workdir)


# -- the wheel's contents -------------------------------------------------------------------


def test_wheel_ships_every_migration_file_unchanged(installed: Installed) -> None:
    assert [p.name for p in REPO_MIGRATIONS][:6] == [
        "v0001_tasks.py",
        "v0002_archive.py",
        "v0003_error_message.py",
        "v0004_shards.py",
        "v0005_uniqc_task_ids.py",
        "v0006_utc_timestamps.py",
    ]
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        for path in REPO_MIGRATIONS:
            member = f"uniqc_taskstore/migrations/{path.name}"
            assert member in names
            assert wheel.read(member) == path.read_bytes()


def test_wheel_ships_the_typing_marker_and_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert "uniqc_taskstore/py.typed" in names
    for module in ("__init__", "cli/__init__", "demo", "migrator", "store", "protocol"):
        assert f"uniqc_taskstore/{module}.py" in names
    assert not any(name.startswith(("tests/", "src/")) for name in names)


def test_installed_wheel_loads_the_sdk_hook_from_the_pth_line(
    installed: Installed, tmp_path: Path
) -> None:
    """The hook ships at the top level of site-packages, where the line `uniqc-tasks sdk
    enable` writes finds it at start-up without importing the package."""
    [site] = installed.venv.glob("lib/python3*/site-packages")
    assert (site / "_uniqc_taskstore_sdk_hook.py").is_file()
    pth = site / PTH_NAME
    pth.write_text(PTH_LINE, encoding="utf-8")
    try:
        probe = (
            "import sys; print([getattr(f, '__name__', '') for f in sys.meta_path][0], "
            "'uniqc_taskstore' in sys.modules, 'sqlalchemy' in sys.modules)"
        )
        out = _check([str(installed.python), "-c", probe], installed.workdir, _clean_env(tmp_path))
    finally:
        pth.unlink()
    assert out.split() == ["SdkStoreFinder", "False", "False"]


def test_wheel_declares_the_console_script(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(wheel.read(entry_points).decode())
    assert parser["console_scripts"]["uniqc-tasks"].strip() == "uniqc_taskstore.cli:main"


# -- the installed package --------------------------------------------------------------------


def test_installed_package_reads_migrations_from_site_packages(
    installed: Installed, tmp_path: Path
) -> None:
    code = (
        "import uniqc_taskstore as p, uniqc_taskstore.migrator as m; "
        "print(m.migrations_dir()); print(p.__file__); print(p.CURRENT_SCHEMA_VERSION)"
    )
    out = _check([str(installed.python), "-c", code], installed.workdir, _clean_env(tmp_path))
    migrations, package_file, version = out.splitlines()
    site_packages = installed.venv.resolve() / "lib"
    assert Path(migrations).resolve().is_relative_to(site_packages)
    assert Path(migrations).parts[-3:] == ("site-packages", "uniqc_taskstore", "migrations")
    assert Path(package_file).resolve().is_relative_to(site_packages)
    assert not Path(migrations).resolve().is_relative_to(REPO)
    assert sorted(p.name for p in Path(migrations).glob("v*.py")) == [
        p.name for p in REPO_MIGRATIONS
    ]
    assert int(version) == len(REPO_MIGRATIONS)


def test_installed_script_runs_the_demo(installed: Installed, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = _check(
        [str(installed.script), "--cache-dir", str(cache), "demo"],
        installed.workdir,
        _clean_env(tmp_path / "home"),
    )
    assert (cache / "tasks.sqlite").is_file()
    task_rows = [line.split() for line in out.splitlines() if line.startswith("uqt_")]
    assert len(task_rows) == 1
    assert task_rows[0][1:4] == ["success", DEMO_BACKEND, "1000"]
    circuits = [f"OPENQASM 2.0; // demo circuit {n}" for n in range(7)]
    expected = [
        f"  [{n}] {circuit}  ->  {fake_counts(circuit, 1000)}" for n, circuit in enumerate(circuits)
    ]
    result_lines = [line for line in out.splitlines() if line.startswith("  [")]
    assert result_lines == expected


def test_installed_script_json_output_and_later_lookups(
    installed: Installed, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _clean_env(tmp_path / "home")
    script = [str(installed.script), "--cache-dir", str(cache)]
    shown = json.loads(
        _check(
            [*script, "demo", "--circuits", "10", "--max-batch", "4", "--json"],
            installed.workdir,
            env,
        )
    )
    assert shown["task"]["status"] == "success"
    assert [s["circuit_count"] for s in shown["shards"]] == [4, 4, 2]
    circuits = [f"OPENQASM 2.0; // demo circuit {n}" for n in range(10)]
    assert shown["results"] == [fake_counts(c, 1000) for c in circuits]
    task_id = shown["task"]["task_id"]
    listed = json.loads(_check([*script, "list", "--json"], installed.workdir, env))
    assert [t["task_id"] for t in listed] == [task_id]
    again = json.loads(_check([*script, "show", task_id, "--json"], installed.workdir, env))
    assert again == shown["task"]


def test_installed_script_defaults_to_the_cache_under_home(
    installed: Installed, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home)
    shown = json.loads(_check([str(installed.script), "demo", "--json"], installed.workdir, env))
    database = home / ".uniqc" / "cache" / "tasks.sqlite"
    assert database.is_file()
    assert stat.S_IMODE(database.stat().st_mode) & 0o077 == 0
    listed = json.loads(_check([str(installed.script), "list", "--json"], installed.workdir, env))
    assert [t["task_id"] for t in listed] == [shown["task"]["task_id"]]
