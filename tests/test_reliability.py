"""Nothing lost: concurrent writers, kill -9 and racing pollers.

Each test measures and prints a figure and asserts the target for it (0 errors,
0 writes lost, 0 status regressions, 0 integrity failures). Slow by design; run with

    .venv/bin/pytest -m reliability -s tests/test_reliability.py

(with ``UNIQC_TEST_POSTGRESQL_URL`` / ``UNIQC_TEST_MYSQL_URL`` set for the server runs).
Worker processes live in ``tests/reliability_workers.py``; the figures are in
RELIABILITY.md. Bad input and the other deterministic regressions are in the default
suite (``tests/test_regressions.py``).
"""

from __future__ import annotations

import json
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
    counter_writer,
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
    CURRENT_SCHEMA_VERSION,
    TaskInfo,
    TaskShard,
    TaskStore,
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


# -- 1. many processes, one database ---------------------------------------------------------

WRITERS = 8


@pytest.mark.parametrize(
    ("kind", "operations_per_writer"), [("sqlite", 1_000), ("postgresql", 250), ("mysql", 250)]
)
def test_concurrent_writers_lose_nothing_and_surface_no_errors(
    kind: str,
    operations_per_writer: int,
    tmp_path: Path,
    fresh_database_url: Callable[[str], str],
) -> None:
    location: Location = (
        {"cache_dir": str(tmp_path / "cache")}
        if kind == "sqlite"
        else {"url": fresh_database_url(kind)}
    )
    outs = [tmp_path / f"writer-{n}.json" for n in range(WRITERS)]
    barrier = SPAWN.Barrier(WRITERS)
    _run_children(
        mixed_writer,
        [
            (location, n, operations_per_writer, 1000 + n, barrier, str(out))
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
    with TaskStore(**location) as store:  # type: ignore[arg-type]
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
        f"\n[concurrent writers, {kind}] {WRITERS} processes x {operations_per_writer} operations "
        f"({', '.join(f'{k} {v}' for k, v in sorted(done.items()))}); "
        f"{checked} acknowledged task states checked"
    )
    print(f"errors surfaced: {len(errors)}, writes lost: {len(lost)}")
    print(f"read-your-writes mismatches seen by the writers: {len(read_mismatches)}")
    for line in (errors + lost + read_mismatches)[:15]:
        print("  ", line)
    assert sum(done.values()) == WRITERS * operations_per_writer
    assert (len(errors), len(lost), len(read_mismatches)) == (0, 0, 0)


# -- 2. kill -9 --------------------------------------------------------------------------------

KILLS = 50
MIGRATION_KILLS = 8
LEGACY_LIVE_ROWS = 500
LEGACY_ARCHIVED_ROWS = 100
"""Small enough to build and copy quickly; a full open of it migrates every data step."""


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
        if reopened_version != CURRENT_SCHEMA_VERSION or after:
            missing.append(f"migration run {run} after reopening: v{reopened_version} {after}")
        if (live, archived) != (LEGACY_LIVE_ROWS + LEGACY_UQT_TASKS, LEGACY_ARCHIVED_ROWS):
            missing.append(f"migration run {run}: store counts {live} live, {archived} archived")

    print(
        f"\n[kill -9] {writer_kills} kills of a writer ({acked} acknowledged writes checked "
        f"after the last), {MIGRATION_KILLS} kills while migrating a v4 file of "
        f"{LEGACY_LIVE_ROWS + LEGACY_ARCHIVED_ROWS} legacy rows (full open to "
        f"v{CURRENT_SCHEMA_VERSION} took "
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


# -- 4. status counters under concurrent writers and kill -9 -----------------------------------

COUNTER_ROUNDS = 3


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_status_counters_equal_count_star_after_killed_writers(
    kind: str, tmp_path: Path, fresh_database_url: Callable[[str], str]
) -> None:
    """8 writer processes change statuses, archive, restore and delete at once and are
    SIGKILLed, many mid-transaction; the counters ``count_by("status")`` reads then
    equal ``COUNT(*)`` per status (they are kept by triggers in each writer's own
    transaction, so a kill takes a change and its count together)."""
    from uniqc_taskstore import counters

    location: Location = (
        {"cache_dir": str(tmp_path / "cache")}
        if kind == "sqlite"
        else {"url": fresh_database_url(kind)}
    )
    TaskStore(**location).close()  # type: ignore[arg-type]  # migrated once, before the writers
    rng = random.Random(22)
    drifts: list[str] = []
    total = 0
    for run in range(COUNTER_ROUNDS):
        readies = [tmp_path / f"ready-{run}-{n}" for n in range(WRITERS)]
        processes = [
            FORK.Process(target=counter_writer, args=(location, str(ready), 100 * run + n))
            for n, ready in enumerate(readies)
        ]
        for process in processes:
            process.start()
        deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
        while not all(ready.exists() for ready in readies):
            assert all(p.is_alive() for p in processes), [p.exitcode for p in processes]
            assert time.monotonic() < deadline, "writers never became ready"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.5, 2.0))
        for process in processes:
            assert process.is_alive(), f"writer stopped on its own (exit {process.exitcode})"
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        for process in processes:
            process.join(30)
            assert process.exitcode == -signal.SIGKILL
        with TaskStore(**location) as store:  # type: ignore[arg-type]
            drift = store._db.read(counters.drift)
            by_counters = store.count_by("status")
            by_rows = store._db.read(counters.counted)
            total = store.count()
        if drift or by_counters != by_rows or total != sum(by_rows.values()):
            drifts.append(f"round {run}: counters {by_counters}, COUNT(*) {by_rows}")
    print(
        f"\n[status counters, {kind}] {COUNTER_ROUNDS} rounds of {WRITERS} writers killed; "
        f"{total} live tasks at the end; rounds where counters differed: {len(drifts)}"
    )
    for line in drifts:
        print("  ", line)
    assert drifts == []
