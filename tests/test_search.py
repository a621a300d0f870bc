"""``search`` means one thing on every database: the folded term is a substring of the
folded id, backend, name or platform job id (``str.casefold``, nothing else ignored;
:mod:`uniqc_taskstore.search`), checked against the Python rule over generated text."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, insert, text

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore
from uniqc_taskstore.backends import backend_for_url
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.column_types import IdText, StatusText, Timestamp
from uniqc_taskstore.maintenance import Location, diagnose
from uniqc_taskstore.migrator import MIGRATIONS, migrate
from uniqc_taskstore.search import SEPARATOR, fold, matches

ALPHABET = [
    "a", "A", "e", "E", "\u00e9", "\u00c9", "e\u0301", "E\u0301", "\u00df", "\u1e9e",
    "s", "S", "i", "I", "\u0130", "\u0131", "\u03c3", "\u03c2", "\u03a3", "\u01c5",
    "\u01c4", "\u01c6", "\ufb01", "k", "\u212a", "\U0001f600", "\U0001f642", "%", "_",
    "\\", "!", "-", ":", " ",
]  # fmt: skip
"""Accents (precomposed and combining), German sharp s (and its capital), Turkish dotted
and dotless i, Greek sigma and final sigma, a title-case digraph, a ligature, the Kelvin
sign, emoji, and LIKE's own special characters."""
texts = (
    st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=6)
    .map("".join)
    .filter(lambda text: not text.isspace())
)

_examples = itertools.count()


def _stored(
    store: TaskStore, example: int, fields: list[tuple[str, str, str, str]]
) -> dict[str, list[str]]:
    """Save one task per (id part, backend, name, platform job id); their texts by id."""
    haystacks: dict[str, list[str]] = {}
    tasks = []
    shards = []
    for i, (id_part, backend, name, job) in enumerate(fields):
        task_id = f"e{example}-{i}-{id_part}"
        tasks.append(TaskInfo(task_id, backend, name=name, tags={"example": str(example)}))
        shards.append(TaskShard(task_id, 0, job, backend))
        haystacks[task_id] = [task_id, backend, name, job]
    store.save_many(tasks, shards)
    return haystacks


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.lists(st.tuples(texts, texts, texts, texts), min_size=1, max_size=4),
    terms=st.lists(texts, min_size=1, max_size=4),
)
def test_search_answers_as_the_python_rule_on_every_database(
    store: TaskStore, fields: list[tuple[str, str, str, str]], terms: list[str]
) -> None:
    example = next(_examples)
    haystacks = _stored(store, example, fields)
    # A term that is a piece of a stored text, too, so that matches are not rare.
    terms = [*terms, fields[0][1][1:], fields[-1][3].upper(), fields[0][2].lower()]
    for term in terms:
        if not term:
            continue
        expected = sorted(i for i, texts_ in haystacks.items() if matches(term, texts_))
        found = store.list(search=term, tags={"example": str(example)}, include_results=False)
        assert sorted(t.task_id for t in found) == expected, term
        assert store.count(search=term, tags={"example": str(example)}) == len(expected), term


def test_the_issue_examples_answer_alike(store: TaskStore) -> None:
    store.save_many(
        [
            TaskInfo("a", "dummy", name="café"),
            TaskInfo("b", "dummy", name="CAFE"),
            TaskInfo("c", "dummy", name="cafe\u0301"),
            TaskInfo("d", "dummy", name="😀"),
            TaskInfo("e", "dummy", name="JOB-ÉTÉ"),
            TaskInfo("f", "dummy", name="STRASSE"),
        ]
    )

    def search(term: str) -> list[str]:
        return sorted(t.task_id for t in store.list(search=term))

    assert search("CAFÉ") == ["a"]  # not the unaccented one, not the combining form
    assert search("cafe\u0301") == ["c"]
    assert search("ÉTÉ") == ["e"]
    assert search("été") == ["e"]
    assert search("🙂") == []  # an emoji is itself, not every other emoji
    assert search("straße") == ["f"]  # ß folds to ss
    assert search("%") == []
    assert search("_") == []


