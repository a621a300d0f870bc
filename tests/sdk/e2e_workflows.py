"""The SDK's workflows as its users drive them, on this store (``nox -s sdk-e2e``).

Run by pytest with the interpreter of an environment holding ``unified-quantum`` (the
version ``noxfile.SDK_VERSION`` pins) and this project; the default suite does not
collect this file (its name does not start with ``test_``). Every command runs in a
subprocess of that environment with a temporary ``HOME`` (never the real one), no
credentials and no ``UNIQC_*`` variables but the ones a test sets:

- the same user workflow (``uniqc submit --wait``, ``uniqc result``, the Python
  ``submit_task`` / ``submit_batch`` / ``wait_for_result``, the gateway started with
  ``uniqc gateway start`` and its ``/api/tasks``, ``/api/tasks/counts``, shards,
  archive, restore and bulk-archive endpoints over HTTP, then ``uniqc task list`` and
  ``task show``) on the SDK's own store, then after ``uniqc-tasks sdk enable`` on
  SQLite and on PostgreSQL (a fresh database, ``UNIQC_TASKSTORE_URL``); what the user
  sees must be the same, ids and times aside;
- ``uniqc-tasks sdk disable`` gives the SDK its own store back;
- files shared with the original: the SDK's own store (in processes without the swap)
  writes a file, this store upgrades it, the original writes again, and each reads
  every task, shard and archived task the other wrote the same.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import (
    CURRENT_SCHEMA_VERSION,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    compat,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("uniqc") is None,
    reason="needs the SDK (unified-quantum) installed: run nox -s sdk-e2e",
)

BIN = Path(sys.executable).parent
BELL = "QINIT 2\nCREG 2\nH q[0]\nCNOT q[0],q[1]\nMEASURE q[0],c[0]\nMEASURE q[1],c[1]\n"
MISSING_ID = "uqt_" + "0" * 32
TIME_KEYS = ("submit_time", "update_time", "archived_at")
ORIGINAL_TASK_KEYS = (
    "task_id",
    "backend",
    "status",
    "result",
    "shots",
    "submit_time",
    "update_time",
    "metadata",
    "error_message",
    "archived_at",
)
ORIGINAL_SHARD_KEYS = (
    "uniqc_task_id",
    "shard_index",
    "platform_task_id",
    "backend",
    "circuit_count",
    "sub_index_offset",
    "status",
    "result",
    "error_message",
    "submit_time",
    "update_time",
)


@dataclass
class User:
    """One user of the SDK: a home directory, and optionally a database URL."""

    home: Path
    url: str | None = None

    def env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
        env = {name: os.environ[name] for name in keep if name in os.environ}
        # Wide enough that rich never folds a JSON line the SDK prints.
        env.update(HOME=str(self.home), COLUMNS="4000", NO_COLOR="1", PYTHONHASHSEED="0")
        if self.url is not None:
            env["UNIQC_TASKSTORE_URL"] = self.url
        return env

    def run(self, program: str, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(BIN / program), *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"{program} {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def json(self, program: str, *args: str) -> Any:
        """The JSON documents the command printed (one, or a list of several)."""
        text, found, decoder = self.run(program, *args).strip(), [], json.JSONDecoder()
        while text:
            value, end = decoder.raw_decode(text)
            found.append(value)
            text = text[end:].strip()
        return found[0] if len(found) == 1 else found

    def python(self, code: str, *args: str) -> Any:
        """Run ``code`` in the environment's interpreter; its last line, as JSON."""
        return json.loads(self.run("python", "-c", code, *args).splitlines()[-1])


def _user(root: Path, url: str | None = None) -> User:
    root.mkdir(parents=True)
    return User(root, url)


Swap = Callable[[str], None]


