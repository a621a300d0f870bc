"""The SDK swap (``uniqc-tasks sdk enable | disable | status``, ``compat.enable()``) in a
real virtual environment holding a stand-in SDK: a ``uniqc`` package with the two store
modules and ``unified-quantum`` metadata, installed the way pip lays it out. Each check
runs a fresh interpreter of that environment, so the ``.pth`` file is read as Python
reads it at start-up. The real SDK's workflows on the swap are ``nox -s sdk-e2e``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import uniqc_taskstore
from _uniqc_taskstore_sdk_hook import SdkStoreFinder
from uniqc_taskstore import CURRENT_SCHEMA_VERSION, SdkSwapError, compat
from uniqc_taskstore.sdk_swap import CHECKED_SDK_VERSIONS, PTH_LINE, PTH_NAME

ORIGINAL_STORE = "ORIGINAL = True\nfrom pathlib import Path\nDEFAULT_CACHE_DIR = Path('/nowhere')\n"
ORIGINAL_ARCHIVE = "ORIGINAL = True\n"
SWAPPED_PROBE = (
    "import uniqc.backend_adapter.task.store as s, uniqc.gateway.db.archive_store as a\n"
    "import uniqc_taskstore.compat as c\n"
    "print(s is c, a is c, getattr(s, 'ORIGINAL', False), getattr(a, 'ORIGINAL', False))\n"
)


def write_stand_in_sdk(site: Path, version: str = CHECKED_SDK_VERSIONS[0]) -> None:
    """The SDK's two store modules (marked ``ORIGINAL``), their packages and the
    distribution's metadata, laid out in ``site`` as pip installs them."""
    files = {
        "uniqc/__init__.py": "",
        "uniqc/backend_adapter/__init__.py": "",
        "uniqc/backend_adapter/task/__init__.py": "",
        "uniqc/backend_adapter/task/store.py": ORIGINAL_STORE,
        "uniqc/gateway/__init__.py": "",
        "uniqc/gateway/db/__init__.py": "",
        "uniqc/gateway/db/archive_store.py": ORIGINAL_ARCHIVE,
        f"unified_quantum-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: unified-quantum\nVersion: {version}\n"
        ),
    }
    for name, text in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@dataclass
