"""Child-process workers of the reliability suite (``tests/test_reliability.py``).

Not a test module. pytest puts ``tests/`` on ``sys.path`` and multiprocessing hands
``sys.path`` to ``spawn`` children, so these functions are importable there. Every
worker records only what the store *acknowledged* (a call that returned) and
writes it to a JSON file or an fsync'ed ack file; the parent then checks the
database against that record. Exceptions reaching a worker are recorded, never
swallowed silently, and the tasks they touched are left out of the comparison.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, ClassVar

from uniqc_taskstore import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    aggregate_status,
    generate_uniqc_task_id,
)
from uniqc_taskstore.errors import TaskStoreError

RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2, "cancelled": 2}
"""How far a status is along pending -> running -> final."""
TERMINAL = frozenset({"success", "failed", "cancelled"})
DATABASE_FILENAME = "tasks.sqlite"
CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
BARRIER_TIMEOUT_SECONDS = 300.0

Location = dict[str, str]
"""``TaskStore(**location)``: ``{"cache_dir": ...}`` or ``{"url": ...}``."""


def describe_error(exc: BaseException) -> str:
    """Module-qualified type and message, short enough for a report line."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:400]


def write_json(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (the parent never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


# -- 1. many writers, mixed operations -------------------------------------------------------

Expected = dict[str, Any]
"""What one task must look like afterwards: ``where`` (live, archived or deleted),
its fields and its shards by index."""


def task_problems(store: TaskStore, task_id: str, expected: Expected) -> list[str]:
    """How the stored task differs from ``expected`` (empty when it matches)."""
    where = expected["where"]
    live, archived = store.get(task_id), store.get_archived(task_id)
    if where == "deleted":
        found = [name for name, row in (("live", live), ("archived", archived)) if row]
        return [f"{task_id}: deleted but still {', '.join(found)}"] if found else []
    task, other = (live, archived) if where == "live" else (archived, live)
    if task is None:
        return [f"{task_id}: missing from the {where} tasks"]
    problems = [f"{task_id}: also present outside the {where} tasks"] if other else []
    for name in ("backend", "shots", "metadata", "submit_time", "result", "error_message"):
        if getattr(task, name) != expected[name]:
            problems.append(f"{task_id}: {name} {getattr(task, name)!r} != {expected[name]!r}")
    if task.status.value != expected["status"]:
        problems.append(f"{task_id}: status {task.status.value} != {expected['status']}")
    shards = store.get_shards(task_id) if where == "live" else store.get_archived_shards(task_id)
    stored = {str(shard.shard_index): shard for shard in shards}
    if set(stored) != set(expected["shards"]):
        problems.append(f"{task_id}: shards {sorted(stored)} != {sorted(expected['shards'])}")
    for index, want in expected["shards"].items():
        shard = stored.get(index)
        if shard is None:
            continue
        got = {
            "platform_task_id": shard.platform_task_id,
            "status": shard.status.value,
            "sub_index_offset": shard.sub_index_offset,
            "circuit_count": shard.circuit_count,
            "result": shard.result,
            "error_message": shard.error_message,
        }
        if got != want:
            problems.append(f"{task_id}#{index}: {got} != {want}")
    return problems


class MixedWriter:
    """One process's share of the mixed workload, over tasks it alone owns."""

    WEIGHTS: ClassVar[dict[str, int]] = {
        "save": 13,
        "save_with_shards": 13,
        "save_many": 6,
        "save_shard": 10,
        "update_shard": 22,
        "resave": 8,
        "delete": 5,
        "archive": 7,
        "read": 16,
    }

    def __init__(self, store: TaskStore, worker: int, seed: int) -> None:
        self.store = store
        self.worker = worker
        self.rng = random.Random(seed)
        self.expected: dict[str, Expected] = {}
        self.uncertain: set[str] = set()
        self.errors: list[str] = []
        self.mismatches: list[str] = []
        self.done: Counter[str] = Counter()
        self.targets: list[str] = []
        """Existing tasks the running operation is about to write."""
        self.performed = ""
        """The operation that ran (a fallback when the drawn one had nothing to act on)."""
        self._serial = 0

    # -- bookkeeping ---------------------------------------------------------------------

    def _live(self, wanted: Callable[[Expected], bool] = lambda _: True) -> list[str]:
        return [
            task_id
            for task_id, exp in self.expected.items()
            if exp["where"] == "live" and task_id not in self.uncertain and wanted(exp)
        ]

    def _new_task(self, status: str) -> tuple[TaskInfo, Expected]:
        self._serial += 1
        metadata = {"worker": self.worker, "serial": self._serial, "note": self.rng.random()}
        result = {"counts": {"00": self._serial}} if status == "success" else None
        error = "failed at submission" if status == "failed" else None
        task = TaskInfo(
            task_id=generate_uniqc_task_id(),
            backend=self.rng.choice(["originq:WK_C180", "ibm:brisbane", "dummy"]),
            status=TaskStatus(status),
            result=result,
            shots=self.rng.randrange(1, 10_000),
            metadata=metadata,
            error_message=error,
        )
        expected: Expected = {
            "where": "live",
            "backend": task.backend,
            "status": status,
            "shots": task.shots,
            "metadata": metadata,
            "submit_time": task.submit_time,
            "result": result,
            "error_message": error,
            "shards": {},
        }
        return task, expected

    def _new_shards(self, task: TaskInfo, expected: Expected, count: int) -> list[TaskShard]:
        shards = []
        offset = sum(s["circuit_count"] for s in expected["shards"].values())
        first = len(expected["shards"])
        for index in range(first, first + count):
            circuits = self.rng.randrange(1, 4)
            shard = TaskShard(
                task.task_id,
                index,
                f"job-{task.task_id[4:12]}-{index}",
                task.backend,
                circuit_count=circuits,
                sub_index_offset=offset,
            )
            offset += circuits
            shards.append(shard)
        return shards

    @staticmethod
    def _expect_shards(expected: Expected, shards: Sequence[TaskShard]) -> None:
        for shard in shards:
            expected["shards"][str(shard.shard_index)] = {
                "platform_task_id": shard.platform_task_id,
                "status": shard.status.value,
                "sub_index_offset": shard.sub_index_offset,
                "circuit_count": shard.circuit_count,
                "result": None,
                "error_message": None,
            }

    # -- operations ----------------------------------------------------------------------

    def op_save(self) -> None:
        self.performed = "save"
        status = self.rng.choice(["pending", "running", "success", "failed", "cancelled"])
        task, expected = self._new_task(status)
        self.store.save(task)
        self.expected[task.task_id] = expected

    def op_save_with_shards(self) -> None:
        self.performed = "save_with_shards"
        task, expected = self._new_task("pending")
        shards = self._new_shards(task, expected, self.rng.randrange(1, 5))
        self.store.save(task, shards)
        self._expect_shards(expected, shards)
        expected["status"] = "running"  # the aggregate of its pending shards
        self.expected[task.task_id] = expected

    def op_save_many(self) -> None:
        self.performed = "save_many"
        made = [self._new_task("pending") for _ in range(self.rng.randrange(2, 4))]
        shards = [s for task, exp in made for s in self._new_shards(task, exp, 2)]
        self.store.save_many([task for task, _ in made], shards)
        for task, expected in made:
            self._expect_shards(expected, [s for s in shards if s.uniqc_task_id == task.task_id])
            expected["status"] = "running"  # the aggregate of its pending shards
            self.expected[task.task_id] = expected

    def op_save_shard(self) -> None:
        self.performed = "save_shard"
        candidates = self._live()
        if not candidates:
            self.op_save_with_shards()
            return
        task_id = self.rng.choice(candidates)
        expected = self.expected[task_id]
        task = TaskInfo(task_id, expected["backend"])
        (shard,) = self._new_shards(task, expected, 1)
        self.targets = [task_id]
        self.store.save_shard(shard)
        self._expect_shards(expected, [shard])
        expected["status"] = "running"  # a new platform job reopens even a finished task

    def op_update_shard(self) -> None:
        self.performed = "update_shard"
        open_shards = [
            (task_id, index)
            for task_id in self._live()
            for index, shard in self.expected[task_id]["shards"].items()
            if shard["status"] not in TERMINAL
        ]
        if not open_shards:
            self.op_save_with_shards()
            return
        task_id, index = self.rng.choice(open_shards)
        expected = self.expected[task_id]
        shard = expected["shards"][index]
        result, error = None, None
        if shard["status"] == "pending":
            status = "running"
        elif self.rng.random() < 0.85:
            status, result = "success", {"counts": {"0": self.rng.randrange(1000)}}
        else:
            status, error = "failed", "device calibration error"
        self.targets = [task_id]
        update = self.store.update_shard(
            task_id, int(index), status=status, result=result, error_message=error
        )
        shard.update(status=status, result=result, error_message=error)
        statuses = [s["status"] for s in expected["shards"].values()]
        aggregate = aggregate_status(statuses).value
        # A finished task is not reopened by a report about one of its shards.
        if not (expected["status"] in TERMINAL and aggregate not in TERMINAL):
            expected["status"] = aggregate
        if (update.applied, update.shard_status, update.task_status) != (
            True,
            status,
            expected["status"],
        ):
            self.mismatches.append(f"{task_id}#{index}: update_shard returned {update}")

    def op_resave(self) -> None:
        self.performed = "resave"
        candidates = self._live()
        if not candidates:
            self.op_save()
            return
        task_id = self.rng.choice(candidates)
        expected = self.expected[task_id]
        self._serial += 1
        metadata = {"worker": self.worker, "serial": self._serial, "resaved": True}
        task = TaskInfo(
            task_id=task_id,
            backend=expected["backend"],
            status=TaskStatus(expected["status"]),
            result=expected["result"],
            shots=self.rng.randrange(1, 10_000),
            metadata=metadata,
            error_message=expected["error_message"],
        )  # a fresh submit_time: the store must keep the first one
        self.targets = [task_id]
        self.store.save(task)
        expected.update(shots=task.shots, metadata=metadata)

    def op_delete(self) -> None:
        self.performed = "delete"
        candidates = self._live()
        if not candidates:
            self.op_save()
            return
        task_id = self.rng.choice(candidates)
        self.targets = [task_id]
        if self.store.delete(task_id) is not True:
            self.mismatches.append(f"{task_id}: delete of a live task returned False")
        self.expected[task_id]["where"] = "deleted"

    def op_archive(self) -> None:
        self.performed = "archive"
        candidates = self._live()  # finished or not: archive takes any task
        if not candidates:
            self.op_save()
            return
        task_id = self.rng.choice(candidates)
        self.targets = [task_id]
        if self.store.archive(task_id) is not True:
            self.mismatches.append(f"{task_id}: archive of a live task returned False")
        self.expected[task_id]["where"] = "archived"

    def op_read(self) -> None:
        self.performed = "read"
        mine = [t for t in self.expected if t not in self.uncertain]
        if not mine:
            self.op_save()
            return
        task_id = self.rng.choice(mine)
        self.mismatches.extend(task_problems(self.store, task_id, self.expected[task_id]))
        if self.rng.random() < 0.2:
            self.store.list(limit=20, include_results=False)
            self.store.count(status=["success", "failed"])

    # -- driver --------------------------------------------------------------------------

    def run(self, operations: int) -> None:
        names = list(self.WEIGHTS)
        weights = list(self.WEIGHTS.values())
        for _ in range(operations):
            name = self.rng.choices(names, weights)[0]
            before = set(self.expected)
            self.targets = []
            try:
                getattr(self, f"op_{name}")()
            except Exception as exc:  # every error that reaches the caller is a figure
                self.errors.append(f"{name}: {describe_error(exc)}")
                # What the failed call touched is unknown now: leave it out of the check.
                self.uncertain.update(set(self.expected) - before, self.targets)
            self.done[self.performed] += 1


def mixed_writer(
    location: Location, worker: int, operations: int, seed: int, barrier: Barrier, out: str
) -> None:
    """Run ``operations`` mixed calls on tasks this worker owns; write what was
    acknowledged (and every error) to ``out`` as JSON."""
    errors: list[str] = []
    writer: MixedWriter | None = None
    try:
        store = TaskStore(**location)  # type: ignore[arg-type]
        writer = MixedWriter(store, worker, seed)
        barrier.wait(BARRIER_TIMEOUT_SECONDS)
        writer.run(operations)
        store.close()
    except Exception as exc:
        errors.append(f"worker {worker}: {describe_error(exc)}")
    write_json(
        out,
        {
            "worker": worker,
            "errors": errors + (writer.errors if writer else []),
            "mismatches": writer.mismatches if writer else [],
            "expected": writer.expected if writer else {},
            "uncertain": sorted(writer.uncertain) if writer else [],
            "done": dict(writer.done) if writer else {},
        },
    )


# -- 2. kill -9 while writing ----------------------------------------------------------------

SHARDS_PER_TASK = 5
SHARDS_PER_BATCH_TASK = 2
TASKS_PER_BATCH = 3


def crash_writer(cache_dir: str, ack_path: str, ready_path: str, seed: int) -> None:
    """Write until killed: tasks saved with their shards, shard status updates and
    ``save_many`` batches. After each call returns, its ack line is appended to
    ``ack_path`` and fsync'ed. Each task's metadata says how many shards it was
    saved with and which batch it came in, so torn writes show without the acks."""
    rng = random.Random(seed)
    store = TaskStore(cache_dir)
    Path(ready_path).touch()
    progress: list[tuple[str, int, str]] = []  # (task id, shard index, acked status)
    with open(ack_path, "a", encoding="utf-8") as acks:

        def ack(record: dict[str, Any]) -> None:
            acks.write(json.dumps(record) + "\n")
            acks.flush()
            os.fsync(acks.fileno())

        while True:
            choice = rng.random()
            if choice < 0.35 or not progress:
                task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
                task.metadata = {"shards": SHARDS_PER_TASK, "batch": [task.task_id]}
                shards = [
                    TaskShard(task.task_id, i, f"job-{task.task_id[4:12]}-{i}", task.backend)
                    for i in range(SHARDS_PER_TASK)
                ]
                for i, shard in enumerate(shards):
                    shard.sub_index_offset = i  # one circuit each, in order
                store.save(task, shards)
                ack({"op": "save", "task": task.task_id})
                progress.extend((task.task_id, i, "pending") for i in range(SHARDS_PER_TASK))
            elif choice < 0.75:
                slot = rng.randrange(len(progress))
                task_id, index, status = progress[slot]
                status = "running" if status == "pending" else "success"
                store.update_shard(task_id, index, status=status, result={"n": index})
                ack({"op": "update", "task": task_id, "index": index, "status": status})
                if status == "success":
                    progress.pop(slot)
                else:
                    progress[slot] = (task_id, index, status)
            else:
                batch = [generate_uniqc_task_id() for _ in range(TASKS_PER_BATCH)]
                tasks = [
                    TaskInfo(i, "dummy", metadata={"shards": SHARDS_PER_BATCH_TASK, "batch": batch})
                    for i in batch
                ]
                shards = [
                    TaskShard(i, n, f"b-{i[4:12]}-{n}", "dummy", sub_index_offset=n)
                    for i in batch
                    for n in range(SHARDS_PER_BATCH_TASK)
                ]
                store.save_many(tasks, shards)
                ack({"op": "batch", "tasks": batch})


def read_acks(ack_path: Path) -> list[dict[str, Any]]:
    """Every complete ack line (a line cut short by the kill was never acknowledged)."""
    if not ack_path.exists():
        return []
    records = []
    for line in ack_path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


@contextmanager
def plain_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """The file through the plain sqlite3 module, as any other reader would open it."""
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What ``integrity_check`` and ``foreign_key_check`` report (empty when sound)."""
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
    problems += [f"foreign key: {row}" for row in conn.execute("PRAGMA foreign_key_check")]
    return problems


def crashed_writer_problems(
    conn: sqlite3.Connection, acks: Sequence[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """``(missing, torn)``: acknowledged writes not in the file, and writes seen only
    in part (a task without all its shards, a batch without all its tasks, a shard
    update without its task's new status)."""
    tasks = {
        task_id: (status, json.loads(metadata))
        for task_id, status, metadata in conn.execute(
            "SELECT task_id, status, metadata_json FROM tasks"
        )
    }
    shards: dict[str, dict[int, str]] = {}
    for task_id, index, status in conn.execute(
        "SELECT uniqc_task_id, shard_index, status FROM task_shards"
    ):
        shards.setdefault(task_id, {})[index] = status
    missing: list[str] = []
    for record in acks:
        if record["op"] == "save" and record["task"] not in tasks:
            missing.append(f"saved task {record['task']}")
        elif record["op"] == "batch":
            missing += [f"batch task {t}" for t in record["tasks"] if t not in tasks]
        elif record["op"] == "update":
            stored = shards.get(record["task"], {}).get(record["index"])
            if stored is None or RANK[stored] < RANK[record["status"]]:
                missing.append(f"update {record} (stored: {stored})")
    torn: list[str] = []
    for task_id, (status, metadata) in tasks.items():
        have = shards.get(task_id, {})
        if sorted(have) != list(range(metadata["shards"])):
            torn.append(f"task {task_id} has shards {sorted(have)} of {metadata['shards']}")
        absent = [t for t in metadata["batch"] if t not in tasks]
        if absent:
            torn.append(f"task {task_id} is in the file, its batch mates {absent} are not")
        statuses = list(have.values())
        if statuses and status != aggregate_status(statuses):  # the aggregate after every write
            torn.append(f"task {task_id} is {status} but its shards are {statuses}")
    return missing, torn


def migration_opener(cache_dir: str, ready_path: str) -> None:
    """Open (and so migrate) the store, then wait to be killed."""
    Path(ready_path).touch()
    TaskStore(cache_dir)
    time.sleep(3600)


# -- a legacy version-4 file, as the original implementation left it ---------------------------

_LEGACY_V4_DDL = (
    "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, backend TEXT NOT NULL, status TEXT NOT NULL, "
    "shots INTEGER NOT NULL DEFAULT 0, submit_time TEXT NOT NULL, update_time TEXT NOT NULL, "
    "result_json TEXT, metadata_json TEXT NOT NULL DEFAULT '{}', error_message TEXT)",
    "CREATE INDEX tasks_backend_idx ON tasks (backend)",
    "CREATE INDEX tasks_status_idx ON tasks (status)",
    "CREATE INDEX tasks_submit_time_idx ON tasks (submit_time)",
    "CREATE TABLE archived_tasks (task_id TEXT PRIMARY KEY, backend TEXT NOT NULL, "
    "status TEXT NOT NULL, shots INTEGER NOT NULL DEFAULT 0, submit_time TEXT NOT NULL, "
    "update_time TEXT NOT NULL, result_json TEXT, metadata_json TEXT NOT NULL DEFAULT '{}', "
    "archived_at TEXT NOT NULL, error_message TEXT)",
    "CREATE INDEX archived_backend_idx ON archived_tasks (backend)",
    "CREATE INDEX archived_status_idx ON archived_tasks (status)",
    "CREATE INDEX archived_submit_time_idx ON archived_tasks (submit_time)",
    "CREATE TABLE task_shards (uniqc_task_id TEXT NOT NULL, shard_index INTEGER NOT NULL, "
    "platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, circuit_count INTEGER NOT NULL "
    "DEFAULT 1, sub_index_offset INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, "
    "result_json TEXT, error_message TEXT, submit_time TEXT NOT NULL, update_time TEXT NOT NULL, "
    "PRIMARY KEY (uniqc_task_id, shard_index), "
    "FOREIGN KEY (uniqc_task_id) REFERENCES tasks (task_id) ON DELETE CASCADE)",
    "CREATE INDEX task_shards_platform_idx ON task_shards (platform_task_id)",
    "CREATE INDEX task_shards_status_idx ON task_shards (status)",
    "CREATE TABLE archived_task_shards (uniqc_task_id TEXT NOT NULL, shard_index INTEGER NOT "
    "NULL, platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, circuit_count INTEGER NOT "
    "NULL DEFAULT 1, sub_index_offset INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, "
    "result_json TEXT, error_message TEXT, submit_time TEXT NOT NULL, update_time TEXT NOT NULL, "
    "archived_at TEXT NOT NULL, PRIMARY KEY (uniqc_task_id, shard_index))",
    "CREATE INDEX archived_task_shards_platform_idx ON archived_task_shards (platform_task_id)",
)
LEGACY_UQT_TASKS = 20
"""Tasks already keyed by ``uqt_`` ids (with two shards each) in the legacy file."""


def legacy_id(n: int, archived: bool) -> str:
    """The platform id the original implementation used as task id for legacy row ``n``."""
    return f"{'arch' if archived else 'live'}-job-{n:06d}"


def legacy_metadata(n: int, archived: bool) -> tuple[str, str | None]:
    """Legacy row ``n``'s metadata text, and the name version 8 must give it: the
    metadata's ``task_name`` where that is a usable name, else none."""
    name = f"bell run {legacy_id(n, archived)}"
    documents: tuple[tuple[str, str | None], ...] = (
        ('{"circuit": "bell"}', None),
        ("[1, 2]", None),
        ("{not json", None),
        ("{}", None),
        (json.dumps({"task_name": name, "circuit": "bell"}), name),
        ('{"task_name": "   "}', None),  # blank: not a name
        ('{"task_name": 7}', None),  # not text: not a name
        ('{"task_name": "cut short"', None),  # not JSON at all
    )
    return documents[n % len(documents)]


def build_legacy_v4(directory: Path, live: int, archived: int) -> Path:
    """A version-4 ``tasks.sqlite`` with ``live`` + ``archived`` rows keyed by platform
    ids (naive and aware timestamps, odd metadata) and a few ``uqt_`` tasks with shards."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DATABASE_FILENAME
    conn = sqlite3.connect(path)
    try:
        for statement in _LEGACY_V4_DDL:
            conn.execute(statement)
        statuses = ("success", "failed", "running", "pending", "cancelled")

        def row(n: int, is_archived: bool) -> tuple[Any, ...]:
            stamp = f"2024-03-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(7 * n) % 60:02d}"
            submit = stamp if n % 3 else stamp + ".123456+00:00"  # the oldest rows are naive
            status = statuses[n % len(statuses)]
            metadata, _name = legacy_metadata(n, is_archived)
            return (
                legacy_id(n, is_archived),
                "originq:WK_C180" if n % 2 else "quafu:ScQ-P10",
                status,
                1000 + n,
                submit,
                "2024-04-01T00:00:00+00:00",
                json.dumps({"00": n, "11": 1000 - n}) if status == "success" else None,
                metadata,
                "platform error" if status == "failed" else None,
            )

        conn.executemany(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, "
            "result_json, metadata_json, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row(n, False) for n in range(live)],
        )
        conn.executemany(
            "INSERT INTO archived_tasks (task_id, backend, status, shots, submit_time, "
            "update_time, result_json, metadata_json, error_message, archived_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '2024-05-01T00:00:00+00:00')",
            [row(n, True) for n in range(archived)],
        )
        for n in range(LEGACY_UQT_TASKS):
            task_id = f"uqt_{n:032x}"
            conn.execute(
                "INSERT INTO tasks VALUES (?, 'dummy', 'running', 100, "
                "'2024-06-01T00:00:00+00:00', '2024-06-01T00:00:00+00:00', NULL, '{}', NULL)",
                (task_id,),
            )
            conn.executemany(
                "INSERT INTO task_shards VALUES (?, ?, ?, 'dummy', 1, ?, 'running', NULL, NULL, "
                "'2024-06-01T00:00:00+00:00', '2024-06-01T00:00:00+00:00')",
                [(task_id, i, f"uqt-job-{n}-{i}", i) for i in range(2)],
            )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
    finally:
        conn.close()
    return path


def copy_database(source: Path, directory: Path) -> Path:
    """A copy of a (closed, checkpointed) database file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(source, directory / DATABASE_FILENAME))


REKEYED_VERSION = 5
"""From this version on every legacy row is a ``uqt_`` task with one mirror shard."""
CANONICAL_TIMES_VERSION = 6
"""From this version on every stored time is canonical UTC text."""
NAMED_VERSION = 8
"""From this version on a task's ``name`` is its metadata's usable ``task_name``."""


def legacy_state_problems(conn: sqlite3.Connection, live: int, archived: int) -> list[str]:
    """Whether a (possibly interrupted) migration left a state its ``user_version``
    accounts for. Each data step's invariant holds from its version on: at 4 every
    legacy row untouched; from 5 every legacy row re-keyed exactly once (a ``uqt_``
    parent plus a mirroring shard); from 6 canonical times; from 8 names filled from
    the metadata's ``task_name`` where it is usable. The other steps change only the
    schema, which ``integrity_problems`` covers."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if not 4 <= version <= CURRENT_SCHEMA_VERSION:
        return [f"unexpected user_version {version} (current is {CURRENT_SCHEMA_VERSION})"]
    problems: list[str] = []
    for table, shard_table, count in (
        ("tasks", "task_shards", live),
        ("archived_tasks", "archived_task_shards", archived),
    ):
        archived_table = table == "archived_tasks"
        rows = conn.execute(f"SELECT task_id, metadata_json, submit_time FROM {table}").fetchall()
        legacy_rows = [r for r in rows if not r[0].startswith("uqt_")]
        uqt_expected = count + (0 if archived_table else LEGACY_UQT_TASKS)
        wanted = {legacy_id(n, archived_table) for n in range(count)}
        if version < REKEYED_VERSION:
            if {r[0] for r in legacy_rows} != wanted or len(rows) != uqt_expected:
                problems.append(f"v{version} {table}: {len(legacy_rows)} legacy rows of {count}")
            continue
        if legacy_rows:
            problems.append(f"v{version} {table}: {len(legacy_rows)} rows still un-keyed")
        if len(rows) != uqt_expected:
            problems.append(f"v{version} {table}: {len(rows)} rows, expected {uqt_expected}")
        origin = Counter(json.loads(metadata).get("legacy_platform_id") for _, metadata, _ in rows)
        origin.pop(None, None)
        if set(origin) != wanted or any(v != 1 for v in origin.values()):
            problems.append(f"v{version} {table}: legacy ids not each present exactly once")
        mirrored = Counter(
            pid
            for (pid,) in conn.execute(
                f"SELECT platform_task_id FROM {shard_table} WHERE shard_index = 0"
            )
        )
        if any(mirrored[pid] != 1 for pid in wanted):
            problems.append(f"v{version} {shard_table}: a legacy id lacks its one mirror shard")
        if version >= CANONICAL_TIMES_VERSION:
            odd = [t for _, _, t in rows if not CANONICAL_TIME.fullmatch(t)]
            if odd:
                problems.append(
                    f"v{version} {table}: {len(odd)} submit times not canonical, e.g. {odd[0]}"
                )
        if version >= NAMED_VERSION:
            problems += _name_problems(conn, table, count, version)
    return problems


def _name_problems(conn: sqlite3.Connection, table: str, count: int, version: int) -> list[str]:
    """Rows whose ``name`` is not the one their legacy metadata gives (none for the
    tasks that were never legacy rows)."""
    archived_table = table == "archived_tasks"
    want = {
        legacy_id(n, archived_table): legacy_metadata(n, archived_table)[1] for n in range(count)
    }
    wrong = [
        f"{json.loads(metadata).get('legacy_platform_id', task_id)}: {name!r}"
        for task_id, metadata, name in conn.execute(
            f"SELECT task_id, metadata_json, name FROM {table}"
        )
        if name != want.get(json.loads(metadata).get("legacy_platform_id"))
    ]
    named = sum(1 for name in want.values() if name is not None)
    if wrong or not named:
        return [
            f"v{version} {table}: {len(wrong)} names wrong (of {named} to fill), e.g. {wrong[:2]}"
        ]
    return []


# -- 3. racing pollers -----------------------------------------------------------------------


def truth(shard: dict[str, Any], moment: float) -> str:
    """The platform's status of ``shard`` at ``moment`` (0..1 of the run)."""
    if moment < shard["p"]:
        return "pending"
    if moment < shard["q"]:
        return "running"
    final: str = shard["final"]
    return final


def racing_poller(
    location: Location,
    worker: int,
    tasks: list[dict[str, Any]],
    operations: int,
    lag: float,
    seed: int,
    barrier: Barrier,
    out: str,
) -> None:
    """Poll the shared shards ``operations`` times, reporting what the platform said
    up to ``lag`` of the run ago: ``update_shard`` (70 %), ``save_shard`` with the same
    platform id and a stale status (15 %), ``save`` of the task with a stale status
    (15 %); read back after every write. Ends with one up-to-date poll per shard.
    Writes every observed status with its time window to ``out``."""
    rng = random.Random(seed)
    errors: list[str] = []
    observations: list[tuple[str, float, float, int]] = []
    counts: Counter[str] = Counter()
    shards = [(task, shard) for task in tasks for shard in task["shards"]]
    random_ops = max(0, operations - len(shards))

    def observe(task_id: str) -> None:
        start = time.monotonic()
        stored_shards = store.get_shards(task_id)
        stored_task = store.get(task_id)
        end = time.monotonic()
        for shard in stored_shards:
            key = f"{task_id}#{shard.shard_index}"
            observations.append((key, start, end, RANK[shard.status.value]))
        if stored_task is not None:
            observations.append((task_id, start, end, RANK[stored_task.status.value]))

    def poll(task: dict[str, Any], shard: dict[str, Any], status: str, kind: str) -> None:
        task_id, index = task["task_id"], shard["index"]
        start = time.monotonic()
        if kind == "update_shard":
            update = store.update_shard(
                task_id,
                index,
                status=status,
                result={"index": index} if status == "success" else None,
                error_message=f"shard {index} {status}"
                if status in ("failed", "cancelled")
                else None,
            )
            end = time.monotonic()
            counts["applied" if update.applied else "refused"] += 1
            observations.append((f"{task_id}#{index}", start, end, RANK[update.shard_status.value]))
            observations.append((task_id, start, end, RANK[update.task_status.value]))
            counts[kind] += 1
            return  # what update_shard returns is the stored state: no read-back needed
        if kind == "save_shard":
            store.save_shard(
                TaskShard(
                    task_id,
                    index,
                    shard["platform_task_id"],
                    task["backend"],
                    circuit_count=1,
                    sub_index_offset=index,
                    status=TaskStatus(status if status not in TERMINAL else "running"),
                    submit_time=task["submit_time"],
                )
            )
        else:
            store.save(
                TaskInfo(
                    task_id,
                    task["backend"],
                    status=TaskStatus(status if status not in TERMINAL else "running"),
                    submit_time=task["submit_time"],
                    metadata={"poller": worker},
                )
            )
        counts[kind] += 1
        observe(task_id)

    try:
        store = TaskStore(**location)  # type: ignore[arg-type]
        barrier.wait(BARRIER_TIMEOUT_SECONDS)
        plan = [(i / max(1, random_ops), *rng.choice(shards)) for i in range(random_ops)]
        plan += [(2.0, task, shard) for task, shard in shards]  # the final, current poll
        for moment, task, shard in plan:
            seen = truth(shard, max(0.0, moment - lag * rng.random()))
            draw = rng.random()
            kind = "update_shard" if moment > 1 or draw < 0.7 else "save_shard"
            if kind == "save_shard" and draw >= 0.85:
                kind = "save"
            try:
                poll(task, shard, seen, kind)
            except Exception as exc:
                errors.append(f"{kind}: {describe_error(exc)}")
        store.close()
    except Exception as exc:
        errors.append(f"worker {worker}: {describe_error(exc)}")
    write_json(
        out,
        {"worker": worker, "errors": errors, "observations": observations, "counts": counts},
    )


def count_regressions(observations: Sequence[Sequence[Any]]) -> tuple[int, list[str]]:
    """Observations of a non-final status that began after some observation of a final
    status of the same shard or task had ended: the store went back in time."""
    first_final: dict[str, float] = {}
    for key, _start, end, rank in observations:
        if rank == 2 and end < first_final.get(key, float("inf")):
            first_final[key] = end
    found = [
        f"{key}: rank {rank} seen from {start:.6f}, a final status by {first_final[key]:.6f}"
        for key, start, _end, rank in observations
        if rank < 2 and start > first_final.get(key, float("inf"))
    ]
    return len(found), found[:10]


# -- 4. status counters: writers killed mid-transaction ------------------------------------


def counter_writer(location: Location, ready_path: str, seed: int) -> None:
    """Change live tasks' statuses until killed: saves (new tasks, and status changes
    of stored ones), shard writes that settle a task's status, archive, restore, delete
    and ``clear_completed``, in a random mix. Touches ``ready_path`` after its first
    call returned. Every call's transaction either commits whole or not at all: the
    status counters are kept inside it."""
    rng = random.Random(seed)
    store = TaskStore(**location)  # type: ignore[arg-type]
    mine: list[str] = []
    statuses = [s.value for s in TaskStatus]
    first = True
    while True:
        # A refused call (a live twin, a busy spell) writes nothing.
        with contextlib.suppress(TaskStoreError):
            _counter_step(store, rng, mine, statuses)
        if first:
            Path(ready_path).touch()
            first = False


def _counter_step(
    store: TaskStore, rng: random.Random, mine: list[str], statuses: list[str]
) -> None:
    roll = rng.random()
    if roll < 0.35 or not mine:
        task_id = generate_uniqc_task_id()
        mine.append(task_id)
        store.save(TaskInfo(task_id, "dummy:sim", status=TaskStatus(rng.choice(statuses))))
    elif roll < 0.5:
        store.save(TaskInfo(rng.choice(mine), "dummy:sim", status=TaskStatus(rng.choice(statuses))))
    elif roll < 0.65:
        task_id = rng.choice(mine)
        shards = [TaskShard(task_id, i, f"job-{task_id}-{i}", "dummy:sim") for i in range(3)]
        store.save_shards(shards)
        store.update_shard(task_id, rng.randrange(3), status=TaskStatus(rng.choice(statuses)))
    elif roll < 0.75:
        store.archive(rng.choice(mine))
    elif roll < 0.85:
        store.restore(rng.choice(mine))
    elif roll < 0.95:
        store.delete(mine.pop(rng.randrange(len(mine))))
    else:
        store.clear_completed()
