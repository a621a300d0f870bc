"""The point reads' shortcuts on SQLite: rows as the store writes them are mapped in
one pass, and a pooled driver connection is taken and put back without SQLAlchemy's
per-checkout wrapper. Neither may change what a read returns or leave anything open."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.pool.base import _ConnectionFairy

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.engine import _Prepared
from uniqc_taskstore.errors import CorruptRowError
from uniqc_taskstore.filters import ARCHIVED, LIVE, Sort, TaskFilter
from uniqc_taskstore.model import Unreadable
from uniqc_taskstore.pages import PageRows, plain_summary_reader, sound_task_reader
from uniqc_taskstore.queries import _page_statement
from uniqc_taskstore.statements import (
    _checked_shard,
    _checked_task,
    _sound_shard,
    _sound_task,
    shard_from_row,
    task_from_row,
)

TIMES: list[Any] = [
    "2024-05-01T10:00:00.000000+00:00",
    "2024-05-01T10:00:00.123456+00:00",
    "2024-13-01T10:00:00.000000+00:00",  # canonical form, no such month
    "2024-05-01T10:00:00",  # readable, kept as stored
    "2024-05-01T10:00:00.000000+02:00",
    "0001-01-01T00:00:00.000000+00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "sometime yesterday",
    "",
    None,
    datetime(2024, 5, 1, tzinfo=UTC),
    Unreadable("a BLOB where a timestamp belongs"),
]
TEXTS: list[Any] = ["t1", "", "uqt_" + "a" * 32, None, 7, b"t1", Unreadable("not UTF-8")]
COUNTS: list[Any] = [0, 3, 2**31 - 1, -1, True, 1.0, "3", None, Unreadable("?")]
STATUSES: list[Any] = ["pending", "success", "cancelled", "SUCCESS", "done", "", None, 1]
DOCUMENTS: list[Any] = [None, {"a": 1}, [1, 2], "text", 3, {}, Unreadable("not JSON")]


class _Str(str):
    """A str subclass: the general path accepts it, the fast path leaves it alone."""


def _outcome(make: Any, row: Any) -> Any:
    try:
        return ("ok", make(row))
    except CorruptRowError as exc:
        return ("corrupt", str(exc))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


SOUND_SHARD = {
    "uniqc_task_id": "t1",
    "shard_index": 0,
    "platform_task_id": "job",
    "backend": "ibm:dev",
    "circuit_count": 1,
    "sub_index_offset": 0,
    "status": "running",
    "result_json": {"counts": {"00": 1}},
    "error_message": None,
    "submit_time": TIMES[0],
    "update_time": TIMES[1],
    "search_key": "job",
}
SHARD_CHOICES: dict[str, list[Any]] = {
    "uniqc_task_id": [*TEXTS, _Str("t1")],
    "shard_index": COUNTS,
    "platform_task_id": [*TEXTS, _Str("job")],
    "backend": TEXTS,
    "circuit_count": COUNTS,
    "sub_index_offset": COUNTS,
    "status": STATUSES,
    "result_json": DOCUMENTS,
    "error_message": [None, "boom", 5, _Str("x"), Unreadable("?")],
    "submit_time": TIMES,
    "update_time": TIMES,
}
SOUND_TASK = {
    "task_id": "t1",
    "backend": "ibm:dev",
    "platform": "ibm",
    "status": "success",
    "shots": 1000,
    "submit_time": TIMES[0],
    "update_time": TIMES[1],
    "result_json": [1, 2],
    "metadata_json": {"a": 1},
    "error_message": None,
    "name": "bell",
    "search_key": "t1Aibm:devAbell",
}
TASK_CHOICES: dict[str, list[Any]] = {
    "task_id": [*TEXTS, _Str("t1")],
    "backend": TEXTS,
    "platform": ["ibm", None, 3, Unreadable("?")],
    "status": STATUSES,
    "shots": COUNTS,
    "submit_time": TIMES,
    "update_time": TIMES,
    "result_json": DOCUMENTS,
    "metadata_json": [*DOCUMENTS, {"unreadable_timestamps": {}}],
    "error_message": [None, "boom", 5, Unreadable("?")],
    "name": [None, "bell", 3, Unreadable("?")],
}


def _mutated(rng: random.Random, sound: dict[str, Any], choices: dict[str, list[Any]]) -> Any:
    row = dict(sound)
    for name in rng.sample(sorted(choices), rng.choice([0, 1, 1, 2, 3])):
        row[name] = rng.choice(choices[name])
    return row


def _shard_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = [_mutated(rng, SOUND_SHARD, SHARD_CHOICES) for _ in range(n)]
    for row in rows[::20]:
        row["archived_at"] = rng.choice(TIMES)
    for row in rows[1::20]:
        row.pop("result_json")
    return rows


def _task_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        row = _mutated(rng, SOUND_TASK, TASK_CHOICES)
        shape = rng.random()
        if shape < 0.4:  # joined to a tag (get by id)
            row["uniqc_tag_key"] = rng.choice([None, "k", "k", Unreadable("?")])
            row["uniqc_tag_value"] = rng.choice([None, "v", "v", Unreadable("?")])
        elif shape < 0.45:
            row.pop("result_json")  # a summary
        elif shape < 0.5:
            row["archived_at"] = rng.choice(TIMES)
        elif shape < 0.52:
            row["uniqc_tag_key"] = "k"  # not the shape of any read
        rows.append(row)
    return rows


def test_shard_rows_map_the_same_on_the_fast_path() -> None:
    rows = _shard_rows(random.Random(11), 4000)
    fast = 0
    for row in rows:
        sound = _sound_shard(dict(row))
        if sound is not None:
            fast += 1
            assert sound == _checked_shard(dict(row)), row
            assert type(sound.status) is type(_checked_shard(dict(row)).status)
        assert _outcome(shard_from_row, dict(row)) == _outcome(_checked_shard, dict(row)), row
    assert fast > 500  # the fast path was taken, and not for every row
    assert fast < len(rows)


def test_task_rows_map_the_same_on_the_fast_path() -> None:
    rows = _task_rows(random.Random(12), 4000)
    fast = 0
    for row in rows:
        sound = _sound_task(dict(row))
        if sound is not None:
            fast += 1
            assert sound == _checked_task(dict(row)), row
        assert _outcome(task_from_row, dict(row)) == _outcome(_checked_task, dict(row)), row
    assert fast > 500
    assert fast < len(rows)


def _sqlite_store(tmp_path: Path) -> TaskStore:
    store = TaskStore(cache_dir=tmp_path)
    store.save(TaskInfo("t1", "ibm:dev", tags={"k": "v"}))
    store.save_shard(TaskShard("t1", 0, "job-1", "ibm:dev"))
    return store


def test_point_reads_take_pooled_connections_without_the_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped: list[int] = []
    checkout = _ConnectionFairy._checkout

    def counted(*args: Any, **kwargs: Any) -> Any:
        wrapped.append(1)
        return checkout(*args, **kwargs)

    with _sqlite_store(tmp_path) as store:
        pool = store._db.engine.pool
        monkeypatch.setattr(_ConnectionFairy, "_checkout", staticmethod(counted))
        for _ in range(20):
            task = store.get("t1")
            assert task is not None
            assert task.tags == {"k": "v"}
            assert [s.platform_task_id for s in store.get_shards("t1")] == ["job-1"]
            assert store.get_shard_by_platform_id("job-1") is not None
        assert wrapped == []
        assert pool.checkedout() == 0  # type: ignore[attr-defined]  # every one put back
        store.save(TaskInfo("t2", "ibm:dev"))  # writes still check out as before
        assert wrapped


def test_point_reads_are_seen_by_pool_listeners(tmp_path: Path) -> None:
    """Whoever listens to the pool (tracing, tests) sees every checkout, as before."""
    with _sqlite_store(tmp_path) as store:
        pool = store._db.engine.pool
        seen: list[str] = []
        event.listen(pool, "checkout", lambda *_: seen.append("out"))
        event.listen(pool, "checkin", lambda *_: seen.append("in"))
        assert store.get("t1") is not None
        assert store.get_shards("t1")
        assert seen == ["out", "in", "out", "in"]


def test_a_returned_read_connection_holds_no_snapshot_or_lock(tmp_path: Path) -> None:
    with _sqlite_store(tmp_path) as store:
        assert store.get("t1") is not None
        assert store.get_shards("t1")
        assert store.db_path is not None
        other = sqlite3.connect(store.db_path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE tasks SET shots = 7 WHERE task_id = 't1'")
            other.execute("COMMIT")
            # A checkpoint that must wait for every reader: none holds a snapshot.
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
        finally:
            other.close()
        task = store.get("t1")
        assert task is not None
        assert task.shots == 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_reads_on_its_own_connections(tmp_path: Path) -> None:
    with _sqlite_store(tmp_path) as store:
        assert store.get("t1") is not None  # the parent's pool now holds a connection
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                task = store.get("t1")
                code = 0 if task is not None and task.tags == {"k": "v"} else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("t1") is not None  # the parent's connection still works


# -- list pages: the driver's raw rows, mapped in one pass or by the column types ----------

DIALECTS = {
    "sqlite": sqlite.pysqlite.dialect(dbapi=sqlite.pysqlite.dialect.import_dbapi()),
    "postgresql": postgresql.psycopg.dialect(  # type: ignore[no-untyped-call]
        dbapi=postgresql.psycopg.dialect.import_dbapi()  # type: ignore[no-untyped-call]
    ),
    "mysql": mysql.pymysql.dialect(dbapi=mysql.pymysql.dialect.import_dbapi()),
}
_naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
_texts = st.text(max_size=6)
_ids = st.one_of(
    st.sampled_from(["t1", "uqt_" + "a" * 32, "ibm:dev", "ibm", ""]),
    _texts,
    _texts.map(lambda t: t.encode("utf-8")),
    st.just(b"\xff\xfe"),
    st.none(),
    st.integers(),
)
_times = st.one_of(
    _naive,
    _naive.map(lambda d: d.replace(tzinfo=UTC)),
    _naive.map(lambda d: d.replace(tzinfo=UTC).isoformat(timespec="microseconds")),
    _naive.map(lambda d: d.isoformat()),
    st.sampled_from(["sometime yesterday", "", "2024-13-01T10:00:00.000000+00:00"]),
    st.none(),
    st.integers(),
    st.just(timedelta(seconds=1)),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_documents = st.one_of(
    _json_values.map(lambda v: json.dumps(v)),
    st.dictionaries(_texts, _json_values, max_size=2).map(lambda v: json.dumps(v)),
    st.sampled_from(["{", "null", "NaN", '{"a": 1}', "[1, 2]", "\ufeff{}"]),
    st.binary(max_size=4),
    st.dictionaries(_texts, st.integers(), max_size=2),
    st.none(),
)
_VALUES = {
    "task_id": _ids,
    "backend": _ids,
    "platform": _ids,
    "name": _ids,
    "uniqc_tag_key": _ids,
    "uniqc_tag_value": _ids,
    "status": st.one_of(st.sampled_from(["pending", "success", "done", "SUCCESS"]), _ids),
    "shots": st.one_of(st.integers(-5, 2**31), st.booleans(), st.floats(0, 9), _texts, st.none()),
    "submit_time": _times,
    "update_time": _times,
    "archived_at": _times,
    "result_json": _documents,
    "metadata_json": _documents,
    "error_message": st.one_of(_texts, st.none(), st.integers(), st.binary(max_size=3)),
    "search_key": st.one_of(_texts, st.none()),  # written for search, never read into a task
}


def _page_prepared(dialect: str, archived: bool, include_results: bool) -> _Prepared:
    side = ARCHIVED if archived else LIVE
    stmt = _page_statement(
        side,
        TaskFilter(status="success"),
        Sort(),
        include_results,
        False,
        True,
        False,
        None,
        dialect == "postgresql",
    )
    return _Prepared(stmt, DIALECTS[dialect])


_PAGE_SHAPES = {
    (d, a, r): _page_prepared(d, a, r)
    for d in DIALECTS
    for a in (False, True)
    for r in (False, True)
}


@st.composite
def _raw_rows(draw: st.DrawFn) -> tuple[_Prepared, tuple[Any, ...], bool]:
    shape = draw(st.sampled_from(sorted(_PAGE_SHAPES)))
    prepared = _PAGE_SHAPES[shape]
    sound = draw(st.booleans())  # half the rows start as the store writes them
    values = []
    for key in prepared.keys:
        value = draw(_VALUES[key])
        if sound and key in SOUND_TASK:
            value = _written(shape[0], key)
        if sound and key == "archived_at":
            value = _written(shape[0], "submit_time")
        values.append(value)
    if sound:
        for key in draw(st.lists(st.sampled_from(prepared.keys), max_size=2)):
            values[prepared.keys.index(key)] = draw(_VALUES[key])
    return prepared, tuple(values), sound


def _written(dialect: str, key: str) -> Any:
    """A column's value as the driver of ``dialect`` hands over what the store wrote."""
    value = SOUND_TASK[key]
    if key in ("submit_time", "update_time"):
        moment = datetime.fromisoformat(value)
        return value if dialect == "sqlite" else moment.replace(tzinfo=None)
    if key in ("result_json", "metadata_json"):
        return json.dumps(value)
    if dialect == "mysql" and key in ("task_id", "backend", "platform", "name"):
        return value.encode("utf-8")
    return value