class Env:
    """A virtual environment with this project importable and a stand-in SDK."""

    root: Path
    site: Path
    home: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def pth(self) -> Path:
        return self.site / PTH_NAME

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return subprocess.run(
            [self.python, *args], env=env, capture_output=True, text=True, check=False
        )

    def tasks(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "uniqc_taskstore.cli", *args)

    def probe(self, code: str = SWAPPED_PROBE) -> str:
        done = self.run("-c", code)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout.strip()

    def install_sdk(self, version: str = CHECKED_SDK_VERSIONS[0]) -> None:
        """(Re)install the stand-in SDK, replacing its files as pip would."""
        self.remove_sdk()
        write_stand_in_sdk(self.site, version)

    def remove_sdk(self) -> None:
        shutil.rmtree(self.site / "uniqc", ignore_errors=True)
        for info in self.site.glob("unified_quantum-*.dist-info"):
            shutil.rmtree(info)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    [site] = root.glob("lib/python3*/site-packages")
    # This project and its dependencies, from wherever this interpreter has them; the
    # name sorts before ours, so the paths are there when our .pth line runs.
    ours = [p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    ours.append(str(Path(uniqc_taskstore.__file__).parents[1]))
    (site / "_paths.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    return Env(root, site, root / "home")


@pytest.fixture
def env(venv: Env) -> Iterator[Env]:
    """The environment with the checked SDK installed, no swap and an empty HOME."""
    venv.home.mkdir()
    venv.install_sdk()
    yield venv
    venv.pth.unlink(missing_ok=True)
    shutil.rmtree(venv.home)
    if (venv.site / "_paths.pth.off").exists():
        (venv.site / "_paths.pth.off").replace(venv.site / "_paths.pth")


def _error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The last line of stderr: the one that says what is wrong (a usage error has
    click's usage lines above it; a refusal is that one line alone)."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    if code != 2:
        [line] = lines
        assert line.startswith("uniqc-tasks: ")
    return lines[-1]


# -- enable / disable ---------------------------------------------------------------------


def test_enable_makes_every_new_process_import_compat_for_both_sdk_modules(env: Env) -> None:
    assert env.probe() == "False False True True"
    done = env.tasks("sdk", "enable")
    assert done.returncode == 0, done.stderr
    assert str(env.pth) in done.stdout
    assert env.pth.read_text(encoding="utf-8") == PTH_LINE
    assert env.probe() == "True True False False"
    again = env.tasks("sdk", "enable", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) | {"store": None} == {
        "enabled": True,
        "changed": False,
        "pth": str(env.pth),
        "store": None,
    }


def test_disable_gives_the_sdk_its_own_store_back(env: Env) -> None:
    env.tasks("sdk", "enable")
    done = env.tasks("sdk", "disable")
    assert done.returncode == 0
    assert f"removed {env.pth}" in done.stdout
    assert not env.pth.exists()
    assert env.probe() == "False False True True"
    again = env.tasks("sdk", "disable")
    assert again.returncode == 0
    assert "Not enabled" in again.stdout


def test_swap_survives_a_reinstall_and_follows_the_sdk_default_cache_dir(env: Env) -> None:
    env.tasks("sdk", "enable")
    env.install_sdk()
    code = (
        "import uniqc.backend_adapter.task.store as s\n"
        f"s.DEFAULT_CACHE_DIR = s.Path({str(env.home / 'moved')!r})\n"
        "print(s.TaskStore().location)\n"
    )
    assert env.probe(code).endswith(str(env.home / "moved" / "tasks.sqlite"))


def test_startup_stays_silent_when_uniqc_taskstore_is_gone(env: Env) -> None:
    env.tasks("sdk", "enable")
    (env.site / "_paths.pth").replace(env.site / "_paths.pth.off")
    done = env.run("-c", "import uniqc.backend_adapter.task.store as s; print(s.ORIGINAL)")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "True", "")


def test_an_unchecked_sdk_release_is_refused_and_nothing_is_written(env: Env) -> None:
    env.install_sdk("0.2.0")
    line = _error_line(env.tasks("sdk", "enable"), 1)
    assert "0.2.0" in line
    assert all(v in line for v in CHECKED_SDK_VERSIONS)
    assert not env.pth.exists()


def test_hook_refuses_an_sdk_upgraded_after_enable_instead_of_guessing(env: Env) -> None:
    env.tasks("sdk", "enable")
    env.install_sdk("0.2.0")
    done = env.run("-c", "import uniqc.backend_adapter.task.store")
    assert done.returncode == 1
    assert "ImportError" in done.stderr
    assert "0.2.0" in done.stderr
    assert "uniqc-tasks sdk disable" in done.stderr
    status = json.loads(env.tasks("sdk", "status", "--json").stdout)
    assert status["sdk_checked"] is False
    assert any("refuse" in note for note in status["notes"])


def test_without_the_sdk_enable_and_status_refuse_and_disable_still_cleans_up(
    env: Env,
) -> None:
    env.tasks("sdk", "enable")
    env.remove_sdk()
    for command in ("enable", "status"):
        line = _error_line(env.tasks("sdk", command), 1)
        assert "not installed" in line
    done = env.tasks("sdk", "disable")
    assert done.returncode == 0
    assert not env.pth.exists()


@pytest.mark.parametrize("option", [["--url", "sqlite://"], ["--cache-dir", "/tmp"]])
def test_store_options_are_refused_since_the_sdk_does_not_read_them(
    env: Env, option: list[str]
) -> None:
    line = _error_line(env.tasks(*option, "sdk", "enable"), 2)
    assert "UNIQC_TASKSTORE_URL" in line
    assert not env.pth.exists()


# -- status --------------------------------------------------------------------------------


def test_status_names_the_store_the_location_and_its_schema_version(env: Env) -> None:
    before = json.loads(env.tasks("sdk", "status", "--json").stdout)
    own_file = env.home / ".uniqc" / "cache" / "tasks.sqlite"
    assert before["enabled"] is False
    assert before["store"] == "sdk"
    assert before["location"] == f"SQLite file {own_file}"
    assert before["schema_version"] is None
    assert before["sdk_version"] == CHECKED_SDK_VERSIONS[0]
    assert before["checked_versions"] == list(CHECKED_SDK_VERSIONS)

    env.tasks("sdk", "enable")
    env.probe("import uniqc.backend_adapter.task.store as s; s.TaskStore().close()")
    after = json.loads(env.tasks("sdk", "status", "--json").stdout)
    assert (after["enabled"], after["store"]) == (True, "uniqc-taskstore")
    assert after["location"] == f"SQLite file {own_file}"
    assert after["schema_version"] == CURRENT_SCHEMA_VERSION
    text = env.tasks("sdk", "status").stdout
    assert f"Schema: {CURRENT_SCHEMA_VERSION}" in text
    assert "Swap:   enabled" in text


def test_status_notes_sdk_files_edited_the_old_way(env: Env) -> None:
    store = env.site / "uniqc" / "backend_adapter" / "task" / "store.py"
    store.write_text("import sys, uniqc_taskstore.compat\n", encoding="utf-8")
    status = json.loads(env.tasks("sdk", "status", "--json").stdout)
    assert any("--force-reinstall" in note for note in status["notes"])


# -- compat.enable(): one process ------------------------------------------------------------


def test_compat_enable_swaps_the_sdk_store_in_this_process_only(env: Env) -> None:
    code = (
        "import uniqc_taskstore.compat as c\n"
        "c.enable()\n"
        "import uniqc.backend_adapter.task.store as s, uniqc.gateway.db.archive_store as a\n"
        "print(s is c, a is c)\n"
    )
    assert env.probe(code) == "True True"
    assert not env.pth.exists()
    assert env.probe() == "False False True True"


def test_compat_enable_after_the_sdk_imported_its_store_is_refused(env: Env) -> None:
    code = (
        "import uniqc.backend_adapter.task.store\n"
        "import uniqc_taskstore.compat as c\n"
        "from uniqc_taskstore import SdkSwapError\n"
        "try:\n"
        "    c.enable()\n"
        "except SdkSwapError as exc:\n"
        "    print(exc)\n"
    )
    assert "before the first import of uniqc" in env.probe(code)


def test_compat_enable_makes_the_sdk_module_follow_its_monkeypatched_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process: the SDK's tests monkeypatch the store module's default by name,
    and the stores built afterwards must use it."""
    write_stand_in_sdk(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    try:
        compat.enable()
        compat.enable()  # twice is once
        assert [f for f in sys.meta_path if f is SdkStoreFinder] == [SdkStoreFinder]
        module = importlib.import_module("uniqc.backend_adapter.task.store")
        assert module is compat
        monkeypatch.setattr("uniqc.backend_adapter.task.store.DEFAULT_CACHE_DIR", tmp_path / "p")
        with compat.TaskStore() as store:
            assert store.cache_dir == (tmp_path / "p").resolve()
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "uniqc"]:
            del sys.modules[name]


@pytest.mark.skipif(
    importlib.util.find_spec("uniqc") is not None, reason="the SDK is installed here"
)
def test_compat_enable_without_the_sdk_raises_sdk_swap_error() -> None:
    with pytest.raises(SdkSwapError, match="not installed"):
        compat.enable()