@pytest.fixture(scope="module", autouse=True)
def swap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swap]:
    """``uniqc-tasks sdk enable`` / ``disable`` (with a temporary HOME, like every
    command here); the environment is left as it was built, the SDK on its own store."""
    user = _user(tmp_path_factory.mktemp("swap") / "home")

    def run(command: str) -> None:
        user.run("uniqc-tasks", "sdk", command)

    yield run
    run("disable")


# -- the workflow ----------------------------------------------------------------------------

PYTHON_WORKFLOW = """
import json, sys
from uniqc import submit_batch, submit_task, wait_for_result
from uniqc.backend_adapter.task.store import TaskStore

circuit = open(sys.argv[1]).read()
single = submit_task(
    circuit, backend="dummy:local:simulator", shots=64, metadata={"task_name": "py-bell"}
)
counts = wait_for_result(single, timeout=120, poll_interval=0.1).counts
batch = submit_batch([circuit] * 3, backend="dummy:local:simulator", shots=32)
batch_counts = [r.counts for r in wait_for_result(batch, timeout=120, poll_interval=0.1)]
print(json.dumps({
    "single": single, "batch": batch, "counts": counts, "batch_counts": batch_counts,
    "store": type(TaskStore()).__module__,
}))
"""


def drive(user: User) -> tuple[dict[str, Any], dict[str, str]]:
    """The workflow; returns what the user saw (ids as labels, times as whether they
    are set) and the label of each task id."""
    circuit = user.home / "bell.originir"
    circuit.write_text(BELL, encoding="utf-8")
    submitted, result = user.json(
        "uniqc", "submit", str(circuit), "--shots", "100", "--name", "cli-bell", "--wait",
        "-f", "json",
    )  # fmt: skip
    py = user.python(PYTHON_WORKFLOW, str(circuit))
    cli_id, py_id, batch_id = submitted["task_id"], py["single"], py["batch"]
    labels = {cli_id: "<cli>", py_id: "<py>", batch_id: "<batch>"}
    seen: dict[str, Any] = {"submit": [submitted, result], "python": py}
    seen["result"] = user.json("uniqc", "result", cli_id, "-f", "json")
    with gateway(user) as api:
        seen["gateway"] = {
            "counts": api("GET", "/api/tasks/counts"),
            "tasks": api("GET", "/api/tasks"),
            "task": api("GET", f"/api/tasks/{cli_id}"),
            "shards": api("GET", f"/api/tasks/{batch_id}/shards"),
            "archive": api("POST", f"/api/tasks/{cli_id}/archive"),
            "archived": api("GET", "/api/archive"),
            "archived_task": api("GET", f"/api/archive/{cli_id}"),
            "restore": api("POST", f"/api/archive/restore/{cli_id}"),
            "counts_restored": api("GET", "/api/tasks/counts"),
            "bulk_archive": api(
                "POST", "/api/tasks/bulk-archive", {"task_ids": [cli_id, py_id, MISSING_ID]}
            ),
            "counts_after": api("GET", "/api/tasks/counts"),
            "archived_after": api("GET", "/api/archive?limit=10"),
            "missing": api("GET", f"/api/tasks/{MISSING_ID}"),
        }
    seen["task_list"] = user.json("uniqc", "task", "list", "-f", "json")
    seen["task_show"] = user.json("uniqc", "task", "show", batch_id, "-f", "json")
    return _normalized(seen, labels), labels


