"""One hostile stored row does not break reading for everyone.

Rows are spoiled with raw SQL, as another program or a hand edit would, on every
database whose column types can hold the value. Reading one raises
``CorruptRowError`` naming the row and column; listings skip and report it with
``on_corrupt=``; ``find_corrupt_rows`` finds each one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import text

from uniqc_taskstore import (
    CorruptRowError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    UnserializableValueError,
)
from uniqc_taskstore.integrity import find_corrupt_rows
from uniqc_taskstore.jsoncodec import MAX_DEPTH, MAX_INT_DIGITS

GOOD = "uqt_" + "1" * 32
BAD = "uqt_" + "2" * 32
ALL = frozenset({"sqlite", "postgresql", "mysql"})
TEXT_COLUMNS = frozenset({"sqlite", "mysql"})  # PostgreSQL's JSON type refuses malformed text


@dataclass(frozen=True)
class Hostile:
    name: str
    column: str
    sql_value: str
    backends: frozenset[str] = ALL


HOSTILE = [
    Hostile("deep-nesting", "result_json", "'" + "[" * 5000 + "]" * 5000 + "'"),
    Hostile("5000-digit-number", "result_json", "'" + "7" * 5000 + "'"),
    Hostile("malformed-json", "result_json", "'{\"counts\": '", TEXT_COLUMNS),
    Hostile("bad-tagged-value", "result_json", '\'{"$uniqc": "complex", "real": "x", "imag": 1}\''),
    Hostile("metadata-not-an-object", "metadata_json", "'[1, 2]'"),
    Hostile("unknown-status", "status", "'bogus'"),
    Hostile("blob-timestamp", "submit_time", "x'00ff'", frozenset({"sqlite"})),
    Hostile("text-shots", "shots", "'many'", frozenset({"sqlite"})),
    Hostile("non-utf8-backend", "backend", "x'ff'", TEXT_COLUMNS),
]


def _spoil(store: TaskStore, table: str, column: str, value: str, key: str) -> None:
    key_column = "task_id" if "shard" not in table else "uniqc_task_id"
    with store._db.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = {value} WHERE {key_column} = '{key}'"))


def _seed(store: TaskStore) -> None:
    for task_id in (GOOD, BAD):
        store.save(
            TaskInfo(task_id, "dummy", TaskStatus.SUCCESS, result={"00": 1}),
            [TaskShard(task_id, 0, f"job-{task_id}", "dummy", status=TaskStatus.SUCCESS)],
        )


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_hostile_task_row_is_named_skipped_and_found(
    store: TaskStore, backend_kind: str, hostile: Hostile
) -> None:
    if backend_kind not in hostile.backends:
        pytest.skip(f"{backend_kind}'s column type cannot hold {hostile.name}")
    _seed(store)
    _spoil(store, "tasks", hostile.column, hostile.sql_value, BAD)

    with pytest.raises(CorruptRowError) as caught:
        store.get(BAD)
    assert (caught.value.table, caught.value.key, caught.value.column) == (
        "tasks",
        BAD,
        hostile.column,
    )
    assert BAD in str(caught.value)
    with pytest.raises(CorruptRowError):
        store.list()

    skipped: list[CorruptRowError] = []
    assert [t.task_id for t in store.list(on_corrupt=skipped.append)] == [GOOD]
    assert [e.key for e in skipped] == [BAD]
    if hostile.column != "submit_time":  # a page cannot end on an unreadable sort key
        page = store.list_page(limit=1, include_results=True, on_corrupt=skipped.append)
        rest = store.list_page(
            limit=5, after=page.next_after, include_results=True, on_corrupt=skipped.append
        )
        assert [t.task_id for t in page.tasks + rest.tasks] == [GOOD]

    found = list(find_corrupt_rows(store))
    assert [(e.table, e.key, e.column) for e in found] == [("tasks", BAD, hostile.column)]


def test_hostile_shard_and_archived_rows_are_found(store: TaskStore, backend_kind: str) -> None:
    _seed(store)
    store.archive(GOOD)
    _spoil(store, "task_shards", "result_json", "'" + "[" * 5000 + "]" * 5000 + "'", BAD)
    _spoil(store, "archived_tasks", "status", "'bogus'", GOOD)

    with pytest.raises(CorruptRowError) as caught:
        store.get_shards(BAD)
    assert (caught.value.key, caught.value.column) == ((BAD, 0), "result_json")
    skipped: list[CorruptRowError] = []
    assert store.list_archived(on_corrupt=skipped.append) == []
    assert [(e.table, e.key) for e in skipped] == [("archived_tasks", GOOD)]
    found = {(e.table, e.column) for e in find_corrupt_rows(store)}
    assert found == {("task_shards", "result_json"), ("archived_tasks", "status")}


def test_save_refuses_what_could_not_be_read_back_the_same_on_every_database(
    store: TaskStore,
) -> None:
    deepest: object = 1
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    longest = int("9" * MAX_INT_DIGITS)
    store.save(TaskInfo(GOOD, "dummy", result=deepest, metadata={"n": longest}))
    stored = store.get(GOOD)
    assert stored is not None
    assert (stored.result, stored.metadata["n"]) == (deepest, longest)

    with pytest.raises(UnserializableValueError, match="nest more than"):
        store.save(TaskInfo(BAD, "dummy", result=[deepest]))
    with pytest.raises(UnserializableValueError, match="digits"):
        store.save(TaskInfo(BAD, "dummy", metadata={"n": longest * 10 + 9}))
    assert store.get(BAD) is None


@pytest.mark.parametrize(
    ("kind", "sql_value"),
    [
        ("malformed-json", "'{\"calibration\": [1, 2'"),
        ("not-an-object", "'[\"calibration\"]'"),
    ],
)
def test_update_metadata_over_unreadable_metadata_is_refused_and_keeps_the_text(
    store: TaskStore, backend_kind: str, kind: str, sql_value: str
) -> None:
    if kind == "malformed-json" and backend_kind not in TEXT_COLUMNS:
        pytest.skip(f"{backend_kind}'s column type cannot hold {kind}")
    _seed(store)
    _spoil(store, "tasks", "metadata_json", sql_value, BAD)
    column = "CAST(metadata_json AS TEXT)" if backend_kind == "postgresql" else "metadata_json"

    def stored() -> object:
        with store._db.engine.begin() as conn:
            return conn.execute(
                text(f"SELECT {column}, update_time FROM tasks WHERE task_id = '{BAD}'")
            ).one()

    before = stored()
    with pytest.raises(CorruptRowError) as caught:
        store.update_metadata(BAD, {"note": "x"}, remove=["calibration"])
    assert (caught.value.table, caught.value.key, caught.value.column) == (
        "tasks",
        BAD,
        "metadata_json",
    )
    assert stored() == before
    assert store.update_metadata(GOOD, {"note": "x"}) == {"note": "x"}
