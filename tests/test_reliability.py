"""Nothing lost: concurrent writers, crashes, racing pollers and bad input.

Each test measures and prints a figure and asserts the target for it (0 errors,
0 writes lost, 0 status regressions, 0 integrity failures). Slow by design; run with

    .venv/bin/pytest -m reliability -s tests/test_reliability.py

(with ``UNIQC_TEST_POSTGRESQL_URL`` / ``UNIQC_TEST_MYSQL_URL`` set for the server races).
Worker processes live in ``tests/reliability_workers.py``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from reliability_workers import (
    LEGACY_UQT_TASKS,
    Location,
    build_legacy_v4,
    copy_database,
    count_regressions,
    crash_writer,
    crashed_writer_problems,
    integrity_problems,
    legacy_state_problems,
    migration_opener,
    mixed_writer,
    plain_sqlite,
    racing_poller,
    read_acks,
    task_problems,
)
from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    ShardNotFoundError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    UnserializableValueError,
    aggregate_status,
    generate_uniqc_task_id,
)

pytestmark = pytest.mark.reliability

SPAWN = multiprocessing.get_context("spawn")
FORK = multiprocessing.get_context("fork")
"""Crash children are forked: they start writing at once, without re-importing."""
CHILD_TIMEOUT_SECONDS = 240.0


def _run_children(target: Callable[..., None], argument_lists: Sequence[tuple[Any, ...]]) -> None:
    """Run one spawned process per argument tuple and wait for all of them."""
    processes = [SPAWN.Process(target=target, args=args) for args in argument_lists]
    for process in processes:
        process.start()
    for process in processes:
        process.join(CHILD_TIMEOUT_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
    codes = [process.exitcode for process in processes]
    assert codes == [0] * len(processes), f"worker exit codes {codes}"


def _read_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in paths]


# -- 1. many processes, one SQLite file ------------------------------------------------------

WRITERS = 8
OPERATIONS_PER_WRITER = 1_000


def test_concurrent_writers_lose_nothing_and_surface_no_errors(tmp_path: Path) -> None:
    location: Location = {"cache_dir": str(tmp_path / "cache")}
    outs = [tmp_path / f"writer-{n}.json" for n in range(WRITERS)]
    barrier = SPAWN.Barrier(WRITERS)
    _run_children(
        mixed_writer,
        [
            (location, n, OPERATIONS_PER_WRITER, 1000 + n, barrier, str(out))
            for n, out in enumerate(outs)
        ],
    )
    results = _read_results(outs)
    errors = [e for r in results for e in r["errors"]]
    read_mismatches = [m for r in results for m in r["mismatches"]]
    done: Counter[str] = Counter()
    for r in results:
        done.update(r["done"])

    lost: list[str] = []
    checked = 0
    with TaskStore(tmp_path / "cache") as store:
        live = archived = 0
        for r in results:
            uncertain = set(r["uncertain"])
            for task_id, expected in r["expected"].items():
                if task_id in uncertain:
                    continue
                checked += 1
                problems = task_problems(store, task_id, expected)
                lost += problems[:1]
                live += expected["where"] == "live"
                archived += expected["where"] == "archived"
        # Only when every call succeeded is each stored task one that a writer acknowledged.
        if not errors and (store.count(), store.count_archived()) != (live, archived):
            lost.append(
                f"store holds {store.count()} live / {store.count_archived()} archived tasks, "
                f"writers acknowledged {live} / {archived}"
            )

    print(
        f"\n[concurrent writers] {WRITERS} processes x {OPERATIONS_PER_WRITER} operations "
        f"({', '.join(f'{k} {v}' for k, v in sorted(done.items()))}); "
        f"{checked} acknowledged task states checked"
    )
    print(f"errors surfaced: {len(errors)}, writes lost: {len(lost)}")
    print(f"read-your-writes mismatches seen by the writers: {len(read_mismatches)}")
    for line in (errors + lost + read_mismatches)[:15]:
        print("  ", line)
    assert sum(done.values()) == WRITERS * OPERATIONS_PER_WRITER
    assert (len(errors), len(lost), len(read_mismatches)) == (0, 0, 0)


# -- 2. kill -9 --------------------------------------------------------------------------------

KILLS = 50
MIGRATION_KILLS = 8
LEGACY_LIVE_ROWS = 500
LEGACY_ARCHIVED_ROWS = 100
"""Small enough that one full legacy migration (a few seconds here) fits the budget."""


def _kill_at_random(
    target: Callable[..., None], args: tuple[Any, ...], ready: Path, delay: float
) -> None:
    """Start ``target`` in a forked child; once it says it is ready, wait ``delay``
    seconds and SIGKILL it."""
    process = FORK.Process(target=target, args=args, daemon=True)
    process.start()
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    while not ready.exists():
        assert process.is_alive(), f"child died before it was ready (exit {process.exitcode})"
        assert time.monotonic() < deadline, "child never became ready"
        time.sleep(0.002)
    time.sleep(delay)
    assert process.is_alive(), f"child stopped on its own (exit {process.exitcode})"
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(30)
    assert process.exitcode == -signal.SIGKILL


def test_kill_9_leaves_a_sound_file_with_every_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(2026)
    integrity: list[str] = []
    missing: list[str] = []
    torn: list[str] = []
    acked = 0

    # Writers killed mid-loop, all on one file that every next child reopens.
    cache = tmp_path / "cache"
    db_path = cache / "tasks.sqlite"
    ack_path = tmp_path / "acks.jsonl"
    writer_kills = KILLS - MIGRATION_KILLS
    for run in range(writer_kills):
        ready = tmp_path / f"ready-{run}"
        delay = rng.uniform(0.05, 0.6)
        _kill_at_random(crash_writer, (str(cache), str(ack_path), str(ready), run), ready, delay)
        acks = read_acks(ack_path)
        acked = len(acks)
        with plain_sqlite(db_path) as conn:
            integrity += [f"writer run {run}: {p}" for p in integrity_problems(conn)]
            run_missing, run_torn = crashed_writer_problems(conn, acks)
        missing += [f"writer run {run}: {p}" for p in run_missing]
        torn += [f"writer run {run}: {p}" for p in run_torn]

    # Kills while a legacy version-4 file is being migrated on open.
    template = build_legacy_v4(tmp_path / "legacy", LEGACY_LIVE_ROWS, LEGACY_ARCHIVED_ROWS)
    measured = copy_database(template, tmp_path / "measure")
    started = time.monotonic()
    TaskStore(measured.parent).close()
    full_open = time.monotonic() - started
    with plain_sqlite(measured) as conn:
        assert legacy_state_problems(conn, LEGACY_LIVE_ROWS, LEGACY_ARCHIVED_ROWS) == []
    versions_at_kill: Counter[int] = Counter()
    for run in range(MIGRATION_KILLS):
        path = copy_database(template, tmp_path / f"migrate-{run}")
        ready = tmp_path / f"migrate-ready-{run}"
        delay = rng.uniform(0.0, 1.1 * full_open)
        _kill_at_random(migration_opener, (str(path.parent), str(ready)), ready, delay)
        with plain_sqlite(path) as conn:
            integrity += [f"migration run {run}: {p}" for p in integrity_problems(conn)]
            versions_at_kill[conn.execute("PRAGMA user_version").fetchone()[0]] += 1
            integrity += [
                f"migration run {run} at kill: {p}"
                for p in legacy_state_problems(conn, LEGACY_LIVE_ROWS, LEGACY_ARCHIVED_ROWS)
            ]
        with TaskStore(path.parent) as store:
            reopened_version = store.schema_version
            live, archived = store.count(), store.count_archived()
        with plain_sqlite(path) as conn:
            after = legacy_state_problems(conn, LEGACY_LIVE_ROWS, LEGACY_ARCHIVED_ROWS)
        if reopened_version != 6 or after:
            missing.append(f"migration run {run} after reopening: v{reopened_version} {after}")
        if (live, archived) != (LEGACY_LIVE_ROWS + LEGACY_UQT_TASKS, LEGACY_ARCHIVED_ROWS):
            missing.append(f"migration run {run}: store counts {live} live, {archived} archived")

    print(
        f"\n[kill -9] {writer_kills} kills of a writer ({acked} acknowledged writes checked "
        f"after the last), {MIGRATION_KILLS} kills while migrating a v4 file of "
        f"{LEGACY_LIVE_ROWS + LEGACY_ARCHIVED_ROWS} legacy rows (full open took "
        f"{full_open:.1f} s; user_version found at kill: {dict(sorted(versions_at_kill.items()))})"
    )
    print(
        f"kills: {KILLS}, integrity failures: {len(integrity)}, "
        f"acknowledged writes missing: {len(missing)}"
    )
    print(f"torn writes (partial task, batch or shard update): {len(torn)}")
    for line in (integrity + missing + torn)[:15]:
        print("  ", line)
    assert acked > 0
    assert (len(integrity), len(missing), len(torn)) == (0, 0, 0)


# -- 3. racing pollers -----------------------------------------------------------------------

POLLERS = 4
LAGS = (0.02, 0.05, 0.3, 0.3)
"""How far behind the platform each poller may report: two of them lag a lot."""
RACE_TASKS = 10
SHARDS_PER_RACE_TASK = 4


def _race_plan(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plan = []
    for _ in range(RACE_TASKS):
        task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
        shards = []
        for index in range(SHARDS_PER_RACE_TASK):
            p = rng.uniform(0.0, 0.5)
            final = rng.choices(["success", "failed", "cancelled"], [85, 10, 5])[0]
            shards.append(
                {
                    "index": index,
                    "platform_task_id": f"race-{task.task_id[4:12]}-{index}",
                    "p": p,
                    "q": rng.uniform(p, 0.8),
                    "final": final,
                }
            )
        plan.append(
            {
                "task_id": task.task_id,
                "backend": task.backend,
                "submit_time": task.submit_time,
                "shards": shards,
            }
        )
    return plan


@pytest.mark.parametrize(
    ("kind", "races"), [("sqlite", 10_000), ("postgresql", 2_000), ("mysql", 2_000)]
)
def test_racing_pollers_never_regress_a_final_status(
    kind: str, races: int, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> None:
    location: Location = (
        {"cache_dir": str(tmp_path / "cache")}
        if kind == "sqlite"
        else {"url": fresh_database_url(kind)}
    )
    plan = _race_plan(seed=races)
    with TaskStore(**location) as store:  # type: ignore[arg-type]
        for task in plan:
            store.save(
                TaskInfo(task["task_id"], task["backend"], submit_time=task["submit_time"]),
                [
                    TaskShard(
                        task["task_id"],
                        s["index"],
                        s["platform_task_id"],
                        task["backend"],
                        sub_index_offset=s["index"],
                    )
                    for s in task["shards"]
                ],
            )
    outs = [tmp_path / f"poller-{n}.json" for n in range(POLLERS)]
    barrier = SPAWN.Barrier(POLLERS)
    _run_children(
        racing_poller,
        [
            (location, n, plan, races // POLLERS, LAGS[n], 7 * n + races, barrier, str(out))
            for n, out in enumerate(outs)
        ],
    )
    results = _read_results(outs)
    errors = [e for r in results for e in r["errors"]]
    regressions, examples = count_regressions([o for r in results for o in r["observations"]])
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])

    wrong_final: list[str] = []
    with TaskStore(**location) as store:  # type: ignore[arg-type]
        for task in plan:
            finals = [s["final"] for s in task["shards"]]
            stored = [s.status.value for s in store.get_shards(task["task_id"])]
            if stored != finals:
                wrong_final.append(f"{task['task_id']}: shards {stored}, platform says {finals}")
            found = store.get(task["task_id"])
            want = aggregate_status(finals)
            if found is None or found.status != want:
                got = found.status.value if found else None
                wrong_final.append(f"{task['task_id']}: task {got}, shards say {want.value}")

    performed = counts["update_shard"] + counts["save_shard"] + counts["save"]
    print(
        f"\n[racing pollers, {kind}] {POLLERS} processes on {RACE_TASKS * SHARDS_PER_RACE_TASK} "
        f"shards: update_shard {counts['update_shard']} (applied {counts['applied']}, refused "
        f"as stale {counts['refused']}), stale save_shard {counts['save_shard']}, stale save "
        f"{counts['save']}; errors surfaced: {len(errors)}; final states wrong: "
        f"{len(wrong_final)}"
    )
    print(f"races: {races}, status regressions: {regressions}")
    for line in (errors + examples + wrong_final)[:15]:
        print("  ", line)
    assert performed + len(errors) == races
    assert (regressions, len(errors), len(wrong_final)) == (0, 0, 0)


def test_late_shard_poll_does_not_reopen_a_cancelled_task(tmp_path: Path) -> None:
    # The user cancels a task while its shard still runs; a poller that read the
    # platform a moment earlier then reports the shard as running.
    with TaskStore(tmp_path) as store:
        task = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180")
        store.save(task, [TaskShard(task.task_id, 0, "job-0", task.backend)])
        store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
        task.status, task.error_message = TaskStatus.CANCELLED, "cancelled by the user"
        store.save(task)
        store.update_shard(task.task_id, 0, status=TaskStatus.RUNNING)
        stored = store.get(task.task_id)
    assert stored is not None
    print(f"\n[cancel then late poll] task status afterwards: {stored.status.value}")
    assert stored.status == TaskStatus.CANCELLED


# -- 4. bad input ------------------------------------------------------------------------------


class _Seeded:
    """A store with content, so that 'unchanged' means something."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        running = TaskInfo(generate_uniqc_task_id(), "originq:WK_C180", metadata={"k": 1})
        store.save(
            running,
            [
                TaskShard(running.task_id, i, f"job-{i}", running.backend, sub_index_offset=i)
                for i in range(2)
            ],
        )
        store.update_shard(running.task_id, 0, status="running")
        self.running = running.task_id
        done = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS, result=[1])
        store.save(done)
        twin = TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.FAILED)
        store.save(twin)
        store.archive(twin.task_id)
        store.save(TaskInfo(twin.task_id, "dummy"))  # a live task with an archived twin
        self.twin = twin.task_id

    def task(self, **fields: Any) -> TaskInfo:
        fields.setdefault("task_id", generate_uniqc_task_id())
        fields.setdefault("backend", "dummy")
        return TaskInfo(**fields)

    def shard(self, task_id: str | None = None, **fields: Any) -> TaskShard:
        fields.setdefault("shard_index", 7)
        fields.setdefault("platform_task_id", "job-new")
        fields.setdefault("backend", "dummy")
        return TaskShard(uniqc_task_id=task_id or self.running, **fields)

    def save_new_with_shards(self, *shard_fields: dict[str, Any]) -> None:
        """Save a new task together with shards 0, 1, ... built from ``shard_fields``."""
        task = self.task()
        shards = [
            TaskShard(task.task_id, index, f"job-{index}", "dummy", **fields)
            for index, fields in enumerate(shard_fields)
        ]
        self.store.save(task, shards)

    def with_status(self, status: str) -> TaskInfo:
        task = self.task()
        setattr(task, "status", status)  # noqa: B010 - bypasses the constructor's check
        return task


