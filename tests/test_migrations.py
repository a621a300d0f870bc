"""Upgrading files the original implementation left behind, atomic steps, one migration.

Every legacy file (versions 0-5, stamped and unstamped) opens, reaches the current
version and reads back per the SPEC's v5 rules; the schema it ends with is the
declared one (on PostgreSQL and MariaDB too); a step that fails leaves neither its
changes nor its version; many processes opening one fresh location migrate once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    select,
)

from legacy_files import (
    LEGACY_VERSIONS,
    LOCAL_TZ,
    LOCATION_CASES,
    LegacyFile,
    LegacyShard,
    LegacyTask,
    build_legacy_file,
    build_location,
    dump,
    expected_instant,
    mirror_shard,
    pragma,
)
from uniqc_taskstore import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    MIGRATIONS,
    MigrationError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
    is_generated_task_id,
)
from uniqc_taskstore.backends import backend_for_url
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.column_types import IdText, JsonDocument, Timestamp
from uniqc_taskstore.migrator import Migration, add_column, migrate
from uniqc_taskstore.schema import metadata, schema_stamp

SERVER_KINDS = ("postgresql", "mysql")
_CANONICAL_LENGTH = len("2024-01-01T00:00:00.000000+00:00")


@pytest.fixture(autouse=True)
def _local_time_is_utc_plus_8() -> Iterator[None]:
    """Naive legacy timestamps are local time; pin it so the conversion is visible."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = LOCAL_TZ
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# -- what a migrated location must read back ---------------------------------------------------


def comparable(value: Any) -> Any:
    """``value`` with NaN replaced by a marker, so that equality holds NaN == NaN
    (legacy results hold NaN literals)."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    return value


def _expected_task(task: LegacyTask, task_id: str) -> dict[str, Any]:
    return TaskInfo(
        task_id=task_id,
        backend=task.backend,
        status=TaskStatus(task.status),
        result=task.result,
        shots=task.shots,
        submit_time=expected_instant(task.submit_time),
        update_time=_read_time(task.update_time, task.submit_time),
        metadata=task.expected_metadata,
        error_message=task.error_message,
        archived_at=expected_instant(task.archived_at) if task.archived_at else None,
    ).to_dict()


def _read_time(stored: str, fallback: str) -> str:
    """What a stored time reads as: unreadable text falls back (timestamps.repair_times)."""
    instant = expected_instant(stored)
    return instant if instant != stored or stored[:4].isdigit() else expected_instant(fallback)


def _expected_shards(task: LegacyTask, task_id: str) -> list[dict[str, Any]]:
    written = task.shards or ((mirror_shard(task, task_id),) if task.platform_keyed else ())
    return [_shard_dict(shard, task_id) for shard in written]


def _shard_dict(shard: LegacyShard, task_id: str) -> dict[str, Any]:
    return TaskShard(
        uniqc_task_id=task_id,
        shard_index=shard.shard_index,
        platform_task_id=shard.platform_task_id,
        backend=shard.backend,
        circuit_count=shard.circuit_count,
        sub_index_offset=shard.sub_index_offset,
        status=TaskStatus(shard.status),
        result=shard.result,
        error_message=shard.error_message,
        submit_time=expected_instant(shard.submit_time),
        update_time=expected_instant(shard.update_time),
    ).to_dict()


def _new_id(candidates: list[TaskInfo], task: LegacyTask) -> str:
    """The id a task carries after the upgrade: its own, or the new ``uqt_`` one."""
    if not task.platform_keyed:
        return task.task_id
    owners = [t.task_id for t in candidates if t.metadata.get("legacy_platform_id") == task.task_id]
    assert len(owners) == 1, f"{task.task_id} should have exactly one uqt_ parent: {owners}"
    return owners[0]


def assert_reads_back(store: TaskStore, legacy: LegacyFile) -> None:
    """Every task and shard the file held reads back per the SPEC's v5 rules."""
    live = store.list()
    archived = store.list_archived()
    assert len(live) == len(legacy.live)
    assert len(archived) == len(legacy.archived)
    assert all(is_generated_task_id(t.task_id) for t in [*live, *archived])

    for task in legacy.live:
        task_id = _new_id(live, task)
        stored = store.get(task_id)
        assert stored is not None
        assert comparable(stored.to_dict()) == comparable(_expected_task(task, task_id)), (
            task.task_id
        )
        shards = [s.to_dict() for s in store.get_shards(task_id)]
        assert comparable(shards) == comparable(_expected_shards(task, task_id)), task.task_id
        for shard in shards:
            found = store.get_shard_by_platform_id(shard["platform_task_id"])
            assert found is not None
            assert comparable(found.to_dict()) == comparable(shard)
        if task.platform_keyed and not task.shards:
            assert store.find_uniqc_id_by_platform_id(task.task_id) == task_id
        if task.legacy_platform_id and not task.platform_keyed and not task.shards[1:]:
            # Re-keyed by the original v5 code: still found by the old platform id.
            assert store.find_uniqc_id_by_platform_id(task.legacy_platform_id) == task_id

    for task in legacy.archived:
        task_id = _new_id(archived, task)
        stored = store.get_archived(task_id)
        assert stored is not None
        assert comparable(stored.to_dict()) == comparable(_expected_task(task, task_id)), (
            task.task_id
        )
        shards = [s.to_dict() for s in store.get_archived_shards(task_id)]
        assert comparable(shards) == comparable(_expected_shards(task, task_id)), task.task_id
        assert store.get(task_id) is None