@settings(max_examples=600, deadline=None)
@given(_raw_rows())
def test_page_rows_map_as_the_column_types_and_checked_path_do(
    case: tuple[_Prepared, tuple[Any, ...], bool],
) -> None:
    """On every database's raw values: the page's converters equal the column types'
    result processing, and a row the one-pass reader takes maps to what the checked
    path (``task_from_row`` on the converted row) gives."""
    prepared, row, _ = case
    reader = PageRows(prepared.keys, prepared.types, prepared.results)
    converted = reader.converted(row)
    by_types = {
        key: value if process is None else process(value)
        for key, value, process in zip(prepared.keys, row, prepared.results, strict=True)
    }
    assert converted == {k: by_types[k] for k in converted}
    fast = sound_task_reader(prepared.keys)(row)
    checked = _outcome(task_from_row, converted)
    if fast is not None:
        assert checked == ("ok", fast)


def test_rows_as_the_store_writes_them_take_the_one_pass_path() -> None:
    for (dialect, _, _), prepared in _PAGE_SHAPES.items():
        row = tuple(
            _written(dialect, "submit_time" if k == "archived_at" else k)
            if k in SOUND_TASK or k == "archived_at"
            else None
            for k in prepared.keys
        )
        task = sound_task_reader(prepared.keys)(row)
        assert task is not None, dialect
        assert ("ok", task) == _outcome(
            task_from_row, PageRows(prepared.keys, prepared.types, prepared.results).converted(row)
        )


