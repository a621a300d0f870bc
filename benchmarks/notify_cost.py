"""What a change log costs PostgreSQL writers on the raw driver, and what its NOTIFY adds.

8 writer processes, each transaction one psycopg pipeline (as the store's batches are):
``UPDATE`` of a row of the writer's own, then (``insert``) an ``INSERT … SELECT`` of that
row into a log table stamped with the transaction id, then (``notify``) a
``pg_notify`` inside the transaction, or (``after``, what the store does since schema
v16) the insert, ``COMMIT`` and a ``pg_notify`` of its own after it, in the same
pipeline. Rounds of the kinds alternate; each figure is transactions per second summed
over the writers, the ratio against no log the median's. PostgreSQL writes a
transaction's notifications at commit under one database-wide lock held until its
commit record is flushed, so ``notify`` serialises the commits of the transactions
that send one; ``after`` notifies from a transaction that writes nothing.

    python -m benchmarks.notify_cost --url postgresql://postgres@127.0.0.1/postgres

The URL is an admin URL (libpq form or SQLAlchemy's): a database is made for the run
and dropped after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid
from typing import Any

import psycopg

KINDS = ("off", "insert", "notify", "after")
WRITERS = 8


_LOG_INSERT = (
    "INSERT INTO log (txid, task, status) "
    "SELECT pg_current_xact_id()::text::bigint, id, status FROM t WHERE id = %s"
)


_NOTIFY = "SELECT pg_notify('uniqc_bench', '')"


def _dsn(url: str, database: str | None = None) -> str:
    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    if database is None:
        return url
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def _writer(dsn: str, kind: str, n: int, seconds: float, ready: Any, results: Any) -> None:
    # Every kind sends its whole transaction in one pipeline, BEGIN and COMMIT included
    # (the connection in autocommit, as the store's batches are): one round trip each.
    conn = psycopg.connect(dsn, autocommit=True)
    calls = 0
    ready.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = n * 100 + calls % 100
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("UPDATE t SET v = v + 1 WHERE id = %s", (row,))
            if kind != "off":
                conn.execute(_LOG_INSERT, (row,))
            if kind == "notify":
                conn.execute(_NOTIFY)
            conn.execute("COMMIT")
            if kind == "after":
                conn.execute(_NOTIFY)
        calls += 1
    conn.close()
    results.put(calls)


def _round(dsn: str, kind: str, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    writers = [
        context.Process(target=_writer, args=(dsn, kind, n, seconds, ready, results))
        for n in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    time.sleep(1.0)  # connected before the clock starts
    ready.set()
    total: int = sum(int(results.get(timeout=seconds + 60)) for _ in writers)
    for writer in writers:
        writer.join()
    return total / seconds


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notify_cost", description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    name = f"uniqc_notify_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_dsn(args.url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = _dsn(args.url, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, status text)")
            conn.execute(
                "CREATE TABLE log (seq bigserial PRIMARY KEY, txid bigint, task int, status text)"
            )
            conn.execute("INSERT INTO t SELECT g, 0, 'running' FROM generate_series(0, 999) g")
        found: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                found[kind].append(_round(dsn, kind, args.seconds))
    finally:
        with psycopg.connect(_dsn(args.url), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    floor = statistics.median(found["off"])
    print(f"{WRITERS} writers, {args.rounds} x {args.seconds:g} s a kind, transactions/s:")
    for kind, rates in found.items():
        rounds = ", ".join(f"{rate:,.0f}" for rate in rates)
        ratio = statistics.median(rates) / floor
        print(f"  {kind:7s} median {statistics.median(rates):,.0f} ({rounds}), {ratio:.2f} of off")
    return found


if __name__ == "__main__":
    main()
