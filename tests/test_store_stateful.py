"""Random sequences of writes leave the store agreeing with a plain in-memory model.

A hypothesis state machine drives a real ``TaskStore`` on every backend with
saves (with and without shards), shard saves and polls, deletes, archiving,
restoring and clearing, over a small pool of ids so that writes collide. The
model is written from the documented rules (not from the store's code); after
every step the store's reads (get, shards, archive, list, count, filters,
platform-id lookups) are compared with it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from uniqc_taskstore import (
    ShardLayoutError,
    ShardNotFoundError,
    ShardUpdate,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
)

TASK_IDS = ["uqt_" + digit * 32 for digit in "3a7f"] + ["my-own-id"]
PLATFORM_IDS = ["job-1", "job-2", "job-3", "JOB-1"]
BACKENDS = [
    "originq",
    "originq:WK_C180",
    "originq_sim:b",
    "originqXsim:a",
    "ORIGINQ:x",
    "ibm:fez",
]
BACKEND_FILTERS = ["originq", "originq_sim", "ibm"]
SUBMIT_TIMES = [
    "2026-03-01T10:00:00.000000+00:00",
    "2026-03-01T10:00:00.000005+00:00",
    "2026-03-02T09:30:00.250000+00:00",
    "2027-01-15T23:59:59.999999+00:00",
]
ERROR_MESSAGES = [None, "boom", "timed out", "ünïcode ✓"]
FINAL = {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED}
MAX_SHARD_INDEX = 3
FULL_SWEEP_EVERY = 5

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False),
    st.just(math.nan),
    st.text(max_size=5),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
metadata_values = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
statuses = st.sampled_from(list(TaskStatus))
task_ids = st.sampled_from(TASK_IDS)
shard_indexes = st.integers(0, MAX_SHARD_INDEX)


tasks_to_save = st.builds(
    TaskInfo,
    task_id=task_ids,
    backend=st.sampled_from(BACKENDS),
    status=statuses,
    result=json_values,
    shots=st.integers(0, 10**6),
    submit_time=st.sampled_from(SUBMIT_TIMES),
    metadata=metadata_values,
    error_message=st.sampled_from(ERROR_MESSAGES),
)


@st.composite
def shard_drafts(draw: st.DrawFn) -> TaskShard:
    """A shard of no task yet; offsets are usually the non-overlapping ``3 * index``."""
    index = draw(shard_indexes)
    return TaskShard(
        uniqc_task_id="",
        shard_index=index,
        platform_task_id=draw(st.sampled_from(PLATFORM_IDS)),
        backend=draw(st.sampled_from(BACKENDS)),
        circuit_count=draw(st.integers(1, 3)),
        sub_index_offset=draw(st.sampled_from([3 * index] * 3) | st.integers(0, 9)),
        status=draw(statuses),
        result=draw(json_values),
        error_message=draw(st.sampled_from(ERROR_MESSAGES)),
        submit_time=draw(st.sampled_from(SUBMIT_TIMES)),
    )


# -- the model's rules, from the documented semantics ------------------------------------


def spec_aggregate(shard_statuses: Iterable[TaskStatus]) -> TaskStatus:
    seen = set(shard_statuses)
    if not seen:
        return TaskStatus.PENDING
    if not seen <= FINAL:
        return TaskStatus.RUNNING
    if seen == {TaskStatus.SUCCESS}:
        return TaskStatus.SUCCESS
    if TaskStatus.FAILED in seen:
        return TaskStatus.FAILED
    return TaskStatus.CANCELLED


def overlapping(shards: Iterable[TaskShard]) -> bool:
    spans = sorted((s.sub_index_offset, s.sub_index_offset + s.circuit_count) for s in shards)
    return any(later[0] < earlier[1] for earlier, later in pairwise(spans))


def is_stale(stored: TaskStatus, incoming: TaskStatus) -> bool:
    return stored in FINAL and incoming not in FINAL


def backend_matches(backend: str, family: str) -> bool:
    return backend == family or backend.startswith(family + ":")


def newest_first(tasks: Iterable[TaskInfo]) -> list[TaskInfo]:
    return sorted(tasks, key=lambda t: (t.submit_time, t.task_id), reverse=True)


def canon(value: Any) -> Any:
    """``value`` in a form where NaN equals NaN and 1, 1.0 and True differ, for ``==``."""
    if isinstance(value, float):
        return ("float", "nan") if math.isnan(value) else ("float", value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, list):
        return [canon(item) for item in value]
    if isinstance(value, dict):
        return {key: canon(item) for key, item in value.items()}
    return value


def snapshot(value: Any) -> Any:
    """A read's answer, comparable with ``==`` (tasks and shards as canonical dicts)."""
    if isinstance(value, TaskInfo | TaskShard):
        return canon(value.to_dict())
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    return value