def _self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BadInput = tuple[str, type[TaskStoreError], Callable[[_Seeded], object]]

BAD_INPUTS: list[BadInput] = [
    ("unknown task status", InvalidInputError, lambda s: s.store.save(s.with_status("done"))),
    (
        "unknown status in update_shard",
        InvalidInputError,
        lambda s: s.store.update_shard(s.running, 0, status="finished"),
    ),
    ("negative shots", InvalidInputError, lambda s: s.store.save(s.task(shots=-1))),
    ("boolean shots", InvalidInputError, lambda s: s.store.save(s.task(shots=True))),
    ("shots beyond 32 bits", InvalidInputError, lambda s: s.store.save(s.task(shots=2**31))),
    ("empty task id", InvalidInputError, lambda s: s.store.save(s.task(task_id=""))),
    ("blank task id", InvalidInputError, lambda s: s.store.save(s.task(task_id="   "))),
    ("non-string task id", InvalidInputError, lambda s: s.store.save(s.task(task_id=12345))),
    ("task id of 256 chars", InvalidInputError, lambda s: s.store.save(s.task(task_id="x" * 256))),
    ("NUL in task id", InvalidInputError, lambda s: s.store.save(s.task(task_id="uqt_\x00"))),
    ("empty backend", InvalidInputError, lambda s: s.store.save(s.task(backend=""))),
    ("metadata not a dict", InvalidInputError, lambda s: s.store.save(s.task(metadata=[1, 2]))),
    (
        "submit_time not ISO-8601",
        InvalidInputError,
        lambda s: s.store.save(s.task(submit_time="yesterday")),
    ),
    (
        "error_message not text",
        InvalidInputError,
        lambda s: s.store.save(s.task(error_message=404)),
    ),
    ("not a TaskInfo", InvalidInputError, lambda s: s.store.save({"task_id": "x"})),  # type: ignore[arg-type]
    (
        "negative shard index",
        InvalidInputError,
        lambda s: s.store.save_shard(s.shard(shard_index=-1)),
    ),
    (
        "zero circuit_count",
        InvalidInputError,
        lambda s: s.store.save_shard(s.shard(circuit_count=0)),
    ),
    (
        "shard for a missing parent",
        TaskNotFoundError,
        lambda s: s.store.save_shard(s.shard(generate_uniqc_task_id(), shard_index=0)),
    ),
    (
        "shard of a task not in the save_many batch",
        InvalidInputError,
        lambda s: s.store.save_many([s.task()], [s.shard(generate_uniqc_task_id(), shard_index=0)]),
    ),
    (
        "overlapping layout in one save",
        ShardLayoutError,
        lambda s: s.save_new_with_shards({"circuit_count": 2}, {"sub_index_offset": 1}),
    ),
    (
        "shard overlapping a stored shard",
        ShardLayoutError,
        lambda s: s.store.save_shard(s.shard(shard_index=5, sub_index_offset=1)),
    ),
    (
        "object() as result",
        UnserializableValueError,
        lambda s: s.store.save(s.task(result=object())),
    ),
    (
        "set in metadata",
        UnserializableValueError,
        lambda s: s.store.save(s.task(metadata={"qubits": {1, 2}})),
    ),
    ("bytes in result", UnserializableValueError, lambda s: s.store.save(s.task(result=b"\x00"))),
    (
        "unserializable shard result in save(task, shards)",
        UnserializableValueError,
        lambda s: s.save_new_with_shards({"result": object()}),
    ),
    (
        "unserializable result in update_shard",
        UnserializableValueError,
        lambda s: s.store.update_shard(s.running, 0, status="success", result=object()),
    ),
    (
        "invalid second task of save_many",
        InvalidInputError,
        lambda s: s.store.save_many([s.task(), s.task(shots=-5)]),
    ),
    (
        "update of a missing shard",
        ShardNotFoundError,
        lambda s: s.store.update_shard(s.running, 9, status="running"),
    ),
    ("restore over a live task", TaskStateError, lambda s: s.store.restore(s.twin)),
    ("unknown status filter", InvalidInputError, lambda s: s.store.list(status="bogus")),
    ("negative limit", InvalidInputError, lambda s: s.store.list(limit=-1)),
    (
        "unknown status to clear_completed",
        InvalidInputError,
        lambda s: s.store.clear_completed(["nope"]),
    ),
    (
        "lone surrogate in backend",
        InvalidInputError,
        lambda s: s.store.save(s.task(backend="originq:\ud800")),
    ),
    (
        "lone surrogate in error_message",
        InvalidInputError,
        lambda s: s.store.update_shard(s.running, 1, status="failed", error_message="\ud800"),
    ),
    (
        "self-containing list as result",
        InvalidInputError,
        lambda s: s.store.save(s.task(result=_self_containing())),
    ),
    (
        "result nested 5,000 deep",
        InvalidInputError,
        lambda s: s.store.save(s.task(result=_nested(5_000))),
    ),
    ("non-string backend filter", InvalidInputError, lambda s: s.store.list(backend=5)),  # type: ignore[arg-type]
]