def assert_stamped_current(path: Path) -> None:
    assert pragma(path, "user_version") == CURRENT_SCHEMA_VERSION
    assert pragma(path, "application_id") == APPLICATION_ID


# -- the declared schema, and a database's actual one ------------------------------------------


def declared_schema() -> dict[str, Any]:
    """Tables, columns, keys, indexes and foreign keys of ``schema.py`` (data tables)."""
    declared: dict[str, Any] = {}
    for table in metadata.sorted_tables:
        if table is schema_stamp:
            continue
        declared[table.name] = {
            "columns": sorted(c.name for c in table.columns),
            "primary_key": [c.name for c in table.primary_key.columns],
            "indexes": sorted(
                (i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
            ),
            "foreign_keys": sorted(
                (
                    tuple(fk.column_keys),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                    (fk.ondelete or "").upper(),
                )
                for fk in table.foreign_key_constraints
            ),
        }
    return declared


def actual_schema(engine: Engine) -> dict[str, Any]:
    """The same description, read back from the database by SQLAlchemy's inspector."""
    inspector = inspect(engine)
    actual: dict[str, Any] = {}
    for name in sorted(set(inspector.get_table_names()) - {schema_stamp.name}):
        actual[name] = {
            "columns": sorted(c["name"] for c in inspector.get_columns(name)),
            "primary_key": list(inspector.get_pk_constraint(name)["constrained_columns"]),
            "indexes": sorted(
                (str(i["name"]), tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
            "foreign_keys": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    str((fk.get("options") or {}).get("ondelete") or "").upper(),
                )
                for fk in inspector.get_foreign_keys(name)
            ),
        }
    return actual


def _file_engine(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


# -- legacy files open and upgrade in place ----------------------------------------------------


@pytest.mark.parametrize("case", LOCATION_CASES)
def test_legacy_file_upgrades_to_current_version_and_reads_back(tmp_path: Path, case: str) -> None:
    legacy = build_location(tmp_path / "cache", case)
    with TaskStore(cache_dir=legacy.directory) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        report = store._db.last_migration
        assert report is not None
        assert report.from_version == legacy.version
        assert report.applied == tuple(range(legacy.version + 1, CURRENT_SCHEMA_VERSION + 1))
        assert_reads_back(store, legacy)
    assert_stamped_current(legacy.path)


@pytest.mark.parametrize("case", LOCATION_CASES)
def test_upgraded_file_has_the_declared_schema(tmp_path: Path, case: str) -> None:
    legacy = build_location(tmp_path / "cache", case)
    TaskStore(cache_dir=legacy.directory).close()
    engine = _file_engine(legacy.path)
    try:
        assert actual_schema(engine) == declared_schema()
    finally:
        engine.dispose()


@pytest.mark.parametrize("case", LOCATION_CASES)
def test_opening_an_upgraded_file_again_changes_nothing(tmp_path: Path, case: str) -> None:
    legacy = build_location(tmp_path / "cache", case)
    TaskStore(cache_dir=legacy.directory).close()
    before = dump(legacy.path)
    with TaskStore(cache_dir=legacy.directory) as store:
        report = store._db.last_migration
        assert report is not None
        assert report.applied == ()
        assert_reads_back(store, legacy)
    assert dump(legacy.path) == before
    assert_stamped_current(legacy.path)


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_upgraded_timestamps_are_canonical_utc_text(tmp_path: Path, version: int) -> None:
    legacy = build_legacy_file(tmp_path / "cache", version)
    TaskStore(cache_dir=legacy.directory).close()
    engine = _file_engine(legacy.path)
    try:
        with engine.connect() as conn:
            stored = _raw_times(conn)
    finally:
        engine.dispose()
    unreadable = "sometime yesterday"  # a v4+ row's update_time: kept as written
    assert (unreadable in stored) == (version >= 4)
    for text in stored:
        if text == unreadable:
            continue
        assert text == expected_instant(text)
        assert len(text) == _CANONICAL_LENGTH, text
        assert text.endswith("+00:00"), text


def _raw_times(conn: Connection) -> list[str]:
    reflected = MetaData()
    reflected.reflect(conn)
    times: list[str] = []
    for table in reflected.tables.values():
        names = [c for c in ("submit_time", "update_time", "archived_at") if c in table.c]
        if not names:  # e.g. task_tags
            continue
        for row in conn.execute(select(*(table.c[n] for n in names))):
            times.extend(str(value) for value in row)
    return times


def test_naive_legacy_time_is_read_as_local_time(tmp_path: Path) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 1)
    with TaskStore(cache_dir=legacy.directory) as store:
        task_id = store.find_uniqc_id_by_platform_id("2c9f1a7e-5b3d-4e8a-9f01-7c6d5e4b3a21")
        assert task_id is not None
        task = store.get(task_id)
    assert task is not None
    # Written as naive 10:00:00.123456 local time, local time being UTC+8.
    assert task.submit_time == "2024-03-01T02:00:00.123456+00:00"


def test_shards_of_a_platform_keyed_parent_follow_it_to_its_new_id(tmp_path: Path) -> None:
    legacy = build_legacy_file(tmp_path / "cache", 4)
    with TaskStore(cache_dir=legacy.directory) as store:
        owner = store.find_uniqc_id_by_platform_id("originq-batch-legacy-1-part1")
        assert owner is not None
        assert is_generated_task_id(owner)
        parent = store.get(owner)
        assert parent is not None
        assert parent.metadata["legacy_platform_id"] == "originq-batch-legacy-1"
        assert [s.shard_index for s in store.get_shards(owner)] == [0, 1]
        assert store.find_uniqc_id_by_platform_id("originq-batch-legacy-1") is None


def test_declared_schema_is_what_the_migrations_build_on_a_fresh_file(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        path = store.db_path
    assert path is not None
    engine = _file_engine(path)
    try:
        assert actual_schema(engine) == declared_schema()
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_fresh_server_database_has_the_declared_schema(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    TaskStore.from_url(url).close()
    engine = create_engine(url)
    try:
        assert actual_schema(engine) == declared_schema()
        assert schema_stamp.name in inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- a failing step leaves nothing behind -----------------------------------------------------


class _StepFailed(RuntimeError):
    pass


def _fail_after(step: Migration) -> Migration:
    """The real ``step``, doing all its work, then failing before its version is stamped."""

    def failing(conn: Connection) -> None:
        step(conn)
        raise _StepFailed("injected failure after the step's work")

    return failing


def _start_for(tmp_path: Path, version: int) -> LegacyFile:
    if version == 0:
        return build_location(tmp_path / "cache", "v0-blank_file")
    if version <= 5:
        return build_legacy_file(tmp_path / "cache", version)
    # Versions after 5 are ours: a v5 file brought up to ``version`` by our own steps.
    legacy = build_legacy_file(tmp_path / "cache", 5)
    backend = SqliteBackend(legacy.path)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:version])
    finally:
        engine.dispose()
    return legacy


@pytest.mark.parametrize("target", range(1, CURRENT_SCHEMA_VERSION + 1))
def test_failed_step_leaves_sqlite_file_at_its_previous_version_and_content(
    tmp_path: Path, target: int
) -> None:
    legacy = _start_for(tmp_path, target - 1)
    before = dump(legacy.path)
    steps = [*MIGRATIONS[: target - 1], (target, _fail_after(MIGRATIONS[target - 1][1]))]
    backend = SqliteBackend(legacy.path)
    engine = backend.create_engine()
    try:
        with pytest.raises(MigrationError, match=f"stays at version {target - 1}") as caught:
            migrate(backend, engine, steps)
        assert isinstance(caught.value.__cause__, _StepFailed)
    finally:
        engine.dispose()
    assert pragma(legacy.path, "user_version") == target - 1
    assert dump(legacy.path) == before

    with TaskStore(cache_dir=legacy.directory) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        assert_reads_back(store, legacy)
    assert_stamped_current(legacy.path)


def _ddl_then_fail(conn: Connection) -> None:
    extra = MetaData()
    table = Table("uniqc_step_probe", extra, Column("id", Integer, primary_key=True))
    Index("uniqc_step_probe_idx", table.c.id)
    extra.create_all(conn)
    add_column(conn, "tasks", Column("probe_note", Text))
    raise _StepFailed("injected failure after DDL")


def test_failed_ddl_step_leaves_no_table_or_column_behind(tmp_path: Path) -> None:
    with TaskStore(cache_dir=tmp_path / "cache") as store:
        store.save(TaskInfo(task_id=generate_uniqc_task_id(), backend="dummy"))
        path = store.db_path
    assert path is not None
    before = dump(path)
    backend = SqliteBackend(path)
    engine = backend.create_engine()
    try:
        with pytest.raises(MigrationError):
            migrate(backend, engine, [*MIGRATIONS, (CURRENT_SCHEMA_VERSION + 1, _ddl_then_fail)])
        tables = set(inspect(engine).get_table_names())
        columns = {c["name"] for c in inspect(engine).get_columns("tasks")}
    finally:
        engine.dispose()
    assert "uniqc_step_probe" not in tables
    assert "probe_note" not in columns
    assert dump(path) == before
    assert pragma(path, "user_version") == CURRENT_SCHEMA_VERSION


def _server_snapshot(engine: Engine) -> dict[str, Any]:
    """Every table's schema and rows, and the stamp row, of a server database."""
    snapshot: dict[str, Any] = {"schema": actual_schema(engine)}
    reflected = MetaData()
    with engine.connect() as conn:
        reflected.reflect(conn)
        for table in reflected.sorted_tables:
            rows = conn.execute(select(table)).all()
            snapshot[table.name] = sorted(repr(tuple(row)) for row in rows)
    return snapshot


def _server_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(schema_stamp.c.schema_version)).scalar_one())