_SUMMARY_SHAPES = {
    (d, a): _Prepared(
        _page_statement(
            ARCHIVED if a else LIVE,
            TaskFilter(),
            Sort(),
            False,
            True,
            True,
            False,
            None,
            d == "postgresql",
        ),
        DIALECTS[d],
    )
    for d in DIALECTS
    for a in (False, True)
}
_SUMMARY_VALUES = _VALUES | {
    "shard_count": st.one_of(st.integers(0, 9), st.booleans(), st.floats(0, 3), st.just("2")),
    "has_result": st.one_of(st.booleans(), st.integers(0, 1), st.none()),
}


@st.composite
def _raw_summary_rows(draw: st.DrawFn) -> tuple[_Prepared, tuple[Any, ...]]:
    prepared = _SUMMARY_SHAPES[draw(st.sampled_from(sorted(_SUMMARY_SHAPES)))]
    sound = draw(st.booleans())
    values = []
    for key in prepared.keys:
        value = draw(_SUMMARY_VALUES[key])
        if sound and key in SOUND_TASK:
            value = _written("postgresql" if draw(st.booleans()) else "sqlite", key)
        values.append(value)
    return prepared, tuple(values)


@settings(max_examples=400, deadline=None)
@given(_raw_summary_rows())
def test_summary_rows_map_as_the_column_types_do(case: tuple[_Prepared, tuple[Any, ...]]) -> None:
    prepared, row = case
    reader = PageRows(prepared.keys, prepared.types, prepared.results)
    fast = plain_summary_reader(prepared.keys)(row, {"k": "v"})
    checked = _outcome(lambda r: reader.checked_summary(r, {"k": "v"}), row)
    if fast is not None:
        assert checked == ("ok", fast)