def _normalized(value: Any, labels: dict[str, str]) -> Any:
    """Task ids as labels, timestamps as whether they are set, the module names of the
    two stores as one name: what must match between the SDK's store and ours."""
    if isinstance(value, dict):
        return {
            key: (item is not None)
            if key in TIME_KEYS
            else (None if key == "store" else _normalized(item, labels))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_normalized(item, labels) for item in value]
    if isinstance(value, str):
        for task_id, label in labels.items():
            value = value.replace(task_id, label)
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def gateway(user: User) -> Iterator[Callable[..., Any]]:
    """``uniqc gateway start`` on a free port; yields ``api(method, path, body=None)``
    (the JSON answer, or ``{"status": code}`` for an HTTP error); stops it after."""
    port = _free_port()
    user.run("uniqc", "gateway", "start", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def api(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return {"status": error.code}

    cache = Path(user.env()["HOME"]) / ".uniqc" / "cache"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if api("GET", "/api/health") == {"status": "ok"}:
                    break
            except OSError:
                pass
            log = cache / "gateway.log"
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.5)
        yield api
    finally:
        pid_file = cache / "gateway.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        user.run("uniqc", "gateway", "stop", check=False)
        if pid is not None:  # the server this test started, if stop left it running
            _end(pid)


def _end(pid: int) -> None:
    """Wait for the gateway process to exit after ``stop``; kill it if it does not."""
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- the SDK's own store, then ours on SQLite and PostgreSQL ------------------------------------


@pytest.fixture(scope="module")
def own_store_run(tmp_path_factory: pytest.TempPathFactory, swap: Swap) -> dict[str, Any]:
    """The workflow on the SDK's own store (no swap): what ours must show too."""
    swap("disable")
    seen, _ = drive(_user(tmp_path_factory.mktemp("own") / "home"))
    return seen


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory, swap: Swap) -> tuple[User, dict[str, Any]]:
    """The workflow on this store's SQLite file, after ``uniqc-tasks sdk enable``."""
    swap("enable")
    user = _user(tmp_path_factory.mktemp("ours") / "home")
    seen, _ = drive(user)
    return user, seen


def test_workflow_on_the_sdks_own_store_is_the_baseline(own_store_run: dict[str, Any]) -> None:
    assert own_store_run["python"]["counts"] == {"00": 32, "11": 32}
    assert own_store_run["gateway"]["counts"]["success"] == 3
    assert own_store_run["gateway"]["bulk_archive"]["missing"] == [MISSING_ID]


def test_enabled_sdk_shows_the_same_on_our_sqlite_file(
    own_store_run: dict[str, Any], sqlite_run: tuple[User, dict[str, Any]]
) -> None:
    user, seen = sqlite_run
    assert seen == own_store_run
    status = user.json("uniqc-tasks", "sdk", "status", "--json")
    assert status["store"] == "uniqc-taskstore"
    assert status["location"] == f"SQLite file {user.home / '.uniqc' / 'cache' / 'tasks.sqlite'}"
    assert status["schema_version"] == CURRENT_SCHEMA_VERSION
    stored = user.python(
        "import json, uniqc.backend_adapter.task.store as s\n"
        "print(json.dumps([s.__name__, s.TaskStore().count(), s.TaskStore().count_archived()]))"
    )
    assert stored == ["uniqc_taskstore.compat", 1, 2]


def test_enabled_sdk_shows_the_same_on_postgresql(
    own_store_run: dict[str, Any],
    fresh_database_url: Callable[[str], str],
    tmp_path: Path,
    swap: Swap,
) -> None:
    url = fresh_database_url("postgresql")
    swap("enable")
    user = _user(tmp_path / "home", url)
    seen, labels = drive(user)
    assert seen == own_store_run
    # The CLI, the Python API and the gateway's uvicorn process all wrote to the server.
    with TaskStore.from_url(url) as ours:
        assert {t.task_id for t in ours.list()} | {t.task_id for t in ours.list_archived()} == set(
            labels
        )
        assert (ours.count(), ours.count_archived()) == (1, 2)
    # No task file; the gateway's pid and log files still go to the cache directory.
    cache = user.home / ".uniqc" / "cache"
    assert not (cache / "tasks.sqlite").exists()
    assert (cache / "gateway.log").exists()
    status = user.json("uniqc-tasks", "sdk", "status", "--json")
    assert (status["store"], status["schema_version"]) == (
        "uniqc-taskstore",
        CURRENT_SCHEMA_VERSION,
    )
    assert status["location"].startswith("database postgresql+psycopg://")
    # What the README says the SDK does not know: its doctor looks only at the file.
    assert "Task database not found" in user.run("uniqc", "doctor", check=False)