_SERVER_LEGACY_ROW: dict[str, Any] = {
    "task_id": "ibm-job-server-1",
    "backend": "ibm:brisbane",
    "status": "success",
    "shots": 100,
    "submit_time": "2024-05-02T08:00:00.000000+00:00",
    "update_time": "2024-05-02T08:15:00.000000+00:00",
    "result_json": {"0": 60, "1": 40},
    "metadata_json": [1, 2],
}


def _insert_platform_keyed_row(engine: Engine) -> None:
    """A v1-v4 era row keyed by its platform id, written through the old columns."""
    reflected = MetaData()
    with engine.begin() as conn:
        reflected.reflect(conn, only=["tasks"])
        tasks = reflected.tables["tasks"]
        for name in ("result_json", "metadata_json"):
            tasks.c[name].type = JsonDocument()
        for name in ("submit_time", "update_time"):
            tasks.c[name].type = Timestamp()
        for name in ("task_id", "backend"):
            tasks.c[name].type = IdText()
        conn.execute(insert(tasks).values(_SERVER_LEGACY_ROW))


@pytest.mark.parametrize("target", range(1, CURRENT_SCHEMA_VERSION + 1))
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_failed_step_leaves_server_database_at_its_previous_version(
    kind: str, target: int, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    backend = backend_for_url(url)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[: target - 1])
        keyed_row = 1 <= target - 1 < 5  # written before v5 re-keys platform ids
        if keyed_row:
            _insert_platform_keyed_row(engine)
        before = _server_snapshot(engine)
        steps = [*MIGRATIONS[: target - 1], (target, _fail_after(MIGRATIONS[target - 1][1]))]
        with pytest.raises(MigrationError, match=f"stays at version {target - 1}"):
            migrate(backend, engine, steps)
        assert _server_version(engine) == target - 1
        if kind == "postgresql":
            # Transactional DDL: the step's tables, columns and rows are all gone.
            assert _server_snapshot(engine) == before
    finally:
        engine.dispose()

    # MariaDB commits DDL at once; its steps are re-runnable, so the next open finishes.
    with TaskStore.from_url(url) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        if keyed_row:
            task_id = store.find_uniqc_id_by_platform_id("ibm-job-server-1")
            assert task_id is not None
            task = store.get(task_id)
            assert task is not None
            assert task.result == {"0": 60, "1": 40}
            assert task.metadata == {
                "legacy_metadata_raw": [1, 2],
                "legacy_platform_id": "ibm-job-server-1",
            }
            assert task.submit_time == "2024-05-02T08:00:00.000000+00:00"
        else:
            assert store.count() == 0