# -- the machine ---------------------------------------------------------------------------


class StoreAgainstModel(RuleBasedStateMachine):
    """One run: an emptied store and an empty model, then random rules."""

    def __init__(self, store: TaskStore) -> None:
        super().__init__()
        self.store = store
        self.live: dict[str, TaskInfo] = {}
        self.shards: dict[str, dict[int, TaskShard]] = {}
        self.archived: dict[str, TaskInfo] = {}
        self.archived_shards: dict[str, dict[int, TaskShard]] = {}
        self.checks = 0
        self.verified: dict[tuple[Any, ...], Any] = {}

    @initialize()
    def start_empty(self) -> None:
        self.store.clear_all()

    # -- model updates ------------------------------------------------------------------

    def _apply_task(self, task: TaskInfo) -> None:
        new = copy.deepcopy(task)
        old = self.live.get(new.task_id)
        if old is not None:
            new.submit_time = old.submit_time
            if is_stale(old.status, new.status):
                new.status, new.result = old.status, old.result
                new.error_message = old.error_message
        self.live[new.task_id] = new

    def _apply_shard(self, shard: TaskShard) -> None:
        new = copy.deepcopy(shard)
        siblings = self.shards.setdefault(new.uniqc_task_id, {})
        old = siblings.get(new.shard_index)
        if old is not None and old.platform_task_id == new.platform_task_id:
            new.submit_time = old.submit_time
            if is_stale(old.status, new.status):
                new.status, new.result = old.status, old.result
                new.error_message = old.error_message
        siblings[new.shard_index] = new

    def _layout_after(self, task_id: str, incoming: Iterable[TaskShard]) -> list[TaskShard]:
        layout = dict(self.shards.get(task_id, {}))
        layout.update({shard.shard_index: shard for shard in incoming})
        return list(layout.values())

    def _pick_task_id(self, data: st.DataObject, known: Iterable[str]) -> str:
        """Usually an id the model holds (so the rule does something), else any id."""
        return data.draw(st.sampled_from([*sorted(known), None])) or data.draw(task_ids)

    # -- rules ----------------------------------------------------------------------------

    @rule(task=tasks_to_save)
    def save_task(self, task: TaskInfo) -> None:
        self._save(task, [])

    @rule(
        task=tasks_to_save,
        drafts=st.lists(shard_drafts(), min_size=1, max_size=3, unique_by=lambda s: s.shard_index),
    )
    def save_task_with_shards(self, task: TaskInfo, drafts: list[TaskShard]) -> None:
        self._save(task, [replace(draft, uniqc_task_id=task.task_id) for draft in drafts])

    def _save(self, task: TaskInfo, shards: list[TaskShard]) -> None:
        if overlapping(self._layout_after(task.task_id, shards)):
            with pytest.raises(ShardLayoutError):
                self.store.save(task, shards)
            return
        self.store.save(task, shards or None)
        # The model keeps the stamped objects, so the reads check the stamp was stored.
        assert all(shard.update_time == task.update_time for shard in shards)
        self._apply_task(task)
        for shard in shards:
            self._apply_shard(shard)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), draft=shard_drafts())
    def save_shard(self, data: st.DataObject, draft: TaskShard) -> None:
        task_id = self._pick_task_id(data, self.live)
        shard = replace(draft, uniqc_task_id=task_id)
        if task_id not in self.live:
            with pytest.raises(TaskNotFoundError):
                self.store.save_shard(shard)
            return
        if overlapping(self._layout_after(task_id, [shard])):
            with pytest.raises(ShardLayoutError):
                self.store.save_shard(shard)
            return
        self.store.save_shard(shard)
        self._apply_shard(shard)

    @precondition(lambda self: any(self.shards.get(task_id) for task_id in self.live))
    @rule(
        data=st.data(),
        status=statuses,
        result=st.one_of(st.none(), json_values),
        error_message=st.sampled_from(ERROR_MESSAGES),
    )
    def update_shard(
        self,
        data: st.DataObject,
        status: TaskStatus,
        result: Any,
        error_message: str | None,
    ) -> None:
        known: list[tuple[str, int] | None] = [
            (t, i) for t in sorted(self.live) for i in sorted(self.shards.get(t, {}))
        ]
        key = data.draw(st.sampled_from([*known, None]))
        task_id, index = key or data.draw(st.tuples(task_ids, shard_indexes))
        shard = self.shards.get(task_id, {}).get(index) if task_id in self.live else None
        if shard is None:
            with pytest.raises(ShardNotFoundError):
                self.store.update_shard(
                    task_id, index, status=status, result=result, error_message=error_message
                )
            return
        task = self.live[task_id]
        outcome = self.store.update_shard(
            task_id, index, status=status, result=result, error_message=error_message
        )
        if is_stale(shard.status, status):
            assert outcome == ShardUpdate(False, shard.status, task.status)
            return
        shard.status = status
        if result is not None:
            shard.result = copy.deepcopy(result)
        if error_message is not None:
            shard.error_message = error_message
        stored_shard = next(s for s in self.store.get_shards(task_id) if s.shard_index == index)
        shard.update_time = stored_shard.update_time
        aggregate = spec_aggregate(s.status for s in self.shards[task_id].values())
        if task.status in FINAL and aggregate not in FINAL:
            # A late report about one shard does not reopen a finished task.
            assert outcome == ShardUpdate(True, status, task.status)
            return
        assert outcome == ShardUpdate(True, status, aggregate)
        task.status = aggregate
        task.update_time = shard.update_time

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, self.live)
        existed = self.live.pop(task_id, None) is not None
        self.shards.pop(task_id, None)
        assert self.store.delete(task_id) is existed

    @precondition(lambda self: any(self.shards.values()))
    @rule(data=st.data())
    def delete_shards(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, (t for t, shards in self.shards.items() if shards))
        expected = len(self.shards.pop(task_id, {}))
        assert self.store.delete_shards(task_id) == expected

    @precondition(lambda self: any(task.status in FINAL for task in self.live.values()))
    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(
            data, (t for t, task in self.live.items() if task.status in FINAL)
        )
        task = self.live.get(task_id)
        if task is None:
            assert self.store.archive(task_id) is False
            return
        if task.status not in FINAL:
            with pytest.raises(TaskStateError):
                self.store.archive(task_id)
            return
        assert self.store.archive(task_id) is True
        stamped = self.store.get_archived(task_id)
        assert stamped is not None
        assert stamped.archived_at is not None
        assert datetime.fromisoformat(stamped.archived_at).utcoffset() == timedelta(0)
        del self.live[task_id]
        self.archived[task_id] = replace(task, archived_at=stamped.archived_at)
        self.archived_shards[task_id] = self.shards.pop(task_id, {})

    @precondition(lambda self: bool(self.archived))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, self.archived)
        task = self.archived.get(task_id)
        if task is None:
            assert self.store.restore(task_id) is False
            return
        if task_id in self.live:
            with pytest.raises(TaskStateError):
                self.store.restore(task_id)
            return
        assert self.store.restore(task_id) is True
        del self.archived[task_id]
        self.live[task_id] = replace(task, archived_at=None)
        self.shards[task_id] = self.archived_shards.pop(task_id, {})

    @precondition(lambda self: bool(self.archived))
    @rule(data=st.data())
    def delete_archived(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, self.archived)
        existed = self.archived.pop(task_id, None) is not None
        self.archived_shards.pop(task_id, None)
        assert self.store.delete_archived(task_id) is existed

    @precondition(lambda self: any(task.status in FINAL for task in self.live.values()))
    @rule(chosen=st.sets(st.sampled_from(sorted(FINAL))))
    def clear_completed(self, chosen: set[TaskStatus]) -> None:
        doomed = [task_id for task_id, task in self.live.items() if task.status in chosen]
        for task_id in doomed:
            del self.live[task_id]
            self.shards.pop(task_id, None)
        assert self.store.clear_completed(chosen) == len(doomed)

    # -- every read agrees ----------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        """Every read agrees with the model. A read whose expected answer has not changed
        since it last agreed is skipped, except every few steps (server round trips
        are slow): a failure then shows at the step that changed the answer."""
        self.checks += 1
        sweep = self.checks % FULL_SWEEP_EVERY == 1
        store = self.store
        for task_id in TASK_IDS:
            live_shards = self.shards.get(task_id, {})
            archived_shards = self.archived_shards.get(task_id, {})
            self._agrees(
                sweep, ("get", task_id), self.live.get(task_id), partial(store.get, task_id)
            )
            self._agrees(
                sweep,
                ("get_shards", task_id),
                [live_shards[i] for i in sorted(live_shards)],
                partial(store.get_shards, task_id),
            )
            self._agrees(
                sweep,
                ("get_archived", task_id),
                self.archived.get(task_id),
                partial(store.get_archived, task_id),
            )
            self._agrees(
                sweep,
                ("get_archived_shards", task_id),
                [archived_shards[i] for i in sorted(archived_shards)],
                partial(store.get_archived_shards, task_id),
            )
        self._agrees(sweep, ("list",), newest_first(self.live.values()), store.list)
        self._agrees(sweep, ("count",), len(self.live), store.count)
        for status in TaskStatus:
            expected = sum(task.status == status for task in self.live.values())
            self._agrees(
                sweep, ("count_by_status", status), expected, partial(store.count, status=status)
            )
        for family in BACKEND_FILTERS:
            matching = [t for t in self.live.values() if backend_matches(t.backend, family)]
            self._agrees(
                sweep,
                ("list_by_backend", family),
                newest_first(matching),
                partial(store.list, backend=family),
            )
            self._agrees(
                sweep,
                ("count_by_backend", family),
                len(matching),
                partial(store.count, backend=family),
            )
        self._agrees(
            sweep, ("list_archived",), newest_first(self.archived.values()), store.list_archived
        )
        self._agrees(sweep, ("count_archived",), len(self.archived), store.count_archived)
        for platform_id in PLATFORM_IDS:
            for narrowed_to in (None, "originq"):
                newest = self._newest_shard(platform_id, narrowed_to)
                self._agrees(
                    sweep,
                    ("get_shard_by_platform_id", platform_id, narrowed_to),
                    newest,
                    partial(store.get_shard_by_platform_id, platform_id, backend=narrowed_to),
                )
                self._agrees(
                    sweep,
                    ("find_uniqc_id_by_platform_id", platform_id, narrowed_to),
                    newest.uniqc_task_id if newest else None,
                    partial(store.find_uniqc_id_by_platform_id, platform_id, backend=narrowed_to),
                )

    def _agrees(
        self, sweep: bool, read: tuple[Any, ...], model_answer: Any, ask: Callable[[], Any]
    ) -> None:
        """The store's answer to ``ask()`` equals the model's answer to ``read``."""
        expected = snapshot(model_answer)
        if not sweep and read in self.verified and self.verified[read] == expected:
            return
        answer = snapshot(ask())
        assert answer == expected, read
        self.verified[read] = expected

    def _newest_shard(self, platform_id: str, family: str | None) -> TaskShard | None:
        """The documented choice among live shards of a platform id: newest submit
        time, then highest task id, then highest index."""
        candidates = [
            shard
            for shards in self.shards.values()
            for shard in shards.values()
            if shard.platform_task_id == platform_id
            and (family is None or backend_matches(shard.backend, family))
        ]
        return max(
            candidates,
            key=lambda s: (s.submit_time, s.uniqc_task_id, s.shard_index),
            default=None,
        )


def test_every_read_matches_the_model_after_random_writes(
    store: TaskStore, backend_kind: str
) -> None:
    class BoundToThisStore(StoreAgainstModel):
        def __init__(self) -> None:
            super().__init__(store)

    examples = 25 if backend_kind == "sqlite" else 15
    run_settings = settings(max_examples=examples, stateful_step_count=25, deadline=None)
    run_state_machine_as_test(BoundToThisStore, settings=run_settings)