def test_pages_with_an_offset_and_no_limit_read_the_rest(store: TaskStore) -> None:
    """``offset`` alone reads every task after it (LIMIT 2**62, a 64-bit parameter: as a
    32-bit one PostgreSQL refused it)."""
    for i in range(4):
        store.save(TaskInfo(f"t{i}", "ibm:dev", submit_time=f"2026-01-0{i + 1}T00:00:00+00:00"))
    store.set_tags("t1", {"k": "v"})
    assert [t.task_id for t in store.list(offset=1)] == ["t2", "t1", "t0"]
    assert [t.tags for t in store.list(offset=2, status="pending")] == [{"k": "v"}, {}]
    assert [s.task_id for s in store.summaries(offset=3)] == ["t0"]
    assert [t.task_id for t in store.list(backend="ibm:dev", offset=3, limit=5)] == ["t0"]


def test_repeated_reads_compile_nothing(store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page, a summary page and a point read are compiled once per filter: run again,
    they compile no SQL at all (a per-call compile cost a SQLite page 0.9 of its 2.1 ms)."""
    from sqlalchemy.sql import compiler

    store.save(TaskInfo("t1", "ibm:dev", status=TaskStatus.RUNNING))
    store.set_tags("t1", {"k": "v"})

    def calls() -> None:
        assert [t.task_id for t in store.list(status="running", limit=50)] == ["t1"]
        assert [t.task_id for t in store.list(tags={"k": "v"}, limit=50)] == ["t1"]
        assert [s.task_id for s in store.summaries(status="running", limit=50)] == ["t1"]
        assert store.list_page(status="running", limit=50).tasks[0].task_id == "t1"
        task = store.get("t1")
        assert task is not None
        assert task.tags == {"k": "v"}

    calls()
    compiled: list[object] = []
    real = compiler.Compiled.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        compiled.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(compiler.Compiled, "__init__", counting)
    calls()
    assert compiled == []
