"""Run the SDK's own task tests on this store: the compatibility contract.

Run by ``nox -s sdk`` with the interpreter of a virtual environment that holds
``unified-quantum``, ``pytest``, ``httpx`` and this project. It

1. points the SDK's ``uniqc.backend_adapter.task.store`` and
   ``uniqc.gateway.db.archive_store`` at :mod:`uniqc_taskstore.compat` the way a user
   does, with ``uniqc-tasks sdk enable`` (an import hook loaded by a ``.pth`` file: the
   SDK's module *is* the compat module, so a test's
   ``monkeypatch.setattr("uniqc.backend_adapter.task.store.DEFAULT_CACHE_DIR", ...)``
   reaches the module our ``TaskStore`` reads, and every importer, in this process or
   a subprocess, gets the same module), and checks that the swap took in a fresh
   interpreter (an environment reused from before the hook, whose SDK files were
   overwritten with a shim, gets the SDK's own files back first);
2. runs the SDK's shipped tests that touch tasks, with a fresh ``HOME``, a minimal
   environment (no credentials, no ``UNIQC_*`` variables) and an empty pytest
   configuration (the wheel ships neither the SDK's ``pytest.ini`` nor its top-level
   ``conftest.py``);
3. compares each test's outcome with ``expected_failures.txt`` beside this file and
   fails on any unexpected failure or error, on an expected failure that passed, and
   on a listed test that did not run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED_FILE = HERE / "expected_failures.txt"

TEST_PATHS = (
    "test_task_id_indirection.py",
    "backend_adapter/test_task_lifecycle_regressions.py",
    "backend_adapter/test_persistence_shim.py",
    "cloud/test_persistence.py",
    "cloud/test_task_manager.py",
    "gateway",
    "cli/test_main_cli_fixes.py",
    "cli/test_doctor_cli.py",
    "test_integration.py",
)

SWAPPED_MODULES = {
    "uniqc.backend_adapter.task.store": "backend_adapter/task/store.py",
    "uniqc.gateway.db.archive_store": "gateway/db/archive_store.py",
}
OLD_SHIM_MARK = "uniqc_taskstore.compat"
"""What the shim earlier versions of this script wrote over those files contains."""


def sdk_package_dir() -> Path:
    """Where the installed ``uniqc`` package lives, found without importing it."""
    spec = importlib.util.find_spec("uniqc")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("sdk: the SDK (unified-quantum) is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def restore_sdk_files(package: Path) -> None:
    """Reinstall the SDK if an earlier run overwrote its store modules with a shim."""
    for relative in SWAPPED_MODULES.values():
        target = package / relative
        if not target.is_file():
            sys.exit(f"sdk: {target} is missing; is this the SDK version the session pins?")
    if any(OLD_SHIM_MARK in (package / r).read_text("utf-8") for r in SWAPPED_MODULES.values()):
        version = importlib.metadata.version("unified-quantum")
        pin = f"unified-quantum=={version}"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", pin],
            check=True,
        )


def enable_swap(env: dict[str, str]) -> None:
    """``uniqc-tasks sdk enable``, then fail unless a fresh interpreter sees both SDK
    modules as the compat module."""
    script = Path(sys.executable).with_name("uniqc-tasks")
    subprocess.run([str(script), "sdk", "enable"], env=env, check=True)
    names = json.dumps(sorted(SWAPPED_MODULES))
    probe = (
        "import importlib, json, uniqc_taskstore.compat as c\n"
        f"bad = [n for n in json.loads({names!r}) if importlib.import_module(n) is not c]\n"
        "print(*bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sdk: the swap did not take: {done.stdout}{done.stderr}")


def read_expected() -> dict[str, str]:
    """``nodeid -> reason`` from the expected-failures file."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(EXPECTED_FILE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            sys.exit(f"sdk: {EXPECTED_FILE.name}:{number}: expected 'NODEID # REASON'")
        expected[nodeid.strip()] = reason.strip()
    return expected


def clean_env(home: Path) -> dict[str, str]:
    """A minimal environment: a fresh HOME and nothing that could carry credentials."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(HERE)  # for the outcome-recording plugin
    return env


def run_tests(package: Path, env: dict[str, str], work: Path, extra: list[str]) -> dict[str, str]:
    """Run the SDK tests; return ``nodeid -> passed|failed|error|skipped``."""
    tests = package / "test"
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")  # no SDK pytest.ini in the wheel
    outcomes_file = work / "outcomes.jsonl"
    env = env | {"UNIQC_SDK_OUTCOMES": str(outcomes_file)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(ini),
        "--rootdir",
        str(tests),
        "-p",
        "no:cacheprovider",
        "-p",
        "sdk_outcomes",
        "-q",
        "-rfE",
        *extra,
        *(str(tests / path) for path in TEST_PATHS),
    ]
    subprocess.run(command, env=env, cwd=work, check=False)
    outcomes: dict[str, str] = {}
    if outcomes_file.exists():
        for line in outcomes_file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            outcomes[record["nodeid"]] = _worse(outcomes.get(record["nodeid"]), record["outcome"])
    return outcomes


_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def _worse(old: str | None, new: str) -> str:
    return new if old is None or _RANK[new] > _RANK[old] else old


def main(argv: list[str]) -> int:
    package = sdk_package_dir()
    restore_sdk_files(package)
    expected = read_expected()
    with tempfile.TemporaryDirectory(prefix="uniqc-sdk-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = clean_env(home)
        enable_swap(env)
        outcomes = run_tests(package, env, work, argv)

    counts = Counter(outcomes.values())
    bad = {"failed", "error"}
    unexpected = sorted(n for n, o in outcomes.items() if o in bad and n not in expected)
    fixed = sorted(n for n in expected if outcomes.get(n) == "passed")
    # With extra pytest arguments (-k, a narrower selection) listed tests may not run.
    missing = [] if argv else sorted(n for n in expected if n not in outcomes)
    expected_bad = sum(1 for n in expected if outcomes.get(n) in bad)

    print()
    print(f"sdk: {len(outcomes)} tests of unified-quantum on uniqc_taskstore.compat")
    for nodeid in unexpected:
        print(f"sdk: UNEXPECTED {outcomes[nodeid].upper()}: {nodeid}")
    for nodeid in fixed:
        print(f"sdk: UNEXPECTED PASS (remove it from {EXPECTED_FILE.name}): {nodeid}")
    for nodeid in missing:
        print(f"sdk: LISTED BUT NOT RUN (remove it from {EXPECTED_FILE.name}): {nodeid}")
    for nodeid, reason in expected.items():
        if outcomes.get(nodeid) in bad:
            print(f"sdk: expected {outcomes[nodeid]}: {nodeid} ({reason})")
    print(
        f"sdk: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
        f"{counts['skipped']} skipped; {expected_bad} of them expected "
        f"({EXPECTED_FILE.name}), {len(unexpected)} unexpected"
    )
    if not outcomes:
        print("sdk: no test ran")
        return 1
    return 1 if unexpected or fixed or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
