"""Random sequences of writes leave the store agreeing with a plain in-memory model.

A hypothesis state machine drives a real ``TaskStore`` on every backend with saves
(one task or several, with and without shards), shard saves and polls, deletes,
archiving, restoring and clearing, over a small pool of ids so that writes collide.
The model is a specification written from the README ("Statuses, results and
errors" and the API docstrings), not from the store's code: the aggregate comes from
the README's table, and ``update_time`` is checked to be one instant inside the
window of the write that stamped it, never copied from the store. After every step
the store's reads (get, shards, archive, list and list_page with filters, limits and
offsets, count, platform-id lookups) are compared with it.

``UNIQC_STATEFUL_EXAMPLES`` and ``UNIQC_STATEFUL_STEPS`` raise the budget (``nox -s
nightly``); each run prints how often every rule ran, by outcome.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
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
from uniqc_taskstore.timestamps import utc_now

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
    "2026-03-01T15:30:00.000001+05:30",  # the same instant as the first, plus a microsecond
    "2026-03-01T02:00:00-08:00",  # the same instant as the first
    "2026-03-02T09:30:00.250000+00:00",
    "2027-01-15T23:59:59.999999+00:00",
    "2027-01-16T01:00:00+01:00",
    "2026-06-01T12:00:00",  # naive: local time
]
ERROR_MESSAGES = [None, "boom", "timed out", "ünïcode ✓"]
MAX_SHARD_INDEX = 3
FULL_SWEEP_EVERY = 5
EXAMPLES = int(os.environ.get("UNIQC_STATEFUL_EXAMPLES", "0"))
STEPS = int(os.environ.get("UNIQC_STATEFUL_STEPS", "30"))

RULES_RUN: Counter[str] = Counter()
"""How often each rule ran, by outcome, over the whole test session."""

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


NO_TASK_YET = st.just("")


@st.composite
def shard_drafts(draw: st.DrawFn, task_id: st.SearchStrategy[str] = NO_TASK_YET) -> TaskShard:
    """A shard; offsets are usually the non-overlapping ``3 * index``."""
    index = draw(shard_indexes)
    return TaskShard(
        uniqc_task_id=draw(task_id),
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


# -- the specification, from the README -----------------------------------------------

P, R, S, F, C = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
FINISHED = frozenset({S, F, C})

# The README's table, first matching row wins: (when the shards' statuses are..., the task is).
README_TABLE: list[tuple[Callable[[set[TaskStatus]], bool], TaskStatus]] = [
    (lambda seen: not seen, P),  # no shards
    (lambda seen: bool(seen & {P, R}), R),  # any shard unfinished
    (lambda seen: seen == {S}, S),  # all success
    (lambda seen: F in seen, F),  # all finished, with a failure
    (lambda seen: True, C),  # otherwise: cancellations, maybe with successes
]


def table_aggregate(shard_statuses: Iterable[TaskStatus]) -> TaskStatus:
    seen = set(shard_statuses)
    return next(status for matches, status in README_TABLE if matches(seen))


def status_after_write(
    row_status: TaskStatus, shard_statuses: Sequence[TaskStatus], new_job: bool
) -> TaskStatus:
    """README: a task's status is the aggregate of its shards after every write; with no
    shards it keeps its own. A finished status is not replaced by an unfinished one,
    unless the write gave the task a new platform job (a new shard or a resubmission)."""
    if not shard_statuses:
        return row_status
    aggregate = table_aggregate(shard_statuses)
    if row_status in FINISHED and aggregate not in FINISHED and not new_job:
        return row_status
    return aggregate


def is_stale(stored: TaskStatus, incoming: TaskStatus) -> bool:
    return stored in FINISHED and incoming not in FINISHED


def canonical_time(text: str) -> str:
    """README: aware UTC ISO-8601 with microseconds; naive input is local time."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def overlap(a: TaskShard, b: TaskShard) -> bool:
    return (
        a.sub_index_offset < b.sub_index_offset + b.circuit_count
        and b.sub_index_offset < a.sub_index_offset + a.circuit_count
    )


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