def test_a_term_never_matches_across_two_fields(store: TaskStore) -> None:
    store.save(TaskInfo("ab", "cd", name="ef"))
    assert store.count(search="bc") == 0
    assert store.count(search="b" + SEPARATOR + "c") == 0
    assert store.count(search="de") == 0
    assert store.count(search="cd") == 1


def test_a_resubmitted_shard_is_found_by_its_new_platform_id(store: TaskStore) -> None:
    store.save(TaskInfo("t", "dummy"), [TaskShard("t", 0, "Job-Ä", "dummy")])
    assert store.count(search="job-ä") == 1
    store.save_shard(TaskShard("t", 0, "JOB-Ö", "dummy"))
    assert store.count(search="job-ä") == 0
    assert store.count(search="job-ö") == 1


def test_archived_and_restored_tasks_keep_their_search_text(store: TaskStore) -> None:
    store.save(TaskInfo("t", "Ärger:dev", name="Übung"), [TaskShard("t", 0, "ÉTÉ-1", "x")])
    store.archive("t")
    assert store.count_archived(search="ärger") == 1
    assert store.count_archived(search="été-1") == 1
    store.restore("t")
    assert store.count(search="übung") == 1


def test_fold_is_str_casefold() -> None:
    assert fold("Straße İ ǅ") == "Straße İ ǅ".casefold()
    assert SEPARATOR not in fold("".join(ALPHABET))


# -- a version 10 store opens as version 11, its search keys filled ---------------------------


def _v10_store(kind: str, tmp_path: Path, fresh_database_url: Callable[[str], str]) -> str:
    """A store at schema v10 holding non-ASCII tasks and shards, live and archived,
    written as v10 wrote them (no search_key column)."""
    if kind == "sqlite":
        path = tmp_path / "tasks.sqlite"
        sqlite3.connect(path).close()
        backend: Any = SqliteBackend(path)
        url = f"sqlite:///{path}"
    else:
        url = fresh_database_url(kind)
        backend = backend_for_url(url)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:10])
        t = _v10_tables()
        base = {"status": "pending", "submit_time": T0, "update_time": T0}
        with engine.begin() as conn:
            for i, (task_id, backend_label, name) in enumerate(V10_TASKS):
                table = t["archived_tasks"] if i % 2 else t["tasks"]
                extra = {"archived_at": T0} if i % 2 else {}
                conn.execute(
                    insert(table).values(
                        task_id=task_id,
                        backend=backend_label,
                        name=name,
                        platform=backend_label.split(":")[0],
                        shots=0,
                        **base,
                        **extra,
                    )
                )
                shards = t["archived_task_shards"] if i % 2 else t["task_shards"]
                conn.execute(
                    insert(shards).values(
                        uniqc_task_id=task_id,
                        shard_index=0,
                        platform_task_id=f"JOB-{name or task_id}",
                        backend=backend_label,
                        **base,
                        **extra,
                    )
                )
    finally:
        engine.dispose()
    return url


T0 = "2025-01-01T00:00:00.000000+00:00"
_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _v10_tables() -> dict[str, Table]:
    """The columns of v10's task and shard tables that these rows need."""
    meta = MetaData()
    tables = {}
    for prefix in ("", "archived_"):

        def extra(prefix: str = prefix) -> list[Column[Any]]:
            return [Column("archived_at", Timestamp)] if prefix else []

        tables[f"{prefix}tasks"] = Table(
            f"{prefix}tasks",
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("backend", IdText),
            Column("status", StatusText),
            Column("shots", Integer),
            Column("submit_time", Timestamp),
            Column("update_time", Timestamp),
            Column("name", IdText),
            Column("platform", IdText),
            *extra(),
            **_MYSQL,
        )
        tables[f"{prefix}task_shards"] = Table(
            f"{prefix}task_shards",
            meta,
            Column("uniqc_task_id", IdText),
            Column("shard_index", Integer),
            Column("platform_task_id", IdText),
            Column("backend", IdText),
            Column("status", StatusText),
            Column("submit_time", Timestamp),
            Column("update_time", Timestamp),
            *extra(),
            **_MYSQL,
        )
    return tables


