"""SQLite files as the original implementation left them on users' disks.

Not a test module: builders used by the migration tests. Each builder writes a
``tasks.sqlite`` with the plain :mod:`sqlite3` module and the exact DDL of the
SPEC's versions 1-5, stamps ``application_id`` (or leaves 0, as the oldest files
do) and ``user_version``, inserts rows the way the old code wrote them
(``json.dumps`` with its ``NaN`` literals, naive local times, platform ids as task
ids) and returns what it wrote together with what the store must read back.

Naive timestamps are local time. The tests pin local time to :data:`LOCAL_TZ`
(UTC+8, no daylight saving) so that "interpreted as local time" is observable;
:func:`expected_instant` is the canonical UTC text a stored timestamp must become.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from uniqc_taskstore import APPLICATION_ID

DATABASE_FILENAME = "tasks.sqlite"
LOCAL_TZ = "CST-8"
"""POSIX ``TZ`` value the tests set: local time is UTC+8 all year."""
LOCAL_UTC_OFFSET = timedelta(hours=8)
LEGACY_VERSIONS = (1, 2, 3, 4, 5)
FRESH_KINDS = ("missing_directory", "empty_file", "blank_file", "blank_stamped_file")
"""Version-0 locations: nothing there yet, a zero-byte file, a SQLite file without
tables (application_id 0), and our own stamped file whose first migration never ran."""

LEGACY_DDL: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, backend TEXT NOT NULL, "
        "status TEXT NOT NULL, shots INTEGER NOT NULL DEFAULT 0, submit_time TEXT NOT NULL, "
        "update_time TEXT NOT NULL, result_json TEXT, "
        "metadata_json TEXT NOT NULL DEFAULT '{}')",
        "CREATE INDEX IF NOT EXISTS tasks_backend_idx ON tasks(backend)",
        "CREATE INDEX IF NOT EXISTS tasks_status_idx ON tasks(status)",
        "CREATE INDEX IF NOT EXISTS tasks_submit_time_idx ON tasks(submit_time)",
    ),
    2: (
        "CREATE TABLE IF NOT EXISTS archived_tasks (task_id TEXT PRIMARY KEY, "
        "backend TEXT NOT NULL, status TEXT NOT NULL, shots INTEGER NOT NULL DEFAULT 0, "
        "submit_time TEXT NOT NULL, update_time TEXT NOT NULL, result_json TEXT, "
        "metadata_json TEXT NOT NULL DEFAULT '{}', archived_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS archived_backend_idx ON archived_tasks(backend)",
        "CREATE INDEX IF NOT EXISTS archived_status_idx ON archived_tasks(status)",
        "CREATE INDEX IF NOT EXISTS archived_submit_time_idx ON archived_tasks(submit_time)",
    ),
    3: (
        "ALTER TABLE tasks ADD COLUMN error_message TEXT",
        "ALTER TABLE archived_tasks ADD COLUMN error_message TEXT",
    ),
    4: (
        "CREATE TABLE IF NOT EXISTS task_shards (uniqc_task_id TEXT NOT NULL, "
        "shard_index INTEGER NOT NULL, platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, "
        "circuit_count INTEGER NOT NULL DEFAULT 1, sub_index_offset INTEGER NOT NULL DEFAULT 0, "
        "status TEXT NOT NULL, result_json TEXT, error_message TEXT, "
        "submit_time TEXT NOT NULL, update_time TEXT NOT NULL, "
        "PRIMARY KEY (uniqc_task_id, shard_index), "
        "FOREIGN KEY (uniqc_task_id) REFERENCES tasks(task_id) ON DELETE CASCADE)",
        "CREATE INDEX IF NOT EXISTS task_shards_platform_idx ON task_shards(platform_task_id)",
        "CREATE INDEX IF NOT EXISTS task_shards_status_idx ON task_shards(status)",
        "CREATE TABLE IF NOT EXISTS archived_task_shards (uniqc_task_id TEXT NOT NULL, "
        "shard_index INTEGER NOT NULL, platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, "
        "circuit_count INTEGER NOT NULL DEFAULT 1, sub_index_offset INTEGER NOT NULL DEFAULT 0, "
        "status TEXT NOT NULL, result_json TEXT, error_message TEXT, "
        "submit_time TEXT NOT NULL, update_time TEXT NOT NULL, archived_at TEXT NOT NULL, "
        "PRIMARY KEY (uniqc_task_id, shard_index))",
        "CREATE INDEX IF NOT EXISTS archived_task_shards_platform_idx "
        "ON archived_task_shards(platform_task_id)",
    ),
    5: (),  # data only: platform-keyed tasks re-keyed (see _as_rekeyed_by_v5)
}


@dataclass(frozen=True)
class LegacyShard:
    """One shard row as written (times as raw text, result as the JSON value)."""

    uniqc_task_id: str
    shard_index: int
    platform_task_id: str
    backend: str
    status: str
    submit_time: str
    update_time: str
    circuit_count: int = 1
    sub_index_offset: int = 0
    result: Any = None
    error_message: str | None = None


@dataclass(frozen=True)
class LegacyTask:
    """One task row as written, and the metadata the store must return after upgrading.

    ``shards`` are the shard rows written under this task (v4+); for a platform-keyed
    task without shards the upgrade must create the mirror shard itself.
    """

    task_id: str
    backend: str
    status: str
    shots: int
    submit_time: str
    update_time: str
    metadata_text: str
    expected_metadata: dict[str, Any]
    result: Any = None
    error_message: str | None = None
    archived_at: str | None = None
    shards: tuple[LegacyShard, ...] = field(default=())

    @property
    def platform_keyed(self) -> bool:
        """True when the file keys this task by a platform id (re-keyed on upgrade)."""
        return not self.task_id.startswith("uqt_")

    @property
    def legacy_platform_id(self) -> str:
        """The platform id the task had before it got a ``uqt_`` id, if it had one."""
        value = self.expected_metadata.get("legacy_platform_id")
        return str(value) if value is not None else ""


@dataclass(frozen=True)
class LegacyFile:
    """A location prepared for a test: the file's version and what it holds."""

    directory: Path
    version: int
    application_id: int
    live: tuple[LegacyTask, ...] = ()
    archived: tuple[LegacyTask, ...] = ()

    @property
    def path(self) -> Path:
        return self.directory / DATABASE_FILENAME