@dataclass
class Stamp:
    """One write's ``update_time``: unknown until read, but inside [earliest, latest]."""

    earliest: str
    latest: str
    seen: str | None = None


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
        self.stamps: dict[str, Stamp] = {}
        self.checks = 0
        self.verified: dict[tuple[Any, ...], Any] = {}

    @initialize()
    def start_empty(self) -> None:
        self.store.clear_all()

    # -- stamps ---------------------------------------------------------------------------

    def _write(self, call: Callable[[], Any]) -> tuple[Any, str]:
        """Run a write; return its answer and the key of the stamp it may have set."""
        earliest = utc_now()
        answer = call()
        key = f"stamp-{len(self.stamps)}"
        self.stamps[key] = Stamp(earliest, utc_now())
        return answer, key

    def _check_stamp(self, key: str, stored: str, read: tuple[Any, ...]) -> None:
        stamp = self.stamps[key]
        if stamp.seen is None:
            assert stamp.earliest <= stored <= stamp.latest, (read, key, stored, stamp)
            stamp.seen = stored
        assert stored == stamp.seen, (read, "one write, one instant", stored, stamp)

    # -- model updates (the documented write rules) ---------------------------------------

    def _layout_problem(self, incoming: Sequence[TaskShard]) -> bool:
        """README: a write may hold each index of a task once, and its shards may share no
        circuit with each other or with the stored shards they do not replace."""
        for task_id in {s.uniqc_task_id for s in incoming}:
            own = [s for s in incoming if s.uniqc_task_id == task_id]
            indexes = [s.shard_index for s in own]
            if len(set(indexes)) != len(indexes):
                return True
            if any(overlap(a, b) for a, b in pairwise(sorted(own, key=_offset))):
                return True
            kept = [s for i, s in self.shards.get(task_id, {}).items() if i not in set(indexes)]
            if any(overlap(new, old) for new in own for old in kept):
                return True
        return False

    def _apply_task(self, task: TaskInfo, stamp: str) -> None:
        new = copy.deepcopy(task)
        new.submit_time = canonical_time(new.submit_time)
        new.update_time = stamp
        old = self.live.get(new.task_id)
        if old is not None:
            new.submit_time = old.submit_time
            if is_stale(old.status, new.status):
                new.status, new.result = old.status, old.result
                new.error_message = old.error_message
        self.live[new.task_id] = new

    def _apply_shard(self, shard: TaskShard, stamp: str) -> bool:
        """Store one shard; True if it is a new platform job for its task."""
        new = copy.deepcopy(shard)
        new.submit_time = canonical_time(new.submit_time)
        new.update_time = stamp
        siblings = self.shards.setdefault(new.uniqc_task_id, {})
        old = siblings.get(new.shard_index)
        same_job = old is not None and old.platform_task_id == new.platform_task_id
        if old is not None and same_job:
            new.submit_time = old.submit_time
            if is_stale(old.status, new.status):
                new.status, new.result = old.status, old.result
                new.error_message = old.error_message
        siblings[new.shard_index] = new
        return not same_job

    def _settle(self, task_id: str, new_job: bool, stamp: str, *, always_stamp: bool) -> None:
        task = self.live[task_id]
        shard_statuses = [s.status for s in self.shards.get(task_id, {}).values()]
        settled = status_after_write(task.status, shard_statuses, new_job)
        if always_stamp or settled != task.status:
            task.update_time = stamp
        task.status = settled

    def _pick_task_id(self, data: st.DataObject, known: Iterable[str]) -> str:
        """Usually an id the model holds (so the rule does something), else any id."""
        return data.draw(st.sampled_from([*sorted(known), None])) or data.draw(task_ids)

    # -- rules: saves ---------------------------------------------------------------------

    @rule(task=tasks_to_save)
    def save_task(self, task: TaskInfo) -> None:
        self._save_many("save", [task], [])

    @rule(task=tasks_to_save, drafts=st.lists(shard_drafts(), min_size=1, max_size=3))
    def save_task_with_shards(self, task: TaskInfo, drafts: list[TaskShard]) -> None:
        self._save_many("save with shards", [task], [_of(d, task.task_id) for d in drafts])

    @rule(
        tasks=st.lists(tasks_to_save, min_size=2, max_size=3),
        data=st.data(),
    )
    def save_many(self, tasks: list[TaskInfo], data: st.DataObject) -> None:
        ids = st.sampled_from(sorted({task.task_id for task in tasks}))
        shards = data.draw(st.lists(shard_drafts(ids), max_size=4))
        self._save_many("save_many", tasks, shards)

    def _save_many(self, name: str, tasks: list[TaskInfo], shards: list[TaskShard]) -> None:
        call = (
            partial(self.store.save, tasks[0], shards or None)
            if len(tasks) == 1
            else partial(self.store.save_many, tasks, shards)
        )
        if self._layout_problem(shards):
            RULES_RUN[f"{name}: ShardLayoutError"] += 1
            with pytest.raises(ShardLayoutError):
                call()
            return
        RULES_RUN[f"{name}: {len(tasks)} task(s), {len(shards)} shard(s)"] += 1
        as_given = copy.deepcopy(tasks)  # the store sets the stored status on the objects
        _, stamp = self._write(call)
        new_jobs: set[str] = set()
        for task in as_given:
            self._apply_task(task, stamp)
        for shard in shards:
            if self._apply_shard(shard, stamp):
                new_jobs.add(shard.uniqc_task_id)
        for task_id in {task.task_id for task in tasks}:
            self._settle(task_id, task_id in new_jobs, stamp, always_stamp=False)
        for task in tasks:  # README: the status stored is set on the object too
            assert task.status == self.live[task.task_id].status
            self._check_stamp(stamp, task.update_time, ("save stamps the object",))

    @precondition(lambda self: any(t.status not in FINISHED for t in self.live.values()))
    @rule(data=st.data(), final=st.sampled_from(sorted(FINISHED)))
    def user_finishes_a_task(self, data: st.DataObject, final: TaskStatus) -> None:
        """A user cancels (or marks finished) a task whose shards may still run: a
        save of the stored task with a finished status."""
        task_id = data.draw(
            st.sampled_from(
                sorted(t for t, task in self.live.items() if task.status not in FINISHED)
            )
        )
        stored = self.live[task_id]
        task = replace(stored, status=final, submit_time=SUBMIT_TIMES[0], update_time=utc_now())
        self._save_many(f"user marks a task {final.value}", [task], [])

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), draft=shard_drafts())
    def save_shard(self, data: st.DataObject, draft: TaskShard) -> None:
        self._save_shards("save_shard", [_of(draft, self._pick_task_id(data, self.live))])

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def save_shards(self, data: st.DataObject) -> None:
        ids = st.sampled_from(sorted(self.live)) | task_ids
        self._save_shards("save_shards", data.draw(st.lists(shard_drafts(ids), max_size=4)))

    def _save_shards(self, name: str, shards: list[TaskShard]) -> None:
        call = partial(self.store.save_shards, shards)
        if any(shard.uniqc_task_id not in self.live for shard in shards):
            RULES_RUN[f"{name}: TaskNotFoundError"] += 1
            with pytest.raises(TaskNotFoundError):
                call()
            return
        if self._layout_problem(shards):
            RULES_RUN[f"{name}: ShardLayoutError"] += 1
            with pytest.raises(ShardLayoutError):
                call()
            return
        _, stamp = self._write(call)
        new_jobs = {s.uniqc_task_id for s in shards if self._apply_shard(s, stamp)}
        reopened = 0
        for task_id in {shard.uniqc_task_id for shard in shards}:
            was = self.live[task_id].status
            self._settle(task_id, task_id in new_jobs, stamp, always_stamp=True)
            reopened += was in FINISHED and self.live[task_id].status not in FINISHED
        outcome = "reopened a finished task" if reopened else f"{len(shards)} shard(s)"
        RULES_RUN[f"{name}: {outcome}"] += 1

    # -- rules: polls ---------------------------------------------------------------------

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
        self._poll("update_shard", task_id, index, status, result, error_message)

    def _poll(
        self,
        name: str,
        task_id: str,
        index: int,
        status: TaskStatus,
        result: Any,
        error_message: str | None,
    ) -> None:
        shard = self.shards.get(task_id, {}).get(index) if task_id in self.live else None
        call = partial(
            self.store.update_shard,
            task_id,
            index,
            status=status,
            result=result,
            error_message=error_message,
        )
        if shard is None:
            RULES_RUN[f"{name}: ShardNotFoundError"] += 1
            with pytest.raises(ShardNotFoundError):
                call()
            return
        task = self.live[task_id]
        outcome, stamp = self._write(call)
        if is_stale(shard.status, status):
            RULES_RUN[f"{name}: stale, not applied"] += 1
            assert outcome == ShardUpdate(False, shard.status, task.status)
            return
        shard.status = status
        if result is not None:
            shard.result = copy.deepcopy(result)
        if error_message is not None:
            shard.error_message = error_message
        shard.update_time = stamp
        aggregate = table_aggregate(s.status for s in self.shards[task_id].values())
        kept = task.status in FINISHED and aggregate not in FINISHED
        self._settle(task_id, False, stamp, always_stamp=True)
        RULES_RUN[f"{name}: {'finished task kept' if kept else 'applied'}"] += 1
        assert outcome == ShardUpdate(True, status, task.status)

    @precondition(
        lambda self: any(
            s.status not in FINISHED for t in self.live for s in self.shards.get(t, {}).values()
        )
    )
    @rule(data=st.data(), status=statuses)
    def poll_an_unfinished_shard(self, data: st.DataObject, status: TaskStatus) -> None:
        """A poller's report on a shard still running (the common case of update_shard)."""
        task_id, index = data.draw(
            st.sampled_from(
                sorted(
                    (t, i)
                    for t in self.live
                    for i, s in self.shards.get(t, {}).items()
                    if s.status not in FINISHED
                )
            )
        )
        self._poll("poll", task_id, index, status, None, None)

    # -- rules: deletes, archive ----------------------------------------------------------

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, self.live)
        existed = self.live.pop(task_id, None) is not None
        self.shards.pop(task_id, None)
        RULES_RUN[f"delete: existed={existed}"] += 1
        assert self.store.delete(task_id) is existed

    @precondition(lambda self: any(self.shards.values()))
    @rule(data=st.data())
    def delete_shards(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, (t for t, shards in self.shards.items() if shards))
        expected = len(self.shards.pop(task_id, {}))
        RULES_RUN["delete_shards"] += 1
        assert self.store.delete_shards(task_id) == expected

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        task_id = self._pick_task_id(data, self.live)
        task = self.live.get(task_id)
        if task is None:
            RULES_RUN["archive: missing"] += 1
            assert self.store.archive(task_id) is False
            return
        RULES_RUN[f"archive: {'finished' if task.status in FINISHED else 'unfinished'}"] += 1
        before = utc_now()
        assert self.store.archive(task_id) is True
        after = utc_now()
        stamped = self.store.get_archived(task_id)
        assert stamped is not None
        assert stamped.archived_at is not None
        assert before <= stamped.archived_at <= after
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
            RULES_RUN["restore: not archived"] += 1
            assert self.store.restore(task_id) is False
            return
        if task_id in self.live:
            RULES_RUN["restore: TaskStateError"] += 1
            with pytest.raises(TaskStateError):
                self.store.restore(task_id)
            return
        RULES_RUN["restore: restored"] += 1
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
        RULES_RUN["delete_archived"] += 1
        assert self.store.delete_archived(task_id) is existed

    @precondition(lambda self: any(task.status in FINISHED for task in self.live.values()))
    @rule(chosen=st.sets(st.sampled_from(sorted(FINISHED))))
    def clear_completed(self, chosen: set[TaskStatus]) -> None:
        doomed = [task_id for task_id, task in self.live.items() if task.status in chosen]
        for task_id in doomed:
            del self.live[task_id]
            self.shards.pop(task_id, None)
        RULES_RUN["clear_completed"] += 1
        assert self.store.clear_completed(chosen) == len(doomed)

    # -- rules: reads with arguments ------------------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(
        wanted=st.none() | st.sets(statuses, min_size=1),
        limit=st.none() | st.integers(0, 4),
        offset=st.none() | st.integers(0, 4),
        include_results=st.booleans(),
    )
    def list_filtered(
        self,
        wanted: set[TaskStatus] | None,
        limit: int | None,
        offset: int | None,
        include_results: bool,
    ) -> None:
        matching = newest_first(t for t in self.live.values() if not wanted or t.status in wanted)
        start = offset or 0
        expected = matching[start : None if limit is None else start + limit]
        if not include_results:
            expected = [replace(task, result=None) for task in expected]
        paged = bool(limit is not None or offset)
        RULES_RUN[f"list: status filter={wanted is not None}, limit/offset={paged}"] += 1
        self._agrees(
            True,
            ("list", tuple(sorted(wanted or ())), limit, offset, include_results),
            expected,
            partial(
                self.store.list,
                status=sorted(wanted) if wanted else None,
                limit=limit,
                offset=offset,
                include_results=include_results,
            ),
        )

    @precondition(lambda self: bool(self.live))
    @rule(wanted=st.none() | st.sampled_from(list(TaskStatus)), limit=st.integers(1, 3))
    def walk_list_page(self, wanted: TaskStatus | None, limit: int) -> None:
        expected = newest_first(t for t in self.live.values() if wanted in (None, t.status))
        pages: list[list[TaskInfo]] = []
        after: tuple[str, str] | None = None
        while True:
            page = self.store.list_page(status=wanted, limit=limit, after=after)
            assert len(page.tasks) <= limit
            pages.append(page.tasks)
            if page.next_after is None:
                break
            assert len(pages) <= len(expected) + 1, "list_page does not end"
            after = page.next_after
        RULES_RUN[f"list_page: {len(pages)} page(s)"] += 1
        walked = [task for page in pages for task in page]
        self._agrees(
            True,
            ("list_page", wanted, limit),
            [replace(task, result=None) for task in expected],
            lambda: walked,
        )

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
            matching = [task for task in self.live.values() if task.status == status]
            self._agrees(
                sweep,
                ("count_by_status", status),
                len(matching),
                partial(store.count, status=status),
            )
            self._agrees(
                sweep,
                ("list_by_status", status),
                newest_first(matching),
                partial(store.list, status=status),
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
        """The store's answer to ``ask()`` equals the model's answer to ``read``; each
        ``update_time`` is its write's one instant, inside that write's window."""
        expected = self._snapshot(model_answer)
        if not sweep and read in self.verified and self.verified[read] == expected:
            return
        answer = ask()
        self._match_stamps(model_answer, answer, read)
        assert self._snapshot(answer) == expected, read
        self.verified[read] = expected

    def _match_stamps(self, model: Any, stored: Any, read: tuple[Any, ...]) -> None:
        if isinstance(model, list) and isinstance(stored, list) and len(model) == len(stored):
            for model_item, stored_item in zip(model, stored, strict=True):
                self._match_stamps(model_item, stored_item, read)
        elif isinstance(model, TaskInfo | TaskShard) and type(stored) is type(model):
            self._check_stamp(model.update_time, stored.update_time, read)

    def _snapshot(self, value: Any) -> Any:
        """A read's answer, comparable with ``==``: tasks and shards as canonical dicts,
        without ``update_time`` (which :meth:`_match_stamps` checks)."""
        if isinstance(value, TaskInfo | TaskShard):
            return canon(value.to_dict() | {"update_time": None})
        if isinstance(value, list):
            return [self._snapshot(item) for item in value]
        return value

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


def _of(draft: TaskShard, task_id: str) -> TaskShard:
    return replace(draft, uniqc_task_id=task_id)


def _offset(shard: TaskShard) -> int:
    return shard.sub_index_offset


def test_every_read_matches_the_model_after_random_writes(
    store: TaskStore, backend_kind: str
) -> None:
    class BoundToThisStore(StoreAgainstModel):
        def __init__(self) -> None:
            super().__init__(store)

    examples = EXAMPLES or (25 if backend_kind == "sqlite" else 12)
    run_settings = settings(max_examples=examples, stateful_step_count=STEPS, deadline=None)
    before = RULES_RUN.copy()
    run_state_machine_as_test(BoundToThisStore, settings=run_settings)
    ran = RULES_RUN - before
    print(f"\n[stateful, {backend_kind}] {examples} runs of up to {STEPS} steps; rules run:")
    for name in sorted(ran):
        print(f"  {name}: {ran[name]}")
