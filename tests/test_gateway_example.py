"""examples/gateway.py under uvicorn: a real WebSocket client receives each change that
another process commits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from uniqc_taskstore import TaskStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WRITER = """
import sys
from uniqc_taskstore import TaskInfo, TaskStatus, TaskStore
store = TaskStore()
for task_id in sys.argv[1:]:
    store.save(TaskInfo(task_id, "dummy", TaskStatus.PENDING))
store.archive(sys.argv[1])
store.delete_archived(sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(location: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("UNIQC_TASKSTORE_URL",)}
    if "url" in location:
        env["UNIQC_TASKSTORE_URL"] = str(location["url"])
    else:
        env["UNIQC_CACHE_DIR"] = str(location["cache_dir"])
    return env


def test_gateway_pushes_each_change_another_process_commits(
    store: TaskStore, store_location: dict[str, Any]
) -> None:
    env = _environment(store_location)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gateway:app",
            "--app-dir",
            str(EXAMPLES),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = connect(f"ws://127.0.0.1:{port}/changes", open_timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        with client:
            start = json.loads(client.recv(timeout=30))
            assert set(start) == {"token"}
            ids = [f"uqt_{n:032x}" for n in (1, 2, 3)]
            subprocess.run([sys.executable, "-c", WRITER, *ids], env=env, check=True)
            got = [json.loads(client.recv(timeout=30)) for _ in range(5)]
        assert [(c["task_id"], c["kind"], c["status"]) for c in got] == [
            (ids[0], "saved", "pending"),
            (ids[1], "saved", "pending"),
            (ids[2], "saved", "pending"),
            (ids[0], "archived", "pending"),
            (ids[0], "purged", None),
        ]
        # A client that comes back with the last token it handled misses nothing.
        with connect(f"ws://127.0.0.1:{port}/changes?since={got[2]['token']}") as again:
            assert json.loads(again.recv(timeout=30)) == {"token": got[2]["token"]}
            replay = [json.loads(again.recv(timeout=30)) for _ in range(2)]
        # (Tokens are positions in the feed, not names of changes: compare the rest.)
        assert [_without_token(c) for c in replay] == [_without_token(c) for c in got[3:]]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise


def _without_token(change: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in change.items() if key != "token"}


@pytest.fixture(autouse=True)
def _needs_examples_extra() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
