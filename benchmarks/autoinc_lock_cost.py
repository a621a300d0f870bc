"""What MariaDB's auto-increment lock costs a write that appends one change row, on
the raw driver: 8 processes, each transaction one round trip (``START TRANSACTION``,
an ``UPDATE`` of a row of its own, the change insert, ``COMMIT`` in one query), in
alternating rounds: no insert (the floor), ``INSERT ... SELECT`` (a bulk insert: the
table's AUTO-INC lock held to the end of the statement in ``innodb_autoinc_lock_mode``
1, what the change feed's seq design relies on), the same into a table with the
``(txid, seq)`` index of ``changes``, ``INSERT ... SELECT`` of constants (no table
read), and ``INSERT ... VALUES`` (a simple insert: a
mutex only, not enough for the feed). Usage (a database ``mf_autoinc`` is made and
dropped):

    python -m benchmarks.autoinc_lock_cost --host 127.0.0.1 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from typing import Any

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT  # type: ignore[import-untyped]

DB = "mf_autoinc"
WRITERS = 8
MODES = ("off", "insert_select", "insert_select_indexed", "insert_select_constant", "insert_values")


def _setup(host: str) -> None:
    conn = pymysql.connect(host=host, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"USE {DB}")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        for name, extra in (("ch", ""), ("chi", ", KEY (txid, seq)")):
            cur.execute(
                f"CREATE TABLE {name} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, txid BIGINT, "
                f"task INT, v INT{extra}) ENGINE=InnoDB"
            )
        cur.execute("INSERT INTO t VALUES " + ",".join(f"({i},0)" for i in range(800)))
    conn.close()


def _writer(host: str, mode: str, w: int, seconds: float, out: Any, start: Any) -> None:
    conn = pymysql.connect(host=host, user="root", database=DB, client_flag=CLIENT.MULTI_STATEMENTS)
    cur = conn.cursor()
    n = 0
    start.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = w * 100 + n % 100
        sql = f"START TRANSACTION; UPDATE t SET v = v + 1 WHERE id = {i}"
        if mode == "insert_select":
            sql += f"; INSERT INTO ch (task, v) SELECT id, v FROM t WHERE id = {i}"
        elif mode == "insert_select_indexed":
            sql += f"; INSERT INTO chi (task, v) SELECT id, v FROM t WHERE id = {i}"
        elif mode == "insert_select_constant":
            sql += f"; INSERT INTO ch (task, v) SELECT {i}, 1"
        elif mode == "insert_values":
            sql += f"; INSERT INTO ch (task, v) VALUES ({i}, 1)"
        cur.execute(sql + "; COMMIT")
        while cur.nextset():
            pass
        n += 1
    out.put(n)
    conn.close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    _setup(args.host)
    context = multiprocessing.get_context("spawn")
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                out, start = context.Queue(), context.Event()
                workers = [
                    context.Process(
                        target=_writer, args=(args.host, mode, w, args.seconds, out, start)
                    )
                    for w in range(WRITERS)
                ]
                for worker in workers:
                    worker.start()
                time.sleep(1.0)
                start.set()
                total = sum(out.get() for _ in workers)
                for worker in workers:
                    worker.join()
                rates[mode].append(total / args.seconds)
    finally:
        conn = pymysql.connect(host=args.host, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.close()
    floor = statistics.median(rates["off"])
    result = {mode: statistics.median(values) for mode, values in rates.items()}
    for mode, values in rates.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{mode}: {result[mode]:.0f}/s ({shown}), / off {result[mode] / floor:.2f}")
    return result


if __name__ == "__main__":
    main()