V10_TASKS = [
    ("uqt_1", "Ärger:Gerät", "CAFÉ"),
    ("uqt_2", "dummy", "Straße"),
    ("uqt_3", "İstanbul", None),
    ("UQT_4", "dummy", "\U0001f600 run"),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_a_version_10_store_opens_with_search_keys_filled(
    kind: str, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> None:
    url = _v10_store(kind, tmp_path, fresh_database_url)
    with TaskStore.from_url(url) as store:
        report = store._db.last_migration
        assert report is not None
        assert 11 in report.applied
        for term in ("café", "STRASSE", "ärger:gerät", "i̇stanbul", "uqt_4", "job-café", "😀"):
            haystacks = {
                task_id: [task_id, backend_label, name or "", f"JOB-{name or task_id}"]
                for task_id, backend_label, name in V10_TASKS
            }
            expected = sorted(i for i, texts_ in haystacks.items() if matches(term, texts_))
            found = [t.task_id for t in store.list(search=term)]
            found += [t.task_id for t in store.list_archived(search=term)]
            assert sorted(found) == expected, term
            assert expected, term


def test_the_v11_step_run_again_fills_exactly_what_a_save_writes(store: TaskStore) -> None:
    # The step skips rows that have a key, so a step stopped halfway (MariaDB cannot
    # roll DDL back) is finished by running it again, with the keys a save writes.
    store.save_many(
        [TaskInfo(f"t{i}-Ä", "Gerät:x", name=f"Straße {i}") for i in range(5)],
        [TaskShard(f"t{i}-Ä", 0, f"JOB-É{i}", "x") for i in range(5)],
    )
    store.archive("t0-Ä")

    def keys() -> dict[str, list[Any]]:
        def work(conn: Any) -> dict[str, list[Any]]:
            return {
                name: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {name}"))))
                for name in ("tasks", "archived_tasks", "task_shards", "archived_task_shards")
            }

        return store._db.read(work)

    before = keys()
    with store._db.engine.begin() as conn:
        for name in ("tasks", "task_shards", "archived_tasks"):
            conn.execute(text(f"UPDATE {name} SET search_key = NULL"))
        MIGRATIONS[10][1](conn)
    assert keys() == before
    assert store.count(search="STRASSE 3") == 1


def test_doctor_finds_tasks_and_shards_another_program_left_without_search_text(
    tmp_path: Path,
) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("a", "dummy", name="Übung"), [TaskShard("a", 0, "JOB-Ä", "dummy")])
        path = store.db_path
    assert path is not None

    def finding() -> Any:
        checks = diagnose(Location(SqliteBackend(path), "test"))
        return next(c for c in checks if c.name == "filter columns")

    assert finding().status == "ok"
    raw = sqlite3.connect(path)
    with raw:  # as a program that knows only version 10 would write them
        raw.execute("UPDATE tasks SET search_key = NULL")
        raw.execute("UPDATE task_shards SET search_key = NULL")
    raw.close()
    stale = finding()
    assert stale.status == "warn"
    assert "1 in tasks without search text, 1 in task_shards without search text" in stale.message
    with TaskStore(tmp_path) as store:  # saving again writes the search text
        assert store.count(search="übung") == 0
        task = store.get("a")
        assert task is not None
        store.save(task, store.get_shards("a"))
        assert store.count(search="übung") == 1
        assert store.count(search="job-ä") == 1
    assert finding().status == "ok"
