"""List pages of 50 against the driver by hand, in one run (``python -m benchmarks``).

The floor reads what the page's objects hold, with hand-written SQL on the driver's own
connection in autocommit: the page's rows (one statement, served by the same index as
ours), then their tags (``task_id IN (...)``), JSON documents decoded with
``json.loads``. ``rows only`` is the same floor without the tags statement: the bare
cost of the rows, which the first measurement of issue 22 compared against.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from uniqc_taskstore import TaskStore

PAGE = 50

_COLUMNS = "t.*"
_SUMMARY = (
    "t.task_id, t.name, t.backend, t.status, t.shots, t.submit_time, t.update_time, "
    "t.error_message, t.result_json IS NOT NULL, "
    "(SELECT COUNT(*) FROM task_shards s WHERE s.uniqc_task_id = t.task_id)"
)
_ORDER = f"ORDER BY t.submit_time DESC, t.task_id DESC LIMIT {PAGE}"
_BY_TAG = (
    "FROM task_tags g JOIN tasks t ON t.task_id = g.task_id WHERE g.key = ? AND g.value = ? "
    f"ORDER BY g.submit_time DESC, g.task_id DESC LIMIT {PAGE}"
)


class PageFloor:
    """The pages by hand on ``conn`` (a DB-API connection in autocommit), ``p`` its
    parameter mark."""

    def __init__(self, conn: Any, p: str) -> None:
        self.conn, self.p = conn, p

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql.replace("?", self.p), params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def _tags(self, ids: list[Any]) -> dict[Any, dict[Any, Any]]:
        found: dict[Any, dict[Any, Any]] = {}
        if ids:
            marks = ", ".join("?" for _ in ids)
            sql = f"SELECT g.task_id, g.key, g.value FROM task_tags g WHERE g.task_id IN ({marks})"
            for task_id, key, value in self._rows(sql, tuple(ids)):
                found.setdefault(task_id, {})[key] = value
        return found

    def tasks(self, sql: str, params: tuple[Any, ...], tags: bool = True) -> list[Any]:
        rows = self._rows(sql, params)
        by_task = self._tags([r[0] for r in rows]) if tags else {}
        return [(_loads(r[6]), _loads(r[7]), by_task.get(r[0], {}), r) for r in rows]

    def summaries(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        rows = self._rows(sql, params)
        by_task = self._tags([r[0] for r in rows])
        return [(by_task.get(r[0], {}), r) for r in rows]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def page_table(store: TaskStore, floor_conn: Any, p: str, calls: int) -> list[dict[str, Any]]:
    """Pages per second, ours and the floor's, interleaved in blocks of 10 calls so that
    a slow spell of the shared machine falls on both sides alike."""
    floor = PageFloor(floor_conn, p)
    where = f"FROM tasks t WHERE t.status = ? {_ORDER}"
    platform = f"FROM tasks t WHERE t.platform = ? {_ORDER}"
    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "list(status=…, limit=50)": (
            lambda: store.list(status="success", limit=PAGE),
            lambda: floor.tasks(f"SELECT {_COLUMNS} {where}", ("success",)),
        ),
        "list_page(status=…, limit=50)": (
            lambda: store.list_page(status="success", limit=PAGE),
            lambda: floor.tasks(f"SELECT {_COLUMNS} {where}", ("success",)),
        ),
        "list(backend=platform, limit=50)": (
            lambda: store.list(backend="ibm", limit=PAGE),
            lambda: floor.tasks(f"SELECT {_COLUMNS} {platform}", ("ibm",)),
        ),
        "list(tags={k: v}, limit=50)": (
            lambda: store.list(tags={"team": "t3"}, limit=PAGE),
            lambda: floor.tasks(f"SELECT {_COLUMNS} {_BY_TAG}", ("team", "t3")),
        ),
        "summaries(status=…, limit=50)": (
            lambda: store.summaries(status="success", limit=PAGE),
            lambda: floor.summaries(f"SELECT {_SUMMARY} {where}", ("success",)),
        ),
        "rows only: list(status=…, limit=50)": (
            lambda: store.list(status="success", limit=PAGE),
            lambda: floor.tasks(f"SELECT {_COLUMNS} {where}", ("success",), tags=False),
        ),
    }
    rows = []
    for name, (mine, theirs) in pairs.items():
        mine(), theirs()  # warm: statement caches, pages in memory
        spent = {"ours": 0.0, "floor": 0.0}
        for _ in range(max(1, calls // 10)):
            for side, call in (("floor", theirs), ("ours", mine)):
                started = time.perf_counter()
                for _ in range(10):
                    call()
                spent[side] += time.perf_counter() - started
        done = max(1, calls // 10) * 10
        rows.append(
            {"operation": name, "floor": done / spent["floor"], "ours": done / spent["ours"]}
        )
    return rows