def _dump(path: Path) -> str:
    with plain_sqlite(path) as conn:
        stamp = conn.execute("PRAGMA user_version").fetchone()[0]
        return f"user_version {stamp}\n" + "\n".join(conn.iterdump())


def test_bad_input_raises_a_store_error_and_changes_nothing(tmp_path: Path) -> None:
    outcomes: list[tuple[str, str, str, bool]] = []
    with TaskStore(tmp_path) as store:
        seeded = _Seeded(store)
        assert store.db_path is not None
        db_path = store.db_path
        for name, expected, attempt in BAD_INPUTS:
            before = _dump(db_path)
            try:
                attempt(seeded)
            except Exception as exc:
                raised: type[BaseException] | None = type(exc)
            else:
                raised = None
            unchanged = _dump(db_path) == before
            verdict = "ok" if raised and issubclass(raised, expected) and unchanged else "WRONG"
            shown = f"{raised.__module__}.{raised.__qualname__}" if raised else "nothing raised"
            outcomes.append((name, shown, verdict, unchanged))

    print(f"\n[bad input] {len(BAD_INPUTS)} bad inputs on a SQLite file:")
    for name, shown, verdict, unchanged in outcomes:
        note = "" if unchanged else " (FILE CHANGED)"
        print(f"  {verdict:5} {name:50} -> {shown}{note}")
    wrong = [o for o in outcomes if o[2] != "ok"]
    print(f"bad inputs: {len(outcomes)}, handled wrongly: {len(wrong)}")
    assert wrong == []


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("NaN in metadata", {"metadata": {"fidelity": math.nan}}),
    ("infinity and complex in result", {"result": {"e": math.inf, "amp": 0.5 - 0.5j}}),
    ("integer keys in result", {"result": {0: 512, 1: 488}}),
    ("NUL inside metadata text", {"metadata": {"note": "a\x00b"}}),
    ("lone surrogate inside metadata text", {"metadata": {"note": "\udcff"}}),
]


def test_odd_but_valid_values_are_accepted_and_round_trip(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        for name, fields in ACCEPTED:
            task = TaskInfo(generate_uniqc_task_id(), "dummy", **fields)
            store.save(task)
            stored = store.get(task.task_id)
            assert stored is not None, name
            assert repr(stored.metadata) == repr(task.metadata), name
            assert repr(stored.result) == repr(task.result), name
            print(f"\n[accepted by design] {name}: round-trips", end="")
    print()


def test_regression_count_flags_a_running_status_seen_after_a_final_one() -> None:
    # The counter the race figures rest on: a non-final status whose read began after
    # a read of a final status had ended is a regression; overlapping reads are not.
    observations = [
        ("shard", 0.0, 1.0, 1),
        ("shard", 2.0, 3.0, 2),
        ("shard", 2.5, 3.5, 1),  # overlaps the final read: may have happened first
        ("shard", 4.0, 5.0, 1),  # began after the final read ended: a regression
        ("other", 4.0, 5.0, 1),
    ]
    assert count_regressions(observations)[0] == 1