def test_failed_ddl_step_on_postgresql_leaves_no_table_or_column_behind(
    fresh_database_url: Callable[[str], str],
) -> None:
    url = fresh_database_url("postgresql")
    with TaskStore.from_url(url) as store:
        store.save(TaskInfo(task_id=generate_uniqc_task_id(), backend="dummy"))
        backend = store._db.backend
        engine = store._db.engine
        before = _server_snapshot(engine)
        with pytest.raises(MigrationError):
            migrate(backend, engine, [*MIGRATIONS, (CURRENT_SCHEMA_VERSION + 1, _ddl_then_fail)])
        assert _server_snapshot(engine) == before
        assert _server_version(engine) == CURRENT_SCHEMA_VERSION
        assert store.count() == 1


# -- many processes opening one fresh location migrate it once ----------------------------------

_PROCESSES = 8


def _open_and_save(
    cache_dir: str | None,
    url: str | None,
    start: Barrier,
    results: Queue[tuple[str, Any]],
) -> None:
    """In a fresh process: wait for the others, open the store, save one task."""
    try:
        start.wait()
        store = TaskStore(cache_dir=cache_dir) if url is None else TaskStore(url=url)
        with store:
            task = TaskInfo(task_id=generate_uniqc_task_id(), backend="dummy")
            store.save(task)
            report = store._db.last_migration
            applied = report.applied if report is not None else None
            results.put(("ok", (task.task_id, applied, store.schema_version)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _open_concurrently(cache_dir: str | None, url: str | None) -> list[tuple[str, Any, int]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(_PROCESSES)
    results: Queue[tuple[str, Any]] = context.Queue()
    workers = [
        context.Process(target=_open_and_save, args=(cache_dir, url, start, results))
        for _ in range(_PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=300) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    errors = [detail for status, detail in outcomes if status != "ok"]
    assert not errors, errors[0]
    return [detail for _, detail in outcomes]


def _assert_each_step_applied_once(outcomes: list[tuple[str, Any, int]]) -> None:
    applied = sorted(step for _, steps, _ in outcomes for step in steps)
    assert applied == list(range(1, CURRENT_SCHEMA_VERSION + 1))
    assert all(version == CURRENT_SCHEMA_VERSION for _, _, version in outcomes)


def test_processes_opening_one_fresh_directory_migrate_it_once(tmp_path: Path) -> None:
    directory = tmp_path / "shared-cache"
    outcomes = _open_concurrently(str(directory), None)
    _assert_each_step_applied_once(outcomes)
    with TaskStore(cache_dir=directory) as store:
        assert {t.task_id for t in store.list()} == {task_id for task_id, _, _ in outcomes}
        assert store._db.last_migration is not None
        assert store._db.last_migration.applied == ()
    assert_stamped_current(directory / "tasks.sqlite")


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_processes_opening_one_fresh_server_database_migrate_it_once(
    kind: str, fresh_database_url: Callable[[str], str]
) -> None:
    url = fresh_database_url(kind)
    outcomes = _open_concurrently(None, url)
    _assert_each_step_applied_once(outcomes)
    # Under the database-wide lock one worker runs the whole migration.
    assert sum(1 for _, steps, _ in outcomes if steps) == 1
    with TaskStore.from_url(url) as store:
        assert {t.task_id for t in store.list()} == {task_id for task_id, _, _ in outcomes}
    engine = create_engine(url)
    try:
        assert _server_version(engine) == CURRENT_SCHEMA_VERSION
    finally:
        engine.dispose()
