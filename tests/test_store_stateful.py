"""Random sequences of writes leave the store agreeing with a plain in-memory model.

A hypothesis state machine drives a real ``TaskStore`` on every backend with saves
(one task or several, with and without shards, with names and tags), shard saves and
polls, deletes, archiving, restoring and clearing, tag and metadata edits,
``finalize``, bulk calls (``archive_many``, ``restore_many``, ``delete_many``) and
retention (``archive_older_than``, ``purge_archived``), over a small pool of ids so
that writes collide. The model is a specification written from the README ("Finding,
counting and tidying tasks", "Statuses, results and errors" and the API docstrings),
not from the store's code: the aggregate comes from the README's table, and
``update_time`` is checked to be one instant inside the window of the write that
stamped it, never copied from the store. After every step the store's reads (get,
shards, archive, list and list_page with filters, limits and offsets, count,
count_by, summaries, platform-id lookups) are compared with it.

Retention ages are drawn relative to the instants the model knows: the cutoff is put
just after one of them (or before all), and a task is only expected on either side
when its time window lies wholly on that side of every cutoff the call could have
used (the store reads the clock itself); the rare task inside that band may go
either way, and the model learns from the store which it did.

Where the documents are silent the model asks what a change feed needs: a tag or
metadata edit that changes something stamps ``update_time`` (one that changes nothing
may or may not); a legacy ``metadata["task_name"]`` names the task only if it is a
non-blank string; ``update_metadata`` leaves the name alone; ``finalize`` leaves the
status alone and raises what ``assemble_results`` raises for a bad layout.

``UNIQC_STATEFUL_EXAMPLES`` and ``UNIQC_STATEFUL_STEPS`` raise the budget (``nox -s
nightly``); each run prints how often every rule ran, by outcome.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any, Literal

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
from sqlalchemy import Engine, func, select

from conftest import RawDatabase
from uniqc_taskstore import (
    BulkResult,
    RetentionResult,
    ShardLayoutError,
    ShardNotFoundError,
    ShardUpdate,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    TaskSummary,
    assemble_results,
)
from uniqc_taskstore.schema import archived_task_shards, archived_task_tags, task_shards, task_tags
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
    "2026-06-01T12:00:00",  # naive: UTC
]
ERROR_MESSAGES = [None, "boom", "timed out", "ünïcode ✓"]
NAMES = ["bell", "Bell", "ghz ✓"]
LEGACY_NAMES: list[object] = ["bell", "qft", "", "  ", 7, None]
"""Values of ``metadata["task_name"]``, as the original's callers wrote it."""
TAG_KEYS = ["team", "run", "Team"]
TAG_VALUES = ["qec", "7", ""]
COUNT_FIELDS: list[Literal["status", "backend", "platform"]] = ["status", "backend", "platform"]
MISSING_ID = "uqt_" + "0" * 32
"""Never saved: bulk calls name it to see it reported missing."""
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
metadata_with_legacy_names = st.builds(
    lambda metadata, legacy: metadata | legacy,
    metadata_values,
    st.just({}) | st.sampled_from(LEGACY_NAMES).map(lambda name: {"task_name": name}),
)
tag_sets = st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES), max_size=3)
tag_filters = st.dictionaries(
    st.sampled_from(TAG_KEYS), st.none() | st.sampled_from(TAG_VALUES), min_size=1, max_size=2
)
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
    metadata=metadata_with_legacy_names,
    error_message=st.sampled_from(ERROR_MESSAGES),
    name=st.none() | st.sampled_from(NAMES),
    tags=tag_sets,
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
    """README: aware UTC ISO-8601 with microseconds; naive input means UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def overlap(a: TaskShard, b: TaskShard) -> bool:
    return (
        a.sub_index_offset < b.sub_index_offset + b.circuit_count
        and b.sub_index_offset < a.sub_index_offset + a.circuit_count
    )


def backend_matches(backend: str, family: str) -> bool:
    return backend == family or backend.startswith(family + ":")


def name_on_save(task: TaskInfo) -> str | None:
    """README: a task saved with ``name=None`` and a string ``metadata["task_name"]``
    gets that name (when it is usable as a name: names are non-blank ids)."""
    if task.name is not None:
        return task.name
    legacy = task.metadata.get("task_name")
    return legacy if isinstance(legacy, str) and legacy.strip() else None


def tags_match(task: TaskInfo, wanted: dict[str, str | None]) -> bool:
    """README: every ``key: value`` pair; a value of None only needs the key."""
    return all(
        key in task.tags and (value is None or task.tags[key] == value)
        for key, value in wanted.items()
    )


def platform_of(backend: str) -> str:
    return backend.split(":", 1)[0]


def tally(values: Iterable[str]) -> dict[str, int]:
    """Counts per value; values with no task are absent (as ``count_by`` documents)."""
    return dict(Counter(values))


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
    """One write's ``update_time``: unknown until read, but inside [earliest, latest].

    A write that changed nothing (tags set to the values they had, keys removed that
    were absent) may leave the old stamp (``previous``) or stamp its own instant."""

    earliest: str
    latest: str
    seen: str | None = None
    previous: str | None = None


TICK = timedelta(microseconds=2)
"""Slack for a cutoff given as float seconds (rounded to microseconds by the store)."""


@dataclass
class CutoffDraw:
    """A retention cutoff put just after a known instant (or before all of them)."""

    target: datetime
    drawn_at: datetime
    as_seconds: bool

    @property
    def age(self) -> timedelta | float:
        age = self.drawn_at - self.target
        return age.total_seconds() if self.as_seconds else age

    def split(
        self, windows: dict[str, tuple[str, str]], finished_at: datetime
    ) -> tuple[set[str], set[str]]:
        """(ids surely older than every cutoff the call could have used, ids it may or
        may not have counted): the store's clock read lies in [drawn_at, finished_at]."""
        lowest = self.target - TICK
        highest = self.target + (finished_at - self.drawn_at) + TICK
        older = {key for key, (_, end) in windows.items() if _moment(end) < lowest}
        unsure = {
            key
            for key, (start, end) in windows.items()
            if key not in older and _moment(start) < highest
        }
        return older, unsure


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def cutoff_targets(windows: Iterable[tuple[str, str]], now: datetime) -> list[datetime]:
    """Cutoffs a little after each window's end (outside every window), or a day
    before them all; none later than ``now`` (an age is never negative)."""
    spans = [(_moment(start), _moment(end)) for start, end in windows]
    first = min((start for start, _ in spans), default=now)
    targets = {min(first, now) - timedelta(days=1)}  # before them all
    targets |= {end + 3 * TICK for _, end in spans}
    return sorted(
        target
        for target in targets
        if target <= now
        and not any(start - 2 * TICK <= target <= end + 2 * TICK for start, end in spans)
    )


