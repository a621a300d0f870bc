"""``copy`` stores, byte for byte, what the plain path stores: each row read as ``get()``
reads it (JSON decoded, legacy timestamps repaired) and written by a plain ``INSERT``
through the column types. Copy skips that reading for values it would not change
(JSON text passed through undecoded, among others); these tests hold it to the plain
path on every destination, for values saved normally, for legacy forms written by
hand into the source, and for rows that cannot be copied at all.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, event, insert, select

from uniqc_taskstore import (
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    generate_uniqc_task_id,
)
from uniqc_taskstore.column_types import JsonDocument
from uniqc_taskstore.jsoncodec import MAX_DEPTH
from uniqc_taskstore.schema import ARCHIVE_TABLES, LIVE_TABLES, task_shards
from uniqc_taskstore.statements import readable_row
from uniqc_taskstore.transfer import TableCounts, copy_tasks

KINDS = ("sqlite", "postgresql", "mysql")
ODD = "a\tb\nc\\d'e\"f μ ☃ 😀"


@pytest.fixture
def open_store(
    tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> Iterator[Callable[[str, str], TaskStore]]:
    """Opens a new empty store of a kind; closes them all afterwards."""
    opened: list[TaskStore] = []

    def make(kind: str, name: str) -> TaskStore:
        if kind == "sqlite":
            store = TaskStore(tmp_path / name)
        else:
            store = TaskStore.from_url(fresh_database_url(kind))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def plain_copy(source: TaskStore, destination: TaskStore) -> None:
    """The reference: every row read by SQLAlchemy as ``get()`` reads it, inserted by a
    plain ``INSERT`` (the column types' bind processing), parents first."""
    times: dict[str, Any] = {}
    for table in (*LIVE_TABLES, *ARCHIVE_TABLES):

        def read(conn: Connection, table: Any = table) -> list[dict[str, Any]]:
            return [readable_row(table.name, row) for row in conn.execute(select(table)).mappings()]

        rows = source._db.read(read)
        if table.name.endswith("tasks"):  # a tag carries its task's (repaired) submit_time
            times = {row["task_id"]: row["submit_time"] for row in rows}
        elif table.name.endswith("tags"):
            rows = [row | {"submit_time": times[row["task_id"]]} for row in rows]
        if rows:
            destination._db.write(partial(_insert, table=table, rows=rows))


def _insert(conn: Connection, *, table: Any, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(table), rows)


def stored(store: TaskStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table as the driver returns it (PostgreSQL's JSON as its
    stored text), in key order."""
    engine = store._db.engine
    quote = engine.dialect.identifier_preparer.quote
    dump = {}
    with engine.connect() as conn:
        for table in (*LIVE_TABLES, *ARCHIVE_TABLES):
            columns = [
                quote(c.name) + ("::text" if engine.dialect.name == "postgresql" else "")
                if isinstance(c.type, JsonDocument)
                else quote(c.name)
                for c in table.columns
            ]
            order = ", ".join(quote(c.name) for c in table.primary_key)
            sql = f"SELECT {', '.join(columns)} FROM {quote(table.name)} ORDER BY {order}"
            dump[table.name] = [tuple(row) for row in conn.exec_driver_sql(sql)]
    return dump


def deep(levels: int) -> Any:
    value: Any = "core"
    for _ in range(levels):
        value = [value]
    return value


RESULTS: list[Any] = [
    None,
    {0: float("nan"), "amp": complex(1.5, -2)},
    [float("inf"), float("-inf"), -0.0, 1e-7, 1e300, 2**70, True, None],
    {"μ": "naïve ☃ 😀", ODD: ODD, "lone": "\ud800"},
    {(1, "a"): "tuple key", ((2,), None): 3},
    {"$uniqc": "a key of the user's own", "n": 1},
    {"x": "$uniqc"},
    deep(MAX_DEPTH),  # as deep as a value may nest
    [{"00": k, "11": 1000 - k} for k in range(150)],  # many brackets, nested shallow
    "plain text",
    12345,
]


def fill(store: TaskStore) -> list[str]:
    ids = []
    for k, result in enumerate(RESULTS):
        task = TaskInfo(
            generate_uniqc_task_id(),
            backend=f"originq:WK_C{k}" if k % 2 else "ibm:μ-dev",
            status=TaskStatus.SUCCESS if result is not None else TaskStatus.RUNNING,
            result=result,
            metadata={"k": k, "text": ODD, "nan": float("nan")} if k % 3 else {},
            error_message=ODD if k % 4 == 1 else None,
            name=f"run {k} μ" if k % 2 else None,
            tags={"team": "μ", "odd": ODD} if k % 2 else {},
        )
        shards = [
            TaskShard(
                task.task_id,
                i,
                f"job-{k}-{i}-{ODD}",
                task.backend,
                1,
                i,
                status=task.status,
                result=result if i == 0 else [result, {"i": i}],
                error_message=ODD if i else None,
            )
            for i in range(k % 3)
        ]
        store.save(task, shards)
        ids.append(task.task_id)
    for task_id in ids[::4]:
        assert store.archive(task_id)
    return ids


LEGACY_JSON = [
    '{"a": 1, "b": [1, 2]}',  # spaces
    '{"x":"μ"}',  # a raw non-ASCII character
    "[NaN,Infinity,-Infinity]",  # literals of the original implementation
    '{"n":1E5,"m":1.50}',  # other number forms
    '{"$uniqc":"map","items":[["a",1]]}',  # a tagged form the decoder changes
    '{"$uniqc":"float","value":"nan","extra":1}',  # a tag the decoder does not take
    '{"a":1,"a":2}',  # a repeated key
    '"\\u00b5\\/"',  # escapes that decode to other text
]
LEGACY_TIMES = [
    "2025-03-05T08:00:00",  # naive local time
    "2025-03-05 08:00:00+00:00",
    "2025-03-05T10:00:00.5+02:00",
    "sometime yesterday",  # unreadable: repaired, the original kept in the metadata
]


def add_legacy_rows(store: TaskStore) -> None:
    """Rows in forms ``save`` never writes, put in the file by hand."""
    path = store.db_path
    assert path is not None
    conn = sqlite3.connect(path)
    with conn:
        for k, (text, when) in enumerate(zip(LEGACY_JSON, LEGACY_TIMES * 2, strict=True)):
            task_id = f"uqt_{k:032x}"
            conn.execute(
                "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time,"
                " result_json, metadata_json, name) VALUES (?, 'dummy', 'success', 5, ?, ?, ?, ?,"
                " 'legacy')",
                (task_id, when, LEGACY_TIMES[0], text, '{"k": 1}' if k % 2 else "{}"),
            )
            conn.execute(
                "INSERT INTO task_tags (task_id, key, value, submit_time) VALUES (?, 'k', ?, ?)",
                (task_id, text, when),
            )
            conn.execute(
                "INSERT INTO task_shards (uniqc_task_id, shard_index, platform_task_id, backend,"
                " status, result_json, submit_time, update_time)"
                " VALUES (?, 0, ?, 'dummy', 'success', ?, ?, ?)",
                (task_id, f"job\t{k}", text, when, when),
            )
    conn.close()


@pytest.mark.parametrize("kind", KINDS)
def test_copy_stores_what_the_plain_path_stores(
    kind: str, open_store: Callable[[str, str], TaskStore]
) -> None:
    source = open_store("sqlite", "source")
    ids = fill(source)
    add_legacy_rows(source)
    copied, reference = open_store(kind, "copied"), open_store(kind, "reference")
    report = copy_tasks(source, copied, batch_size=4)
    plain_copy(source, reference)
    assert stored(copied) == stored(reference)
    assert report.copied == report.source == report.destination
    for task_id in ids:  # and it reads back as it was saved (repr: NaN-safe equality)
        assert repr(copied.get(task_id)) == repr(source.get(task_id))
        assert repr(copied.get_archived(task_id)) == repr(source.get_archived(task_id))
        assert repr(copied.get_shards(task_id)) == repr(source.get_shards(task_id))


SPOILED = [
    ("tasks", "result_json", "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)),
    ("tasks", "result_json", '{"counts": '),
    ("tasks", "result_json", '{"$uniqc": "complex", "real": "x", "imag": 1}'),
    ("tasks", "metadata_json", "[1, 2]"),
    ("tasks", "status", "bogus"),
    ("tasks", "submit_time", b"\x00\xff"),
    ("tasks", "shots", "many"),
    ("tasks", "backend", b"\xff"),
    ("task_shards", "result_json", "[" * 5000 + "]" * 5000),
    ("task_shards", "submit_time", "never"),
]


def outcome(run: Callable[[], Any], destination: TaskStore) -> Any:
    try:
        run()
    except TaskStoreError as exc:
        return type(exc).__name__, getattr(exc, "key", None), getattr(exc, "column", None)
    return stored(destination)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("table", "column", "value"), SPOILED, ids=lambda v: str(v)[:20])
def test_a_row_copy_cannot_take_fast_fails_or_copies_as_the_plain_path_does(
    kind: str, table: str, column: str, value: Any, open_store: Callable[[str, str], TaskStore]
) -> None:
    source = open_store("sqlite", "source")
    fill(source)
    bad = source.list(limit=1)[0].task_id
    key = "uniqc_task_id" if table == "task_shards" else "task_id"
    path = source.db_path
    assert path is not None
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (value, bad))
    conn.close()
    copied, reference = open_store(kind, "copied"), open_store(kind, "reference")
    threads = threading.active_count()
    got = outcome(lambda: copy_tasks(source, copied, batch_size=3), copied)
    assert threading.active_count() == threads  # the reading worker is gone
    assert got == outcome(lambda: plain_copy(source, reference), reference)


@pytest.mark.parametrize("kind", KINDS)
def test_copy_among_the_destinations_own_tasks_adds_only_what_it_lacks(
    kind: str, open_store: Callable[[str, str], TaskStore]
) -> None:
    # Source ids interleave with many more of the destination's own, so a batch's id
    # range holds more destination tasks than the batch: looked up by IN lists.
    source, destination = open_store("sqlite", "source"), open_store(kind, "destination")
    ours = [f"uqt_{k * 16:032x}" for k in range(12)]
    theirs = [f"uqt_{k:032x}" for k in range(12 * 16) if k % 16]
    destination.save_many([TaskInfo(i, "theirs", status=TaskStatus.SUCCESS) for i in theirs])
    for k, task_id in enumerate(ours):
        task = TaskInfo(task_id, "ours", status=TaskStatus.RUNNING, tags={"k": str(k)})
        source.save(task, [TaskShard(task_id, i, f"job-{k}-{i}", "ours", 1, i) for i in range(2)])
    # The destination already has two of ours: one whole, one with a shard missing.
    copy_tasks(source, destination)
    destination.delete(ours[3])
    with destination._db.engine.begin() as conn:
        conn.execute(
            delete(task_shards).where(
                task_shards.c.uniqc_task_id == ours[5], task_shards.c.shard_index == 0
            )
        )
    for batch_size in (4, 100):
        report = copy_tasks(source, destination, batch_size=batch_size)
        assert report.copied.tasks == (1 if batch_size == 4 else 0)
        assert report.copied.shards == (3 if batch_size == 4 else 0)
        assert report.copied.tags == report.copied.tasks
    assert destination.count() == len(ours) + len(theirs)
    for task_id in ours:
        assert destination.get_shards(task_id) == source.get_shards(task_id)
        assert destination.get(task_id) == source.get(task_id)


@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_that_finds_everything_there_reads_only_keys(
    kind: str, open_store: Callable[[str, str], TaskStore]
) -> None:
    source, destination = open_store("sqlite", "source"), open_store(kind, "destination")
    fill(source)
    copy_tasks(source, destination, batch_size=4)
    statements: list[str] = []

    def trace(dbapi_conn: Any, _record: Any) -> None:  # SQLite's own log of statements
        dbapi_conn.set_trace_callback(statements.append)

    engine = source._db.engine
    event.listen(engine, "connect", trace)
    engine.dispose()  # pooled connections are opened again, traced
    try:
        again = copy_tasks(source, destination, batch_size=4)
    finally:
        event.remove(engine, "connect", trace)
        engine.dispose()
    assert again.copied == TableCounts()
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads
    assert not [s for s in reads if "result_json" in s or "metadata_json" in s]


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_too_big_for_one_statement_is_copied_whole(
    kind: str, open_store: Callable[[str, str], TaskStore]
) -> None:
    source, destination = open_store("sqlite", "source"), open_store(kind, "destination")
    message = ("quote ' backslash \\ tab \t μ " * 12_000)[:300_000]  # 5 of them pass 1 MB
    tasks = [
        TaskInfo(f"uqt_{k:032x}", "dummy", TaskStatus.FAILED, error_message=f"{k}{message}")
        for k in range(5)
    ]
    source.save_many(tasks)
    report = copy_tasks(source, destination)
    assert report.copied.tasks == 5
    for task in tasks:
        assert destination.get(task.task_id) == source.get(task.task_id)