def expected_instant(raw: str) -> str:
    """The canonical UTC text of a stored timestamp; unreadable text stays as it is."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone(LOCAL_UTC_OFFSET))
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def old_json(value: Any) -> str:
    """JSON text the way the original code wrote it: ``json.dumps`` with NaN literals."""
    return json.dumps(value)


def _keyed(old_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "legacy_platform_id": old_id}


def _platform_keyed_live() -> list[LegacyTask]:
    bell = {"00": 512, "11": 488}
    return [
        LegacyTask(
            task_id="2c9f1a7e-5b3d-4e8a-9f01-7c6d5e4b3a21",
            backend="originq:WK_C180",
            status="success",
            shots=1000,
            submit_time="2024-03-01T10:00:00.123456",
            update_time="2024-03-01T10:05:30.654321",
            result=bell,
            metadata_text=old_json({"circuit": "bell", "名字": "贝尔态", "qubits": [0, 1]}),
            expected_metadata=_keyed(
                "2c9f1a7e-5b3d-4e8a-9f01-7c6d5e4b3a21",
                {"circuit": "bell", "名字": "贝尔态", "qubits": [0, 1]},
            ),
        ),
        LegacyTask(
            task_id="ibm-job-abc",
            backend="ibm:brisbane",
            status="failed",
            shots=4000,
            submit_time="2024-05-02T08:00:00+00:00",
            update_time="2024-05-02T08:15:00+00:00",
            metadata_text=old_json([1, 2, 3]),
            expected_metadata=_keyed("ibm-job-abc", {"legacy_metadata_raw": [1, 2, 3]}),
            error_message="calibration expired",
        ),
        LegacyTask(
            task_id="quafu-77731",
            backend="quafu:ScQ-P10",
            status="running",
            shots=2048,
            submit_time="2025-01-15T23:59:59.999999+00:00",
            update_time="2025-01-16T00:00:01.000001+00:00",
            metadata_text=old_json(42),
            expected_metadata=_keyed("quafu-77731", {"legacy_metadata_raw": 42}),
        ),
        LegacyTask(
            task_id="dummy-0001",
            backend="dummy",
            status="success",
            shots=100,
            submit_time="2024-06-01T18:00:00.500000+08:00",
            update_time="2024-06-01T18:00:01+08:00",
            result={"expectation": float("nan"), "bounds": [float("inf"), float("-inf")]},
            metadata_text="{not json",
            expected_metadata=_keyed("dummy-0001", {}),
        ),
        LegacyTask(
            task_id="quark-x9",
            backend="quark:Baihua",
            status="pending",
            shots=0,
            submit_time="2023-12-31T23:30:00",
            update_time="2023-12-31T23:30:00",
            metadata_text=old_json({}),
            expected_metadata=_keyed("quark-x9", {}),
        ),
        LegacyTask(
            task_id="originq-null-meta",
            backend="originq:WK_C180",
            status="cancelled",
            shots=1000,
            submit_time="2024-02-29T07:00:00.000001",
            update_time="2024-02-29T08:00:00.000002",
            metadata_text=old_json(None),
            expected_metadata=_keyed("originq-null-meta", {}),
            error_message="cancelled by user",
        ),
        LegacyTask(
            task_id="ibm-job-text-meta",
            backend="ibm:kyiv",
            status="success",
            shots=1,
            submit_time="2024-07-07T07:07:07.070707+00:00",
            update_time="2024-07-07T07:08:07.070707+00:00",
            result=[{"0": 1}, {"1": 1}],
            metadata_text=old_json("note: rerun"),
            expected_metadata=_keyed("ibm-job-text-meta", {"legacy_metadata_raw": "note: rerun"}),
        ),
    ]


def _platform_keyed_archived() -> list[LegacyTask]:
    return [
        LegacyTask(
            task_id="2c9f1a7e-0000-4e8a-9f01-aaaaaaaaaaaa",
            backend="originq:WK_C180",
            status="success",
            shots=1000,
            submit_time="2024-01-10T09:00:00.250000",
            update_time="2024-01-10T09:01:00.250000",
            result={"0": 7, "1": 3},
            metadata_text=old_json({"experiment": "t1"}),
            expected_metadata=_keyed("2c9f1a7e-0000-4e8a-9f01-aaaaaaaaaaaa", {"experiment": "t1"}),
            archived_at="2024-04-01T00:00:00+00:00",
        ),
        LegacyTask(
            task_id="ibm-job-old",
            backend="ibm:brisbane",
            status="failed",
            shots=500,
            submit_time="2024-01-11T09:00:00+00:00",
            update_time="2024-01-11T09:30:00+00:00",
            metadata_text=old_json(["x"]),
            expected_metadata=_keyed("ibm-job-old", {"legacy_metadata_raw": ["x"]}),
            error_message="queue timeout",
            archived_at="2024-04-01T00:00:00.5",
        ),
    ]


def _uqt(label: str) -> str:
    return "uqt_" + uuid.uuid5(uuid.NAMESPACE_URL, f"uniqc-legacy:{label}").hex


def _sharded_live() -> list[LegacyTask]:
    """Tasks the v4 code wrote: ``uqt_`` ids and their shards (and one platform-keyed
    parent that already had shards pointing at its platform id)."""
    batch = _uqt("batch")
    single = _uqt("single")
    odd = _uqt("odd-times")
    stamp = "2025-03-03T03:03:03.303030+00:00"
    return [
        LegacyTask(
            task_id=batch,
            backend="originq:WK_C180",
            status="running",
            shots=1000,
            submit_time=stamp,
            update_time="2025-03-03T03:05:00+00:00",
            metadata_text=old_json({"batch_size": 5}),
            expected_metadata={"batch_size": 5},
            shards=(
                LegacyShard(
                    batch,
                    0,
                    "c1a2b3c4-0000-4000-8000-000000000000",
                    "originq:WK_C180",
                    "success",
                    stamp,
                    "2025-03-03T03:04:00+00:00",
                    circuit_count=2,
                    sub_index_offset=0,
                    result=[{"00": 10}, {"11": 10}],
                ),
                LegacyShard(
                    batch,
                    1,
                    "c1a2b3c4-0000-4000-8000-000000000001",
                    "originq:WK_C180",
                    "running",
                    stamp,
                    "2025-03-03T11:04:00.5",
                    circuit_count=2,
                    sub_index_offset=2,
                ),
                LegacyShard(
                    batch,
                    2,
                    "c1a2b3c4-0000-4000-8000-000000000002",
                    "originq:WK_C180",
                    "failed",
                    stamp,
                    stamp,
                    circuit_count=1,
                    sub_index_offset=4,
                    error_message="device offline",
                ),
            ),
        ),
        LegacyTask(
            task_id=single,
            backend="dummy",
            status="success",
            shots=10,
            submit_time="2025-03-04T01:00:00",
            update_time="2025-03-04T01:00:02",
            result={"energy": float("nan")},
            metadata_text=old_json({}),
            expected_metadata={},
            shards=(
                LegacyShard(
                    single,
                    0,
                    "dummy-shard-77",
                    "dummy",
                    "success",
                    "2025-03-04T01:00:00",
                    "2025-03-04T01:00:02",
                    result={"energy": float("nan")},
                ),
            ),
        ),
        LegacyTask(
            task_id=odd,
            backend="quafu:ScQ-P18",
            status="pending",
            shots=3,
            submit_time="2025-03-05T00:00:00+00:00",
            update_time="sometime yesterday",
            metadata_text=old_json({"note": "update_time is not a timestamp"}),
            # read with update_time = submit_time, the original kept: timestamps.repair_times
            expected_metadata={
                "note": "update_time is not a timestamp",
                "unreadable_timestamps": {
                    "update_time": {
                        "stored": "sometime yesterday",
                        "read_as": "2025-03-05T00:00:00.000000+00:00",
                    }
                },
            },
        ),
        LegacyTask(
            task_id="originq-batch-legacy-1",
            backend="originq:PQPUMESH8",
            status="success",
            shots=1000,
            submit_time="2025-02-01T12:00:00.000100",
            update_time="2025-02-01T12:10:00.000200",
            metadata_text=old_json({"kind": "platform-keyed parent with shards"}),
            expected_metadata=_keyed(
                "originq-batch-legacy-1", {"kind": "platform-keyed parent with shards"}
            ),
            shards=tuple(
                LegacyShard(
                    "originq-batch-legacy-1",
                    index,
                    f"originq-batch-legacy-1-part{index}",
                    "originq:PQPUMESH8",
                    "success",
                    "2025-02-01T12:00:00.000100",
                    "2025-02-01T12:10:00.000200",
                    result={"0": index},
                    sub_index_offset=index,
                )
                for index in range(2)
            ),
        ),
    ]


def _sharded_archived() -> list[LegacyTask]:
    done = _uqt("archived-batch")
    return [
        LegacyTask(
            task_id=done,
            backend="ibm:kyiv",
            status="cancelled",
            shots=200,
            submit_time="2025-01-01T00:00:00+00:00",
            update_time="2025-01-01T01:00:00+00:00",
            metadata_text=old_json({"archived": True}),
            expected_metadata={"archived": True},
            error_message="shard 1 cancelled",
            archived_at="2025-02-01T00:00:00",
            shards=(
                LegacyShard(
                    done,
                    0,
                    "ibm-archived-shard-0",
                    "ibm:kyiv",
                    "success",
                    "2025-01-01T00:00:00+00:00",
                    "2025-01-01T00:30:00+00:00",
                    result={"0": 200},
                ),
                LegacyShard(
                    done,
                    1,
                    "ibm-archived-shard-1",
                    "ibm:kyiv",
                    "cancelled",
                    "2025-01-01T00:00:00+00:00",
                    "2025-01-01T01:00:00+00:00",
                    sub_index_offset=1,
                    error_message="cancelled",
                ),
            ),
        ),
    ]


def mirror_shard(task: LegacyTask, uniqc_task_id: str) -> LegacyShard:
    """The one shard the v5 upgrade gives a platform-keyed task without shards."""
    return LegacyShard(
        uniqc_task_id=uniqc_task_id,
        shard_index=0,
        platform_task_id=task.task_id,
        backend=task.backend,
        status=task.status,
        submit_time=task.submit_time,
        update_time=task.update_time,
        result=task.result,
        error_message=task.error_message,
    )


def _as_rekeyed_by_v5(task: LegacyTask) -> LegacyTask:
    """The row as the original v5 upgrade left it: a ``uqt_`` id, the metadata with
    ``legacy_platform_id``, and its shards (or one mirror shard) under the new id."""
    if not task.platform_keyed:
        return task
    new_id = _uqt(f"rekeyed:{task.task_id}")
    shards = tuple(replace(s, uniqc_task_id=new_id) for s in task.shards) or (
        mirror_shard(task, new_id),
    )
    return replace(
        task, task_id=new_id, metadata_text=old_json(task.expected_metadata), shards=shards
    )


def legacy_contents(version: int) -> tuple[list[LegacyTask], list[LegacyTask]]:
    """The live and archived tasks a file at ``version`` holds."""
    live = _platform_keyed_live()
    archived = _platform_keyed_archived() if version >= 2 else []
    if version < 3:  # no error_message column yet
        live = [replace(t, error_message=None) for t in live]
        archived = [replace(t, error_message=None) for t in archived]
    if version >= 4:
        live += _sharded_live()
        archived += _sharded_archived()
    if version >= 5:
        live = [_as_rekeyed_by_v5(t) for t in live]
        archived = [_as_rekeyed_by_v5(t) for t in archived]
    return live, archived


def build_legacy_file(directory: Path, version: int, *, stamped: bool = True) -> LegacyFile:
    """Write ``directory/tasks.sqlite`` at ``version`` (1-5) as the original code did.

    ``stamped=False`` leaves ``application_id`` 0, as files from before it was set.
    """
    if version not in LEGACY_VERSIONS:
        raise ValueError(f"legacy files exist at versions 1-5, not {version}")
    live, archived = legacy_contents(version)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DATABASE_FILENAME
    app_id = APPLICATION_ID if stamped else 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        for step in range(1, version + 1):
            for statement in LEGACY_DDL[step]:
                conn.execute(statement)
        with_errors = version >= 3
        for task in live:
            _insert_task(conn, "tasks", task, with_errors)
        for task in archived:
            _insert_task(conn, "archived_tasks", task, with_errors)
        for task in live:
            for shard in task.shards:
                _insert_shard(conn, "task_shards", shard, None)
        for task in archived:
            for shard in task.shards:
                _insert_shard(conn, "archived_task_shards", shard, task.archived_at)
        conn.execute(f"PRAGMA application_id = {app_id}")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return LegacyFile(directory, version, app_id, tuple(live), tuple(archived))


def build_fresh_location(directory: Path, kind: str) -> LegacyFile:
    """A version-0 location of one of :data:`FRESH_KINDS`."""
    path = directory / DATABASE_FILENAME
    if kind == "missing_directory":
        return LegacyFile(directory, 0, 0)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "empty_file":
        path.write_bytes(b"")
        return LegacyFile(directory, 0, 0)
    if kind not in ("blank_file", "blank_stamped_file"):
        raise ValueError(f"unknown fresh location kind {kind!r}")
    app_id = APPLICATION_ID if kind == "blank_stamped_file" else 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A real header and no tables: create and drop a scratch table.
        conn.execute("CREATE TABLE scratch (x)")
        conn.execute("DROP TABLE scratch")
        conn.execute(f"PRAGMA application_id = {app_id}")
    finally:
        conn.close()
    return LegacyFile(directory, 0, app_id)


def build_location(directory: Path, case: str) -> LegacyFile:
    """A location named by a test case id: ``v0-<kind>``, ``v<N>`` or ``v<N>-unstamped``."""
    name, _, variant = case.partition("-")
    version = int(name.removeprefix("v"))
    if version == 0:
        return build_fresh_location(directory, variant)
    return build_legacy_file(directory, version, stamped=variant != "unstamped")


LOCATION_CASES = (
    *(f"v0-{kind}" for kind in FRESH_KINDS),
    *(f"v{version}" for version in LEGACY_VERSIONS),
    *(f"v{version}-unstamped" for version in LEGACY_VERSIONS),
)


def _insert_task(conn: sqlite3.Connection, table: str, task: LegacyTask, with_errors: bool) -> None:
    row: dict[str, Any] = {
        "task_id": task.task_id,
        "backend": task.backend,
        "status": task.status,
        "shots": task.shots,
        "submit_time": task.submit_time,
        "update_time": task.update_time,
        "result_json": None if task.result is None else old_json(task.result),
        "metadata_json": task.metadata_text,
    }
    if with_errors:
        row["error_message"] = task.error_message
    if task.archived_at is not None:
        row["archived_at"] = task.archived_at
    _insert(conn, table, row)


def _insert_shard(
    conn: sqlite3.Connection, table: str, shard: LegacyShard, archived_at: str | None
) -> None:
    row: dict[str, Any] = {
        "uniqc_task_id": shard.uniqc_task_id,
        "shard_index": shard.shard_index,
        "platform_task_id": shard.platform_task_id,
        "backend": shard.backend,
        "circuit_count": shard.circuit_count,
        "sub_index_offset": shard.sub_index_offset,
        "status": shard.status,
        "result_json": None if shard.result is None else old_json(shard.result),
        "error_message": shard.error_message,
        "submit_time": shard.submit_time,
        "update_time": shard.update_time,
    }
    if archived_at is not None:
        row["archived_at"] = archived_at
    _insert(conn, table, row)


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))


def dump(path: Path) -> list[str]:
    """Every table's definition and rows, as SQL text (sqlite3's ``iterdump``)."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def pragma(path: Path, name: str) -> int:
    """``PRAGMA name`` of the file (``user_version``, ``application_id``)."""
    conn = sqlite3.connect(path)
    try:
        value = conn.execute(f"PRAGMA {name}").fetchone()[0]
        return int(value)
    finally:
        conn.close()