# -- the machine ---------------------------------------------------------------------------


class StoreAgainstModel(RuleBasedStateMachine):
    """One run: an emptied store and an empty model, then random rules."""

    def __init__(self, store: TaskStore, raw: Engine) -> None:
        super().__init__()
        self.store = store
        self.raw = raw
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

    def _write(self, call: Callable[[], Any], may_keep: str | None = None) -> tuple[Any, str]:
        """Run a write; return its answer and the key of the stamp it may have set
        (``may_keep``: the stamp a write that changed nothing may leave instead)."""
        earliest = utc_now()
        answer = call()
        key = f"stamp-{len(self.stamps)}"
        self.stamps[key] = Stamp(earliest, utc_now(), previous=may_keep)
        return answer, key

    def _check_stamp(self, key: str, stored: str, read: tuple[Any, ...]) -> None:
        stamp = self.stamps[key]
        if stamp.seen is None:
            assert self._could_be(key, stored), (read, key, stored, stamp)
            stamp.seen = stored
        assert stored == stamp.seen, (read, "one write, one instant", stored, stamp)

    def _could_be(self, key: str, stored: str) -> bool:
        stamp = self.stamps[key]
        if stamp.seen is not None:
            return stored == stamp.seen
        if stamp.earliest <= stored <= stamp.latest:
            return True
        return stamp.previous is not None and self._could_be(stamp.previous, stored)

    def _window(self, key: str) -> tuple[str, str]:
        """Where a stamp's one instant can lie."""
        stamp = self.stamps[key]
        if stamp.seen is not None:
            return stamp.seen, stamp.seen
        if stamp.previous is None:
            return stamp.earliest, stamp.latest
        return self._window(stamp.previous)[0], stamp.latest

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
        new.name = name_on_save(task)  # the object's tags are the stored tags now
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
        if task_id in self.archived:  # a twin: the archived task is never replaced
            RULES_RUN["archive: TaskStateError (already archived)"] += 1
            with pytest.raises(TaskStateError):
                self.store.archive(task_id)
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

    # -- rules: tags and edits --------------------------------------------------------------

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), pairs=tag_sets)
    def set_tags(self, data: st.DataObject, pairs: dict[str, str]) -> None:
        task_id = self._pick_task_id(data, self.live)
        call = partial(self.store.set_tags, task_id, pairs)
        task = self.live.get(task_id)
        if task is None:
            RULES_RUN["set_tags: TaskNotFoundError"] += 1
            with pytest.raises(TaskNotFoundError):
                call()
            return
        after = task.tags | pairs
        changed = after != task.tags
        RULES_RUN[f"set_tags: {'changed' if changed else 'no change'}"] += 1
        answer, stamp = self._write(call, None if changed else task.update_time)
        task.tags, task.update_time = after, stamp
        assert answer == after

    @precondition(lambda self: any(task.tags for task in self.live.values()))
    @rule(data=st.data(), keys=st.lists(st.sampled_from([*TAG_KEYS, "absent"]), max_size=3))
    def remove_tags(self, data: st.DataObject, keys: list[str]) -> None:
        task_id = self._pick_task_id(data, (t for t, task in self.live.items() if task.tags))
        call = partial(self.store.remove_tags, task_id, keys)
        task = self.live.get(task_id)
        if task is None:
            RULES_RUN["remove_tags: TaskNotFoundError"] += 1
            with pytest.raises(TaskNotFoundError):
                call()
            return
        after = {key: value for key, value in task.tags.items() if key not in keys}
        changed = after != task.tags
        RULES_RUN[f"remove_tags: {'changed' if changed else 'no change'}"] += 1
        answer, stamp = self._write(call, None if changed else task.update_time)
        task.tags, task.update_time = after, stamp
        assert answer == after

    @precondition(lambda self: bool(self.live))
    @rule(
        data=st.data(),
        patch=metadata_with_legacy_names,
        remove=st.lists(st.text(max_size=4) | st.just("task_name"), max_size=2),
    )
    def update_metadata(
        self, data: st.DataObject, patch: dict[str, Any], remove: list[str]
    ) -> None:
        """Docstring: merge ``patch`` and drop ``remove``; the name is the task's own
        column, set by ``save`` only, so a patched ``task_name`` leaves it alone."""
        task_id = self._pick_task_id(data, self.live)
        call = partial(self.store.update_metadata, task_id, patch, remove)
        task = self.live.get(task_id)
        if task is None:
            RULES_RUN["update_metadata: TaskNotFoundError"] += 1
            with pytest.raises(TaskNotFoundError):
                call()
            return
        merged = {**task.metadata, **copy.deepcopy(patch)}
        for key in remove:
            merged.pop(key, None)
        changed = canon(merged) != canon(task.metadata)
        RULES_RUN[f"update_metadata: {'changed' if changed else 'no change'}"] += 1
        answer, stamp = self._write(call, None if changed else task.update_time)
        task.metadata, task.update_time = merged, stamp
        assert canon(answer) == canon(merged)

    @rule(
        task=tasks_to_save,
        counts=st.lists(st.integers(1, 3), min_size=1, max_size=3),
        data=st.data(),
    )
    def save_a_finished_batch(self, task: TaskInfo, counts: list[int], data: st.DataObject) -> None:
        """A task whose shards cover its circuits with no gap and have all finished,
        with results of the right shape or none: what ``finalize`` assembles."""
        shards, offset = [], 0
        for index, count in enumerate(counts):
            one = st.one_of(json_scalars, json_scalars.map(lambda x: [x]))
            result = data.draw(
                st.none()
                | (one if count == 1 else st.lists(json_scalars, min_size=count, max_size=count))
            )
            shards.append(
                TaskShard(
                    task.task_id,
                    index,
                    data.draw(st.sampled_from(PLATFORM_IDS)),
                    task.backend,
                    count,
                    offset,
                    data.draw(st.sampled_from(sorted(FINISHED))),
                    result,
                    data.draw(st.sampled_from(ERROR_MESSAGES)),
                    SUBMIT_TIMES[0],
                )
            )
            offset += count
        self._save_many("save a finished batch", [task], shards)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        """Docstring: once every shard is final, the assembled per-circuit results (None
        for shards without one) become the task's result and the shards' errors its
        error message; TaskStateError while a shard runs or when there is none."""
        ready = [
            task_id
            for task_id in self.live
            if self.shards.get(task_id)
            and all(s.status in FINISHED for s in self.shards[task_id].values())
        ]
        task_id = self._pick_task_id(data, ready or self.live)
        call = partial(self.store.finalize, task_id)
        task = self.live.get(task_id)
        shards = [s for _, s in sorted(self.shards.get(task_id, {}).items())]
        expected_error: type[TaskStoreError] | None = None
        assembled: Any = None
        if task is None:
            expected_error = TaskNotFoundError
        elif not shards or any(s.status not in FINISHED for s in shards):
            expected_error = TaskStateError
        else:
            try:
                assembled = assemble_results(copy.deepcopy(shards), allow_missing=True)
            except TaskStoreError as exc:
                expected_error = type(exc)
        if expected_error is not None:
            RULES_RUN[f"finalize: {expected_error.__name__}"] += 1
            with pytest.raises(expected_error):
                call()
            return
        assert task is not None
        RULES_RUN["finalize: finalized"] += 1
        answer, stamp = self._write(call)
        errors = [f"shard {s.shard_index}: {s.error_message}" for s in shards if s.error_message]
        task.result, task.update_time = assembled, stamp
        if errors:
            task.error_message = "; ".join(errors)
        self._check_stamp(stamp, answer.update_time, ("finalize",))
        assert self._snapshot(answer) == self._snapshot(task)

    # -- rules: bulk and retention -----------------------------------------------------------

    @precondition(lambda self: bool(self.live or self.archived))
    @rule(
        action=st.sampled_from(["archive_many", "restore_many", "delete_many", "delete_archived"]),
        data=st.data(),
    )
    def bulk(self, action: str, data: st.DataObject) -> None:
        """Docstrings: each id once, in the order given; ``archive_many`` archives live
        tasks of any status and refuses one archived (also when live too);
        ``restore_many`` refuses an id that is also live; ``delete_many`` deletes what is
        there; the rest are missing."""
        live, archived = set(self.live), set(self.archived)
        pools = {  # the ids that make each outcome, so that all of them are seen
            "archive_many": [live - archived, archived - live, live & archived],
            "restore_many": [archived - live, archived & live],
            "delete_many": [live],
            "delete_archived": [archived],
        }[action]
        some_id = st.sampled_from([*TASK_IDS, MISSING_ID])
        for pool in filter(None, pools):
            some_id |= st.sampled_from(sorted(pool))
        ids = data.draw(st.lists(some_id, max_size=6))
        done: list[str] = []
        missing: list[str] = []
        refused: list[str] = []
        for task_id in dict.fromkeys(ids):
            is_live, is_archived = task_id in self.live, task_id in self.archived
            if action == "archive_many":
                there, refuse = is_live and not is_archived, is_archived
            elif action == "restore_many":
                there, refuse = is_archived and not is_live, is_archived
            else:
                there, refuse = (is_archived if action == "delete_archived" else is_live), False
            (done if there else refused if refuse else missing).append(task_id)
        calls: dict[str, Callable[[list[str]], BulkResult]] = {
            "archive_many": self.store.archive_many,
            "restore_many": self.store.restore_many,
            "delete_many": self.store.delete_many,
            "delete_archived": partial(self.store.delete_many, archived=True),
        }
        call = calls[action]
        before = utc_now()
        outcome = call(ids)
        after = utc_now()
        shape = "/".join(str(len(part)) for part in (done, missing, refused))
        RULES_RUN[f"{action}: done/missing/refused {shape}"] += 1
        assert isinstance(outcome, BulkResult)
        assert (outcome.done, outcome.missing) == (done, missing), (action, ids)
        assert [task_id for task_id, _ in outcome.refused] == refused, (action, ids)
        assert all(isinstance(why, str) and why for _, why in outcome.refused)
        if action == "archive_many":
            self._archived_by_store(done, before, after)
        elif action == "restore_many":
            for task_id in done:
                self.live[task_id] = replace(self.archived.pop(task_id), archived_at=None)
                self.shards[task_id] = self.archived_shards.pop(task_id, {})
        elif action == "delete_many":
            for task_id in done:
                del self.live[task_id]
                self.shards.pop(task_id, None)
        else:
            for task_id in done:
                del self.archived[task_id]
                self.archived_shards.pop(task_id, None)

    def _archived_by_store(self, task_ids: Iterable[str], before: str, after: str) -> None:
        """Move these live tasks to the archive in the model, with the ``archived_at``
        the store gave them (one read), checked to lie inside the call."""
        task_ids = list(task_ids)
        if not task_ids:
            return
        stamped = {task.task_id: task.archived_at for task in self.store.list_archived()}
        for task_id in task_ids:
            archived_at = stamped[task_id]
            assert archived_at is not None
            assert before <= archived_at <= after, (task_id, archived_at, before, after)
            self.archived[task_id] = replace(self.live.pop(task_id), archived_at=archived_at)
            self.archived_shards[task_id] = self.shards.pop(task_id, {})

    @precondition(lambda self: bool(self.live))
    @rule(
        data=st.data(),
        by=st.sampled_from(["update_time", "submit_time"]),
        chosen=st.none() | st.just("default") | st.sets(statuses),
        family=st.none() | st.sampled_from(BACKEND_FILTERS),
        wanted_tags=st.none() | tag_filters,
        dry_run=st.booleans(),
        as_seconds=st.booleans(),
    )
    def archive_older_than(
        self,
        data: st.DataObject,
        by: str,
        chosen: str | set[TaskStatus] | None,
        family: str | None,
        wanted_tags: dict[str, str | None] | None,
        dry_run: bool,
        as_seconds: bool,
    ) -> None:
        """Docstring: archive tasks in ``statuses`` (default: finished; None: any)
        matching the filter whose ``by`` time is more than ``age`` ago."""
        wanted = FINISHED if chosen == "default" else chosen
        candidates = {
            task_id: task
            for task_id, task in self.live.items()
            if task_id not in self.archived  # a twin stays live: listed in refused
            and (wanted is None or task.status in wanted)
            and (family is None or backend_matches(task.backend, family))
            and (wanted_tags is None or tags_match(task, wanted_tags))
        }
        windows = {
            task_id: (
                self._window(task.update_time)
                if by == "update_time"
                else (task.submit_time, task.submit_time)
            )
            for task_id, task in candidates.items()
        }
        draw = self._draw_cutoff(data, windows.values(), as_seconds)
        kwargs: dict[str, Any] = {"by": by, "dry_run": dry_run}
        if chosen != "default":
            kwargs["statuses"] = None if chosen is None else sorted(chosen)
        if family is not None:
            kwargs["backend"] = family
        if wanted_tags is not None:
            kwargs["tags"] = wanted_tags
        before = utc_now()
        outcome = self.store.archive_older_than(draw.age, **kwargs)
        after = utc_now()
        older, unsure = draw.split(windows, datetime.now(UTC))
        assert set(outcome.refused) <= set(self.live) & set(self.archived)
        gone = self._check_retention("archive_older_than", outcome, older, unsure, dry_run)
        if not dry_run:
            self._archived_by_store(sorted(gone), before, after)

    @precondition(lambda self: bool(self.archived))
    @rule(
        data=st.data(),
        family=st.none() | st.sampled_from(BACKEND_FILTERS),
        wanted_tags=st.none() | tag_filters,
        dry_run=st.booleans(),
        as_seconds=st.booleans(),
    )
    def purge_archived(
        self,
        data: st.DataObject,
        family: str | None,
        wanted_tags: dict[str, str | None] | None,
        dry_run: bool,
        as_seconds: bool,
    ) -> None:
        """Docstring: delete the archived tasks matching the filter that were archived
        more than ``older_than`` ago, with their shards and tags."""
        windows: dict[str, tuple[str, str]] = {}
        for task_id, task in self.archived.items():
            if (family is None or backend_matches(task.backend, family)) and (
                wanted_tags is None or tags_match(task, wanted_tags)
            ):
                assert task.archived_at is not None
                windows[task_id] = (task.archived_at, task.archived_at)
        draw = self._draw_cutoff(data, windows.values(), as_seconds)
        kwargs: dict[str, Any] = {"backend": family, "tags": wanted_tags}
        outcome = self.store.purge_archived(older_than=draw.age, dry_run=dry_run, **kwargs)
        older, unsure = draw.split(windows, datetime.now(UTC))
        gone = self._check_retention("purge_archived", outcome, older, unsure, dry_run)
        if not dry_run:
            for task_id in gone:
                del self.archived[task_id]
                self.archived_shards.pop(task_id, None)

    def _draw_cutoff(
        self, data: st.DataObject, windows: Iterable[tuple[str, str]], as_seconds: bool
    ) -> CutoffDraw:
        now = datetime.now(UTC)
        target = data.draw(st.sampled_from(cutoff_targets(windows, now)))
        return CutoffDraw(target, datetime.now(UTC), as_seconds)

    def _check_retention(
        self,
        name: str,
        outcome: RetentionResult,
        older: set[str],
        unsure: set[str],
        dry_run: bool,
    ) -> set[str]:
        """Check a retention answer against the ids surely older than the cutoff and
        the ones that may have been counted; return the ids it acted on (or would)."""
        assert isinstance(outcome, RetentionResult)
        assert outcome.dry_run is dry_run
        if dry_run:
            chosen = set(outcome.task_ids)
            assert len(outcome.task_ids) == len(chosen) == outcome.count
        else:
            assert outcome.task_ids == []
            chosen = older | {t for t in unsure if self._gone_from_store(name, t)}
        assert older <= chosen <= older | unsure, (name, older, unsure, outcome)
        assert outcome.count == len(chosen), (name, older, unsure, outcome)
        decided = "decided" if not unsure else "near the cutoff"
        RULES_RUN[f"{name}: dry_run={dry_run}, {len(chosen)} task(s), {decided}"] += 1
        return chosen

    def _gone_from_store(self, name: str, task_id: str) -> bool:
        """Whether the store acted on a task whose time was too near the cutoff to say."""
        if name == "purge_archived":
            return self.store.get_archived(task_id) is None
        return self.store.get(task_id) is None

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

    @precondition(lambda self: bool(self.live or self.archived))
    @rule(
        wanted=st.none() | tag_filters,
        name=st.none() | st.sampled_from(NAMES),
        archived=st.booleans(),
    )
    def list_by_tags_and_name(
        self, wanted: dict[str, str | None] | None, name: str | None, archived: bool
    ) -> None:
        """README: a tag filter needs every pair (None: only the key); ``name`` this
        exact name; the archive takes the same filter."""
        held = self.archived if archived else self.live
        matching = newest_first(
            task
            for task in held.values()
            if (wanted is None or tags_match(task, wanted)) and name in (None, task.name)
        )
        criteria: dict[str, Any] = {"tags": wanted, "name": name}
        lister = self.store.list_archived if archived else self.store.list
        counter = self.store.count_archived if archived else self.store.count
        read = ("tags and name", tuple(sorted((wanted or {}).items())), name, archived)
        self._agrees(True, ("list", *read), matching, partial(lister, **criteria))
        self._agrees(True, ("count", *read), len(matching), partial(counter, **criteria))
        self._agrees(
            True,
            ("count_by platform", *read),
            tally(platform_of(task.backend) for task in matching),
            partial(self.store.count_by, "platform", archived=archived, **criteria),
        )
        self._agrees(
            True,
            ("summaries", *read),
            [self._summary(task) for task in matching],
            partial(self.store.summaries, archived=archived, **criteria),
        )
        RULES_RUN[f"list by tags/name: archived={archived}, {len(matching)} match(es)"] += 1

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
        if sweep:  # README: one row per tag; tags and shards go with their task
            self._agrees(True, ("rows",), self._model_rows(), self._stored_rows)
        for archived, held in ((False, self.live), (True, self.archived)):
            per_field = {
                "status": tally(task.status.value for task in held.values()),
                "backend": tally(task.backend for task in held.values()),
                "platform": tally(platform_of(task.backend) for task in held.values()),
            }
            for field in COUNT_FIELDS:
                self._agrees(
                    sweep,
                    ("count_by", field, archived),
                    per_field[field],
                    partial(store.count_by, field, archived=archived),
                )
            self._agrees(
                sweep,
                ("summaries", archived),
                [self._summary(task) for task in newest_first(held.values())],
                partial(store.summaries, archived=archived),
            )
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
        elif isinstance(model, TaskInfo | TaskShard | TaskSummary) and type(stored) is type(model):
            self._check_stamp(model.update_time, stored.update_time, read)

    def _snapshot(self, value: Any) -> Any:
        """A read's answer, comparable with ``==``: tasks, shards and summaries as
        canonical dicts, without ``update_time`` (which :meth:`_match_stamps` checks)."""
        if isinstance(value, TaskInfo | TaskShard):
            return canon(value.to_dict() | {"update_time": None})
        if isinstance(value, TaskSummary):
            return canon(asdict(value) | {"update_time": None})
        if isinstance(value, list):
            return [self._snapshot(item) for item in value]
        return value

    def _model_rows(self) -> dict[str, int]:
        return {
            "task_tags": sum(len(task.tags) for task in self.live.values()),
            "archived_task_tags": sum(len(task.tags) for task in self.archived.values()),
            "task_shards": sum(map(len, self.shards.values())),
            "archived_task_shards": sum(map(len, self.archived_shards.values())),
        }

    def _stored_rows(self) -> dict[str, int]:
        """Rows per child table, read through an engine of the test's own: rows left
        behind by a delete would be invisible to every public read."""
        tables = (task_tags, archived_task_tags, task_shards, archived_task_shards)
        with self.raw.connect() as conn:
            return {
                table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in tables
            }

    def _summary(self, task: TaskInfo) -> TaskSummary:
        """What ``summaries`` documents for a task: its list-view fields, its number of
        platform jobs, and whether the task itself holds a result."""
        shards = (self.archived_shards if task.archived_at else self.shards).get(task.task_id)
        return TaskSummary(
            task_id=task.task_id,
            name=task.name,
            backend=task.backend,
            status=task.status,
            shots=task.shots,
            submit_time=task.submit_time,
            update_time=task.update_time,
            tags=dict(task.tags),
            shard_count=len(shards or {}),
            has_result=task.result is not None,
            error_message=task.error_message,
            archived_at=task.archived_at,
        )

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
    store: TaskStore, raw_database: RawDatabase, backend_kind: str
) -> None:
    class BoundToThisStore(StoreAgainstModel):
        def __init__(self) -> None:
            super().__init__(store, raw_database.engine)

    examples = EXAMPLES or (25 if backend_kind == "sqlite" else 12)
    run_settings = settings(max_examples=examples, stateful_step_count=STEPS, deadline=None)
    before = RULES_RUN.copy()
    run_state_machine_as_test(BoundToThisStore, settings=run_settings)
    ran = RULES_RUN - before
    print(f"\n[stateful, {backend_kind}] {examples} runs of up to {STEPS} steps; rules run:")
    for name in sorted(ran):
        print(f"  {name}: {ran[name]}")