def test_disable_gives_the_sdk_its_own_store_back(
    sqlite_run: tuple[User, dict[str, Any]], tmp_path: Path, swap: Swap
) -> None:
    user, _ = sqlite_run
    with TaskStore(user.home / ".uniqc" / "cache") as ours:
        ours_active = [t.task_id for t in ours.list()]
    swap("disable")
    status = user.json("uniqc-tasks", "sdk", "status", "--json")
    assert (status["store"], status["enabled"]) == ("sdk", False)
    # The SDK's own store, on the file ours upgraded: the same tasks.
    listed = user.json("uniqc", "task", "list", "-f", "json")
    assert [t["task_id"] for t in listed] == ours_active
    module = user.python(
        "import json, uniqc.backend_adapter.task.store as s\n"
        "print(json.dumps([s.__name__, type(s.TaskStore()).__module__]))"
    )
    assert module == ["uniqc.backend_adapter.task.store"] * 2
    # With the swap off, a URL in the environment is not read: the SDK's own file is.
    on_server = _user(tmp_path / "home", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert "No tasks found" in on_server.run("uniqc", "task", "list", "-f", "json")
    notes = on_server.json("uniqc-tasks", "sdk", "status", "--json")["notes"]
    assert any("ignores UNIQC_TASKSTORE_URL" in note for note in notes)


# -- files shared with the original ---------------------------------------------------------------

ORIGINAL = """
import json, sqlite3, sys
from pathlib import Path

# A process without the swap, whatever the environment's .pth says: the SDK's own code.
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "SdkStoreFinder"]
import uniqc.backend_adapter.task.store as original
from uniqc.gateway.db.archive_store import ArchiveStore

assert hasattr(original, "_row_to_info"), "the swap is still on"
original.DEFAULT_CACHE_DIR = Path(sys.argv[1])
store, archive = original.TaskStore(), ArchiveStore()
TaskInfo, TaskShard = original.TaskInfo, original.TaskShard


def tid(n):
    return f"uqt_{n:032x}"


def save(n, backend, status, shards=0, circuits=1, **fields):
    store.save(TaskInfo(task_id=tid(n), backend=backend, status=status, **fields))
    for i in range(shards):
        store.save_shard(TaskShard(
            tid(n), i, f"job-{n}-{i}", backend, circuits, i * circuits, status,
            result={"0": i} if status == "success" else None,
            error_message="boom" if status == "failed" else None,
        ))


def step_create():
    save(1, "originq:WK_C180", "success", 2, shots=10, result={"00": 5, "11": 5},
         metadata={"task_name": "orig-one", "circuit_language": "OriginIR"})
    save(2, "dummy:local:simulator", "failed", 1, error_message="boom")
    save(3, "dummy:local:simulator", "running", 1)
    save(7, "originq:WK_C180", "pending", metadata={"nested": {"a": [1, 2.5, None]}})
    assert archive.archive_task(tid(3))


def step_after_upgrade():
    save(4, "dummy:local:simulator", "success", 3, shots=30,
         result=[{"00": 1}, {"11": 1}, {"01": 1}], metadata={"task_name": "orig-four"})
    save(5, "originq:WK_C180", "pending", 1)
    save(5, "originq:WK_C180", "running")
    assert archive.archive_task(tid(1))
    assert archive.restore_task(tid(3))
    assert store.delete(tid(2))


def dump():
    tasks = {t.task_id: t.to_dict() for t in store.list()}
    return {
        "version": sqlite3.connect(store.db_path).execute("PRAGMA user_version").fetchone()[0],
        "tasks": tasks,
        "shards": {i: [s.to_dict() for s in store.get_shards(i)] for i in tasks},
        "archived": {t.task_id: t.to_dict() for t in archive.list_archived()},
    }


for step in sys.argv[2:]:
    globals()["step_" + step]()
print(json.dumps(dump()))
"""


def tid(n: int) -> str:
    return f"uqt_{n:032x}"


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _as_original(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A task or shard as the original's ``to_dict`` has it, times as instants."""
    out = {key: record.get(key) for key in keys if key in record or key != "archived_at"}
    for key in TIME_KEYS:
        if key in out:
            out[key] = _instant(out[key])
    status = out.get("status")
    if isinstance(status, TaskStatus):
        out["status"] = status.value
    return out


def _ours_dump(store: compat.TaskStore) -> dict[str, Any]:
    tasks = {t.task_id: t for t in store.list()}
    return {
        "tasks": {i: _as_original(t.to_dict(), ORIGINAL_TASK_KEYS) for i, t in tasks.items()},
        "shards": {
            i: [_as_original(s.to_dict(), ORIGINAL_SHARD_KEYS) for s in store.get_shards(i)]
            for i in tasks
        },
        "archived": {
            t.task_id: _as_original(t.to_dict(), ORIGINAL_TASK_KEYS) for t in store.list_archived()
        },
    }


def _original_dump(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "tasks": {i: _as_original(t, ORIGINAL_TASK_KEYS) for i, t in raw["tasks"].items()},
        "shards": {
            i: [_as_original(s, ORIGINAL_SHARD_KEYS) for s in shards]
            for i, shards in raw["shards"].items()
        },
        "archived": {i: _as_original(t, ORIGINAL_TASK_KEYS) for i, t in raw["archived"].items()},
    }


def _raw_archived_shards(cache: Path, task_id: str) -> list[dict[str, Any]]:
    """Archived shards as the original stored them (it reads them only by restoring)."""
    with sqlite3.connect(cache / "tasks.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM archived_task_shards WHERE uniqc_task_id = ? ORDER BY shard_index",
            (task_id,),
        ).fetchall()
    return [
        _as_original(
            dict(row) | {"result": json.loads(row["result_json"]) if row["result_json"] else None},
            ORIGINAL_SHARD_KEYS,
        )
        for row in rows
    ]


@dataclass
class SharedFile:
    """A cache directory the original wrote, this store upgraded, the original wrote again."""

    cache: Path
    user: User
    created: dict[str, Any]
    """The original's view after it created the file (schema version 5)."""
    archived_shards_created: list[dict[str, Any]]
    """The archived shards of task 3 as the original stored them."""
    upgraded: dict[str, Any]
    """Our view right after opening (and so upgrading) the file."""
    archived_shards_upgraded: list[dict[str, Any]]
    after: dict[str, Any]
    """The original's view after it wrote into the upgraded file."""
    version_after: int

    def original(self, *steps: str) -> tuple[int, dict[str, Any]]:
        """Run the original's steps; its schema version read and its view of the file."""
        return _original(self.user, self.cache, *steps)


def _original(user: User, cache: Path, *steps: str) -> tuple[int, dict[str, Any]]:
    raw = user.python(ORIGINAL, str(cache), *steps)
    return raw.pop("version"), _original_dump(raw)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedFile:
    root = tmp_path_factory.mktemp("shared")
    user, cache = _user(root / "home"), root / "cache"
    version, created = _original(user, cache, "create")
    assert version == 5
    archived_created = _raw_archived_shards(cache, tid(3))
    with compat.TaskStore(cache) as ours:  # opening it upgrades the file
        assert ours.schema_version == CURRENT_SCHEMA_VERSION
        upgraded = _ours_dump(ours)
        archived_upgraded = [
            _as_original(s.to_dict(), ORIGINAL_SHARD_KEYS) for s in ours.get_archived_shards(tid(3))
        ]
    version_after, after = _original(user, cache, "after_upgrade")
    return SharedFile(
        cache, user, created, archived_created, upgraded, archived_upgraded, after, version_after
    )


def test_our_upgrade_reads_every_row_the_original_wrote(shared: SharedFile) -> None:
    assert set(shared.created["tasks"]) == {tid(1), tid(2), tid(7)}
    assert set(shared.created["archived"]) == {tid(3)}
    assert shared.upgraded == shared.created
    assert shared.archived_shards_upgraded == shared.archived_shards_created
    assert len(shared.archived_shards_created) == 1


def test_rows_the_original_writes_after_our_upgrade_read_the_same(shared: SharedFile) -> None:
    assert shared.version_after == CURRENT_SCHEMA_VERSION  # the original left it as it was
    assert set(shared.after["tasks"]) == {tid(3), tid(4), tid(5), tid(7)}
    assert set(shared.after["archived"]) == {tid(1)}
    with compat.TaskStore(shared.cache) as ours:
        assert _ours_dump(ours) == shared.after
        # Archived by the original after the upgrade: its shards went with it.
        archived = [
            _as_original(s.to_dict(), ORIGINAL_SHARD_KEYS) for s in ours.get_archived_shards(tid(1))
        ]
        assert archived == shared.created["shards"][tid(1)]
        # Deleted by the original: its shard went too (the foreign key still cascades).
        assert ours.get_shards(tid(2)) == []
        assert ours.get_archived(tid(2)) is None


def test_our_filters_find_the_rows_the_original_wrote_after_our_upgrade(shared: SharedFile) -> None:
    with compat.TaskStore(shared.cache) as ours:
        assert [t.task_id for t in ours.list(status="success")] == [tid(4)]
        assert {t.task_id for t in ours.list(status="running")} == {tid(3), tid(5)}
        assert ours.count(status="pending") == 1
        assert {t.task_id for t in ours.list(backend="dummy:local:simulator")} == {tid(3), tid(4)}
        assert ours.find_uniqc_id_by_platform_id("job-4-2") == tid(4)
        assert ours.get_shard_by_platform_id("job-5-0") is not None
        assert [t.task_id for t in ours.list_archived(status="success")] == [tid(1)]


def test_platform_and_name_filters_find_the_rows_the_original_wrote(shared: SharedFile) -> None:
    with compat.TaskStore(shared.cache) as ours:
        assert {t.task_id for t in ours.list(backend="dummy")} == {tid(3), tid(4)}
        assert [t.task_id for t in ours.list(name="orig-four")] == [tid(4)]


def test_the_original_reads_what_we_write_into_the_shared_file(shared: SharedFile) -> None:
    six = TaskInfo(tid(6), "originq:WK_C180", status=TaskStatus.RUNNING, shots=20,
                   metadata={"task_name": "ours-six"})  # fmt: skip
    shards = [
        TaskShard(tid(6), i, f"job-6-{i}", six.backend, 2, 2 * i, status=TaskStatus.RUNNING)
        for i in range(2)
    ]
    with compat.TaskStore(shared.cache) as ours:
        ours.save(six, shards)
        for i in range(2):
            ours.update_shard(tid(6), i, status=TaskStatus.SUCCESS, result=[{"00": i}, {"11": i}])
        archive = compat.ArchiveStore(ours)
        assert archive.archive_task(tid(4))
        assert archive.restore_task(tid(1))
        mine = _ours_dump(ours)
    _, theirs = shared.original()
    assert theirs == mine
    assert theirs["tasks"][tid(6)]["status"] == "success"
    assert [s["result"] for s in theirs["shards"][tid(6)]] == [
        [{"00": 0}, {"11": 0}],
        [{"00": 1}, {"11": 1}],
    ]
    # Archived by the original, restored by us: the shards it saved, unchanged.
    assert theirs["shards"][tid(1)] == shared.created["shards"][tid(1)]
    assert set(theirs["archived"]) == {tid(4)}
