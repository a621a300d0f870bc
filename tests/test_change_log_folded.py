"""On PostgreSQL the hot writes record their change inside the update that settles the
task (``WITH written AS (UPDATE tasks ... RETURNING ...) INSERT INTO changes ...``),
so the change log costs them no statement of its own. The feed must read exactly as
it does where the change is a statement apart: same tasks, kinds and statuses, in the
same order, for every hot path (a shard report, a stale one, a save with shards new or
stored, a save without, shards saved alone)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, change_log

_STATUSES = list(TaskStatus)
_TASKS = 3
_SHARDS = 2

# One operation on task ``t`` (0.._TASKS-1): ("save", t, status, shard statuses or
# None for none, job suffix), ("report", t, index, status), ("shards", t, status, job).
_op = st.one_of(
    st.tuples(
        st.just("save"),
        st.integers(0, _TASKS - 1),
        st.sampled_from(_STATUSES),
        st.none() | st.lists(st.sampled_from(_STATUSES), min_size=1, max_size=_SHARDS),
        st.integers(0, 1),
    ),
    st.tuples(
        st.just("report"),
        st.integers(0, _TASKS - 1),
        st.integers(0, _SHARDS - 1),
        st.sampled_from(_STATUSES),
    ),
    st.tuples(
        st.just("shards"),
        st.integers(0, _TASKS - 1),
        st.sampled_from(_STATUSES),
        st.integers(0, 1),
    ),
)


def _apply(store: TaskStore, prefix: str, op: tuple[Any, ...]) -> str:
    """Run ``op`` on ``store`` (tasks named from ``prefix``); what it answered, or the
    error type it raised (the same on every store is part of the comparison)."""
    kind, t = op[0], f"{prefix}-{op[1]}"
    try:
        if kind == "save":
            _, _, status, shard_statuses, job = op
            shards = [
                TaskShard(t, i, f"job-{i}-{job}", "dummy", sub_index_offset=i, status=s)
                for i, s in enumerate(shard_statuses or [])
            ]
            store.save(TaskInfo(t, "dummy", status), shards or None)
            return "saved"
        if kind == "report":
            _, _, index, status = op
            return repr(store.update_shard(t, index, status=status))
        _, _, status, job = op
        store.save_shards([TaskShard(t, 0, f"job-0-{job}", "dummy", status=status)])
        return "shards saved"
    except Exception as exc:  # the error's type is compared
        return type(exc).__name__


def _feed(store: TaskStore, token: str, prefix: str) -> list[tuple[str, str, Any]]:
    page = store.changes(since=token, limit=10_000)
    return [
        (change.task_id.removeprefix(prefix), change.kind, change.status)
        for change in page
        if change.task_id.startswith(prefix)
    ]


@pytest.fixture
def stores(
    fresh_database_url: Callable[[str], str], tmp_path: Any
) -> Iterator[dict[str, TaskStore]]:
    made = {
        "folded": TaskStore(url=fresh_database_url("postgresql")),
        "apart": TaskStore(url=fresh_database_url("postgresql")),
        "sqlite": TaskStore(tmp_path),
    }
    try:
        yield made
    finally:
        for store in made.values():
            store.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_op, min_size=1, max_size=12))
def test_a_folded_change_reads_as_one_recorded_apart(
    stores: dict[str, TaskStore], ops: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"uqt_{uuid.uuid4().hex[:12]}"
    seen = {}
    for name, store in stores.items():
        with monkeypatch.context() as patch:
            if name == "apart":
                patch.setattr(change_log, "FOLDS_INTO_WRITES", frozenset())
            token = store.changes().token
            answers = [_apply(store, prefix, op) for op in ops]
            seen[name] = (answers, _feed(store, token, prefix))
    assert seen["folded"] == seen["apart"] == seen["sqlite"]


class _Recording:
    """A driver batch that notes every step it sends."""

    def __init__(self, inner: Any, sent: list[Any]) -> None:
        self._inner = inner
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send(self, steps: Any, *, commit: bool = False) -> Any:
        self._sent.extend(steps)
        return self._inner.send(steps, commit=commit)


def test_the_hot_writes_record_their_change_in_the_update_that_settles_the_task(
    fresh_database_url: Callable[[str], str],
) -> None:
    store = TaskStore(url=fresh_database_url("postgresql"))
    backend: Any = store._db.backend
    original = backend.driver_batch
    sent: list[Any] = []
    backend.driver_batch = lambda conn: _Recording(original(conn), sent)
    task = TaskInfo("uqt_folded", "dummy", TaskStatus.PENDING)
    shard = TaskShard(task.task_id, 0, "job-0", "dummy", status=TaskStatus.PENDING)
    bare = TaskInfo(task.task_id, "dummy", TaskStatus.PENDING)  # its shard says running
    reported = dataclasses.replace(shard, status=TaskStatus.RUNNING)
    writes: list[tuple[str, Callable[[], Any]]] = [
        ("save, new shards", lambda: store.save(task, [shard])),
        ("save over stored shards", lambda: store.save(task, [shard])),
        ("update_shard", lambda: store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)),
        ("save_shards", lambda: store.save_shards([reported])),
        ("save, no shards, status settled", lambda: store.save(bare)),
        ("save, no shards, status kept", lambda: store.save(bare)),
    ]
    token = store.changes().token
    try:
        for name, write in writes:
            sent.clear()
            write()
            logging = [step for step in sent if step.records_changes]
            assert len(logging) == 1, name
            if name.endswith("status kept"):  # nothing to settle: the insert alone
                assert logging[0].sql.startswith("INSERT INTO changes"), name
                continue
            assert logging[0].sql.startswith("WITH written AS \n(UPDATE tasks"), name
            assert not any(step.sql.startswith("INSERT INTO changes") for step in sent), name
        feed = [(c.kind, c.status) for c in store.changes(since=token)]
        final = store.get(task.task_id)
    finally:
        backend.driver_batch = original
        store.close()
    assert [kind for kind, _ in feed] == ["saved", "saved", "updated", "updated", "saved", "saved"]
    assert final is not None
    assert feed[2][1] == feed[-1][1] == final.status == TaskStatus.RUNNING
