"""Random filters against a plain Python filter over the same tasks, on every backend.

Forty tasks with varied statuses, backends, times (with ties), names, tags and
platform job ids are saved once per backend; hypothesis then draws filters and
sorts, and ``list``, ``count``, ``count_by`` and cursor pages must agree with the
model exactly, ordering included.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniqc_taskstore import TaskFilter, TaskInfo, TaskShard, TaskStatus, TaskStore
from uniqc_taskstore.search import matches
from uniqc_taskstore.timestamps import parse_timestamp

T0 = datetime(2026, 5, 1, tzinfo=UTC)
BACKENDS = ["originq", "originq:WK_C180", "originq:PQ", "OriginQ:WK_C180", "ibm:kyiv", "dummy"]
NAMES = [None, "bell", "Bell", "ghz_3", "100%"]
TAG_KEYS = ["team", "run", "Team"]
TAG_VALUES = ["qec", "QEC", "", "7"]
SEARCHES = ["bell", "WK", "originq", "JOB", "_", "%", "kyiv", "uqt", "x-1"]


def _tasks() -> tuple[list[TaskInfo], list[TaskShard]]:
    tasks: list[TaskInfo] = []
    shards: list[TaskShard] = []
    for k in range(40):
        task = TaskInfo(
            f"uqt_{k:02d}" if k % 3 else f"x-{k:02d}",
            BACKENDS[k % len(BACKENDS)],
            status=list(TaskStatus)[k * 7 % 5],
            submit_time=(T0 + timedelta(minutes=k // 3)).isoformat(),
            name=NAMES[k * 3 % len(NAMES)],
            tags={
                TAG_KEYS[(k + j) % len(TAG_KEYS)]: TAG_VALUES[(k * j) % len(TAG_VALUES)]
                for j in range(k % 3)
            },
        )
        tasks.append(task)
        if k % 4 == 0:
            shards.append(TaskShard(task.task_id, 0, f"JOB-{k}", task.backend))
    return tasks, shards


def _fill(store: TaskStore) -> tuple[list[TaskInfo], dict[str, list[str]]]:
    tasks, shards = _tasks()
    for start in range(0, len(tasks), 8):  # groups share an update time
        group = tasks[start : start + 8]
        ids = {t.task_id for t in group}
        store.save_many(group, [s for s in shards if s.uniqc_task_id in ids])
    jobs: dict[str, list[str]] = {}
    for shard in shards:
        jobs.setdefault(shard.uniqc_task_id, []).append(shard.platform_task_id)
    return store.list(), jobs


def _matches(task: TaskInfo, f: TaskFilter, jobs: dict[str, list[str]]) -> bool:
    def instant(text: str) -> datetime:
        return parse_timestamp(text)

    statuses = f.statuses
    checks = [
        statuses is None or task.status in statuses,
        f.backend is None or task.backend == f.backend or task.backend.startswith(f.backend + ":"),
        f.name is None or task.name == f.name,
        all(
            key in task.tags and (value is None or task.tags[key] == value)
            for key, value in f.tag_pairs.items()
        ),
    ]
    for attr, low, high in (
        ("submit_time", f.submitted_after, f.submitted_before),
        ("update_time", f.updated_after, f.updated_before),
    ):
        moment = instant(getattr(task, attr))
        checks.append(low is None or moment >= instant(str(low)))
        checks.append(high is None or moment < instant(str(high)))
    if f.search is not None:
        haystack = [task.task_id, task.backend, task.name or "", *jobs.get(task.task_id, [])]
        checks.append(matches(f.search, haystack))
    return all(checks)


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    """Filter fields, with time bounds as (which time, index into the stored times, shift)."""
    spec: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        spec["status"] = draw(st.lists(st.sampled_from(list(TaskStatus)), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        spec["backend"] = draw(st.sampled_from(["originq", "OriginQ", "ibm", "originq:PQ", "x"]))
    for bound in ("submitted_after", "submitted_before", "updated_after", "updated_before"):
        if draw(st.integers(0, 2)) == 0:
            spec[bound] = (draw(st.integers(0, 39)), draw(st.sampled_from([-1, 0, 1])))
    if draw(st.integers(0, 3)) == 0:
        spec["tags"] = draw(
            st.dictionaries(
                st.sampled_from(TAG_KEYS),
                st.one_of(st.none(), st.sampled_from(TAG_VALUES)),
                max_size=2,
            )
        )
    if draw(st.integers(0, 3)) == 0:
        spec["name"] = draw(st.sampled_from([n for n in NAMES if n]))
    if draw(st.integers(0, 3)) == 0:
        spec["search"] = draw(st.sampled_from(SEARCHES))
    return spec


def _resolve(spec: dict[str, Any], stored: list[TaskInfo]) -> TaskFilter:
    fields = dict(spec)
    for bound in ("submitted_after", "submitted_before", "updated_after", "updated_before"):
        if bound in fields:
            index, shift = fields[bound]
            attr = "submit_time" if bound.startswith("submitted") else "update_time"
            moment = parse_timestamp(getattr(stored[index], attr))
            fields[bound] = moment + timedelta(microseconds=shift)
    return TaskFilter(**fields)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_filters_agree_with_a_python_filter(store: TaskStore, data: st.DataObject) -> None:
    if store.count() == 0:
        _fill(store)
    stored = store.list()
    jobs = {
        task.task_id: [s.platform_task_id for s in store.get_shards(task.task_id)]
        for task in stored
    }
    f = _resolve(data.draw(filters(), label="filter"), stored)
    order_by = data.draw(st.sampled_from(["submit_time", "update_time"]), label="order_by")
    descending = data.draw(st.booleans(), label="descending")
    expected = sorted(
        (t for t in stored if _matches(t, f, jobs)),
        key=lambda t: (getattr(t, order_by), t.task_id),
        reverse=descending,
    )
    want = [t.task_id for t in expected]
    got = store.list(f, order_by=order_by, descending=descending)  # type: ignore[arg-type]
    assert [t.task_id for t in got] == want
    assert store.count(f) == len(want)
    assert store.count_by("status", f) == dict(Counter(t.status.value for t in expected))
    assert store.count_by("platform", f) == dict(Counter(t.backend.split(":")[0] for t in expected))
    assert [s.task_id for s in store.summaries(f, order_by=order_by, descending=descending)] == (  # type: ignore[arg-type]
        want
    )
    limit = data.draw(st.integers(1, 7), label="page size")
    paged: list[str] = []
    cursor = None
    while True:
        page = store.list_page(
            f,
            limit=limit,
            order_by=order_by,  # type: ignore[arg-type]
            descending=descending,
            cursor=cursor,
        )
        paged.extend(t.task_id for t in page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == want
