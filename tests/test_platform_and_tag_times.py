"""Schema v10: ``tasks.platform`` and ``task_tags.submit_time``, copies that let a platform
page and a tag page read an index in sort order. Old stores are filled when they open,
every writer keeps the copies true, and the pages use them (plans checked on SQLite; the
benchmark prints the servers' plans)."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, inspect, select, text

from uniqc_taskstore import TaskInfo, TaskShard, TaskStore
from uniqc_taskstore.backends import backend_for_url
from uniqc_taskstore.backends.sqlite import SqliteBackend
from uniqc_taskstore.column_types import IdText, JsonDocument, StatusText, Timestamp
from uniqc_taskstore.exchange import export_tasks, import_tasks
from uniqc_taskstore.filters import LIVE, Sort, TaskFilter
from uniqc_taskstore.maintenance import Location, diagnose
from uniqc_taskstore.migrator import MIGRATIONS, migrate
from uniqc_taskstore.queries import select_tasks
from uniqc_taskstore.schema import archived_task_tags, archived_tasks, task_tags, tasks
from uniqc_taskstore.transfer import copy_tasks

T0 = "2025-01-01T00:00:00.000000+00:00"


def _at(minute: int) -> str:
    return f"2025-01-01T00:{minute:02d}:00.000000+00:00"


# -- what every writer must leave behind -----------------------------------------------------


def copies(store: TaskStore) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """``{task_id: (backend, platform, submit_time)}`` and ``{(task_id, key): tag
    submit_time}`` over live and archived tables, read as stored."""

    def work(conn: Any) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
        found: dict[str, Any] = {}
        for table in (tasks, archived_tasks):
            for row in conn.execute(
                select(table.c.task_id, table.c.backend, table.c.platform, table.c.submit_time)
            ):
                found[row.task_id] = (row.backend, row.platform, row.submit_time)
        tagged: dict[tuple[str, str], Any] = {}
        for table in (task_tags, archived_task_tags):
            for row in conn.execute(select(table.c.task_id, table.c["key"], table.c.submit_time)):
                tagged[(row.task_id, row.key)] = row.submit_time
        return found, tagged

    return store._db.read(work)


def assert_copies_true(store: TaskStore) -> None:
    found, tagged = copies(store)
    for task_id, (backend, platform, _) in found.items():
        assert platform == backend.split(":", 1)[0], task_id
    for (task_id, key), when in tagged.items():
        assert when == found[task_id][2], (task_id, key)


def test_every_writer_keeps_platform_and_tag_times_true(store: TaskStore, tmp_path: Path) -> None:
    store.save(TaskInfo("a", "ibm:dev1", submit_time=_at(1), tags={"team": "x"}))
    store.save(TaskInfo("b", "originq", submit_time=_at(2), tags={"team": "x", "run": "1"}))
    store.save(TaskInfo("c", "ibm:dev1:fast", submit_time=_at(3)))
    # A second save keeps the first submit_time: the tags must carry the stored one.
    store.save(TaskInfo("a", "originq:WK_C180", submit_time=_at(9), tags={"team": "y"}))
    store.save_many(
        [
            TaskInfo("b", "ibm", submit_time=_at(8), tags={"run": "2"}),
            TaskInfo("d", "dummy", submit_time=_at(4), tags={"team": "y"}),
        ]
    )
    store.set_tags("c", {"team": "x"})
    store.set_tags("a", {"run": "3"})
    store.remove_tags("b", ["absent"])
    found, tagged = copies(store)
    assert found["a"][:2] == ("originq:WK_C180", "originq")
    assert found["b"][:2] == ("ibm", "ibm")
    assert found["c"][:2] == ("ibm:dev1:fast", "ibm")
    assert tagged[("a", "team")] == tagged[("a", "run")] == found["a"][2] == _at(1)
    assert tagged[("b", "run")] == _at(2)
    assert_copies_true(store)

    assert store.archive("a")
    store.archive_many(["b", "c"])
    assert_copies_true(store)
    assert store.restore("b")
    assert_copies_true(store)

    exported = io.StringIO()
    export_tasks(store, exported, live=True, archived=True)
    with TaskStore(tmp_path / "imported") as other:
        import_tasks(other, io.StringIO(exported.getvalue()))
        assert len(copies(other)[1]) == len(tagged)
        assert_copies_true(other)
    with TaskStore(tmp_path / "copied") as other:
        copy_tasks(store, other)
        assert len(copies(other)[1]) == len(tagged)
        assert_copies_true(other)


def test_platform_and_tag_pages_match_the_filters_at_every_cursor(store: TaskStore) -> None:
    backends = ["ibm", "ibm:dev1", "ibm:dev1:x", "ibmx", "ibm;", "originq:a", "originq"]
    for n in range(40):
        tags = {"team": f"t{n % 3}"} | ({"run": "r"} if n % 2 else {})
        # Equal submit times in pairs: the task id breaks the tie, and the cursor with it.
        store.save(
            TaskInfo(f"t{n:02d}", backends[n % len(backends)], submit_time=_at(n // 2), tags=tags)
        )
    everything = store.list()
    cases: list[dict[str, Any]] = [
        {"backend": "ibm"},
        {"backend": "ibm:dev1"},
        {"backend": "originq"},
        {"tags": {"team": "t1"}},
        {"tags": {"team": "t1", "run": "r"}},
        {"tags": {"run": None, "team": "t2"}},
        {"tags": {"team": "t0"}, "backend": "ibm", "status": "pending"},
    ]
    for criteria in cases:
        f = TaskFilter(**criteria)
        expected = [
            t.task_id
            for t in everything
            if (
                f.backend is None or t.backend == f.backend or t.backend.startswith(f.backend + ":")
            )
            and all(k in t.tags and v in (None, t.tags[k]) for k, v in f.tag_pairs.items())
        ]
        assert expected, criteria
        for descending in (True, False):
            want = expected if descending else list(reversed(expected))
            got: list[str] = []
            cursor = None
            while True:
                page = store.list_page(limit=3, cursor=cursor, descending=descending, **criteria)
                got += [t.task_id for t in page.tasks]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert got == want, (criteria, descending)
        assert store.count(**criteria) == len(expected)
        assert [s.task_id for s in store.summaries(**criteria)] == expected
    platforms: dict[str, int] = {}
    for t in everything:
        platforms[t.backend.split(":", 1)[0]] = platforms.get(t.backend.split(":", 1)[0], 0) + 1
    assert store.count_by("platform") == platforms


def _plan(store: TaskStore, stmt: Any) -> str:
    engine = store._db.engine
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("criteria", "index"),
    [
        ({"backend": "ibm"}, "tasks_platform_submit_idx"),
        ({"tags": {"team": "a"}}, "task_tags_key_value_submit_idx"),
        ({"tags": {"team": "a"}, "status": "pending"}, "task_tags_key_value_submit_idx"),
    ],
)
def test_platform_and_tag_pages_read_their_index_without_sorting(
    tmp_path: Path, criteria: dict[str, Any], index: str
) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("uqt_" + "1" * 32, "ibm:dev1", tags={"team": "a"}))
        for position in (None, (T0, "uqt_" + "1" * 32)):
            stmt = select_tasks(LIVE, TaskFilter(**criteria), Sort(), limit=50, position=position)
            plan = _plan(store, stmt)
            assert index in plan, plan
            assert "TEMP B-TREE" not in plan, plan


def test_a_device_page_merges_two_ordered_index_reads(tmp_path: Path) -> None:
    # ``ibm:dev1`` is the label or a sub-label: one ordered read each, not one sort of
    # every task of the device (MULTI-INDEX OR, then a sort).
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("uqt_" + "1" * 32, "ibm:dev1"))
        for position in (None, (T0, "uqt_" + "1" * 32)):
            stmt = select_tasks(
                LIVE, TaskFilter(backend="ibm:dev1"), Sort(), limit=50, position=position
            )
            plan = _plan(store, stmt)
            assert "SEARCH tasks USING INDEX tasks_backend_submit_idx (backend=?" in plan, plan
            assert "MULTI-INDEX OR" not in plan, plan


def test_a_legacy_submit_time_text_is_copied_to_tags_as_stored(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("a", "dummy", tags={"team": "x"}))
        path = store.db_path
    assert path is not None
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE tasks SET submit_time = 'sometime yesterday' WHERE task_id = 'a'")
    raw.close()
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("a", "dummy", tags={"team": "y", "run": "1"}))
        store.set_tags("a", {"owner": "ana"})
        assert store.list_page(tags={"team": "y"}).tasks[0].task_id == "a"
    raw = sqlite3.connect(path)
    stored = raw.execute("SELECT DISTINCT submit_time FROM task_tags").fetchall()
    raw.close()
    assert stored == [("sometime yesterday",)]
    # A copy stores the repaired time on the task: its tags carry that one.
    with TaskStore(tmp_path) as store, TaskStore(tmp_path / "copy") as other:
        copy_tasks(store, other)
        assert len(copies(other)[1]) == 3
        assert_copies_true(other)
        assert other.list_page(tags={"team": "y"}).tasks[0].task_id == "a"


# -- a version 9 store opens as version 10 ------------------------------------------------------

_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _v9_tables() -> dict[str, Table]:
    meta = MetaData()

    def task_table(name: str, *extra: Column[Any]) -> Table:
        return Table(
            name,
            meta,
            Column("task_id", IdText, primary_key=True),
            Column("backend", IdText),
            Column("status", StatusText),
            Column("shots", Integer),
            Column("submit_time", Timestamp),
            Column("update_time", Timestamp),
            Column("metadata_json", JsonDocument),
            *extra,
            **_MYSQL,
        )

    def tag_table(name: str) -> Table:
        return Table(
            name,
            meta,
            Column("task_id", IdText),
            Column("key", IdText),
            Column("value", IdText),
            **_MYSQL,
        )

    return {
        "tasks": task_table("tasks"),
        "archived_tasks": task_table("archived_tasks", Column("archived_at", Timestamp)),
        "task_tags": tag_table("task_tags"),
        "archived_task_tags": tag_table("archived_task_tags"),
    }


def _fill_v9(engine: Engine) -> None:
    t = _v9_tables()
    backends = {"a": "ibm:dev1", "b": "originq", "c": "a:b:c", "d": "ibm"}
    with engine.begin() as conn:
        for task_id, backend in backends.items():
            table = t["archived_tasks"] if task_id == "d" else t["tasks"]
            row = {
                "task_id": task_id,
                "backend": backend,
                "status": "pending",
                "shots": 0,
                "submit_time": _at(ord(task_id) - ord("a")),
                "update_time": T0,
                "metadata_json": {},
            }
            if task_id == "d":
                row["archived_at"] = T0
            conn.execute(insert(table).values(row))
        conn.execute(
            insert(t["task_tags"]),
            [
                {"task_id": "a", "key": "team", "value": "x"},
                {"task_id": "b", "key": "team", "value": "x"},
                {"task_id": "c", "key": "run", "value": "1"},
            ],
        )
        conn.execute(insert(t["archived_task_tags"]).values(task_id="d", key="team", value="x"))


def _v9_store(kind: str, tmp_path: Path, fresh_database_url: Callable[[str], str]) -> str:
    if kind == "sqlite":
        path = tmp_path / "tasks.sqlite"
        sqlite3.connect(path).close()  # an empty file, as a first open finds one
        backend: Any = SqliteBackend(path)
        url = f"sqlite:///{path}"
    else:
        url = fresh_database_url(kind)
        backend = backend_for_url(url)
    engine = backend.create_engine()
    try:
        migrate(backend, engine, MIGRATIONS[:9])
        _fill_v9(engine)
    finally:
        engine.dispose()
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_a_version_9_store_opens_with_platforms_and_tag_times_filled(
    kind: str, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> None:
    url = _v9_store(kind, tmp_path, fresh_database_url)
    with TaskStore.from_url(url) as store:
        report = store._db.last_migration
        assert report is not None
        assert report.applied[0] == 10  # and the steps after it
        found, tagged = copies(store)
        assert {k: v[1] for k, v in found.items()} == {
            "a": "ibm",
            "b": "originq",
            "c": "a",
            "d": "ibm",
        }
        assert tagged == {
            ("a", "team"): _at(0),
            ("b", "team"): _at(1),
            ("c", "run"): _at(2),
            ("d", "team"): _at(3),
        }
        assert [t.task_id for t in store.list(backend="ibm")] == ["a"]
        assert [t.task_id for t in store.list(tags={"team": "x"})] == ["b", "a"]
        assert [t.task_id for t in store.list_archived(backend="ibm", tags={"team": "x"})] == ["d"]
        indexes = {
            table: {i["name"] for i in inspect(store._db.engine).get_indexes(table)}
            for table in ("tasks", "archived_tasks", "task_tags", "archived_task_tags")
        }
        assert "tasks_platform_submit_idx" in indexes["tasks"]
        assert "archived_platform_submit_idx" in indexes["archived_tasks"]
        assert "task_tags_key_value_submit_idx" in indexes["task_tags"]
        assert "task_tags_key_value_idx" not in indexes["task_tags"]
        assert "archived_task_tags_key_value_submit_idx" in indexes["archived_task_tags"]
        assert "archived_task_tags_key_value_idx" not in indexes["archived_task_tags"]
        store.save(TaskInfo("e", "ibm:dev2", tags={"team": "x"}), [TaskShard("e", 0, "j", "ibm")])
        assert_copies_true(store)


def test_the_platform_rule_in_sql_is_the_python_rule(store: TaskStore) -> None:
    # Migration v10 fills platform in each database's SQL; a save uses Python's split.
    labels = ["ibm", "ibm:dev1", "a:b:c", ":x", "x:", "\u00fcn\u00ef:c\u00f8d\u00e9", "a;b"]
    for n, label in enumerate(labels):
        store.save(TaskInfo(f"t{n}", label))
    with store._db.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET platform = NULL"))
        MIGRATIONS[9][1](conn)  # the v10 step again: it fills what is NULL
    found, _ = copies(store)
    assert {task_id: v[1] for task_id, v in found.items()} == {
        f"t{n}": label.split(":", 1)[0] for n, label in enumerate(labels)
    }


def test_doctor_finds_platforms_and_tag_times_another_program_left_stale(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("a", "ibm:dev1", tags={"team": "x"}))
        store.save(TaskInfo("b", "ibm:dev1", tags={"team": "x"}))
        path = store.db_path
    assert path is not None

    def finding() -> Any:
        checks = diagnose(Location(SqliteBackend(path), "test"))
        return next(c for c in checks if c.name == "filter columns")

    assert finding().status == "ok"
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE tasks SET backend = 'originq:x' WHERE task_id = 'a'")
        raw.execute("UPDATE task_tags SET submit_time = NULL WHERE task_id = 'b'")
    raw.close()
    # The v13 triggers re-derive the platform of a task another program re-points, so on
    # SQLite only the tag row (which no trigger keeps) is left stale.
    with sqlite3.connect(path) as raw:
        [(platform,)] = raw.execute("SELECT platform FROM tasks WHERE task_id = 'a'")
    assert platform == "originq"
    stale = finding()
    assert stale.status == "warn"
    assert "(1 in task_tags)" in stale.message
    with TaskStore(tmp_path) as store:  # saving again rewrites both copies
        for task_id in ("a", "b"):
            task = store.get(task_id)
            assert task is not None
            store.save(task)
    assert finding().status == "ok"


def test_mariadb_gets_the_platform_and_label_as_a_closed_range() -> None:
    # MariaDB reads an index by ``ref`` on ``column = value`` alone and walks down to a
    # keyset page's position; the closed range makes it seek (see filters.exactly).
    from sqlalchemy.dialects import mysql, sqlite

    for backend, column in (("ibm", "platform"), ("ibm:dev1", "backend")):
        stmt = select_tasks(LIVE, TaskFilter(backend=backend), Sort(), limit=50, position=(T0, "t"))
        on_mariadb = str(stmt.compile(dialect=mysql.dialect()))
        assert f"tasks.{column} >= %s AND tasks.{column} <= %s" in on_mariadb
        assert f"tasks.{column} = %s" not in on_mariadb
        assert f"tasks.{column} = ?" in str(stmt.compile(dialect=sqlite.dialect()))


def test_mariadb_gets_one_status_as_a_closed_range_and_a_tag_pair_as_equalities() -> None:
    # With ``=`` (or a one-value ``IN``) MariaDB walked a status page 2,000 deep for
    # half a second; the tag index, on the contrary, is read in order only given ``=``
    # on key and value (given the ranges, MariaDB sorted every tagged task).
    from sqlalchemy.dialects import mysql, sqlite

    status = select_tasks(LIVE, TaskFilter(status="success"), Sort(), limit=50, position=(T0, "t"))
    on_mariadb = str(status.compile(dialect=mysql.dialect()))
    assert "tasks.status >= %s AND tasks.status <= %s" in on_mariadb
    assert "tasks.status = ?" in str(status.compile(dialect=sqlite.dialect()))
    tagged = select_tasks(LIVE, TaskFilter(tags={"team": "t3"}), Sort(), limit=50)
    on_mariadb = str(tagged.compile(dialect=mysql.dialect()))
    assert "uniqc_sort_tag.`key` = %s" in on_mariadb
    assert "uniqc_sort_tag.value = %s" in on_mariadb
