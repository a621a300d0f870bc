"""How long ``uniqc-tasks`` takes to start, against the floors it is measured by.

Each command runs as a fresh process, interleaved with its floor in rounds so that a
slow spell of the shared machine falls on both; the figure is the median of each,
and the ratio is what the goals (issue 20, item 12) are about:

- ``uniqc-tasks --version`` against ``python -c pass`` (goal: at most 5x);
- ``uniqc-tasks list --limit 5`` on a small SQLite store against
  ``python -c "import sqlalchemy"`` (goal: at most 1.3x);
- ``uniqc-tasks --help`` against ``python -c pass``, for the record.

Every process reads compiled bytecode as an installed package would: the runs share a
fresh ``PYTHONPYCACHEPREFIX`` filled by a warm-up run (``PYTHONDONTWRITEBYTECODE`` is
dropped), so neither side pays for compiling sources.

Usage: ``python -m benchmarks.cli_startup [--rounds 15] [--json out.json]``.
Timings are never asserted; ``tests/test_benchmarks_smoke.py`` runs it tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOALS = {"--version": 5.0, "list --limit 5": 1.3}


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def _small_store(directory: Path) -> None:
    from uniqc_taskstore import TaskInfo, TaskStore, generate_uniqc_task_id

    with TaskStore(directory) as store:
        store.save_many([TaskInfo(generate_uniqc_task_id(), "dummy") for _ in range(100)])


def measure(rounds: int) -> list[dict[str, Any]]:
    """Median seconds of each command and of its floor, interleaved, and the ratio."""
    python = sys.executable
    cli = [python, "-m", "uniqc_taskstore.cli"]
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        _small_store(cache)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
        pairs = {
            "--version": ([*cli, "--version"], [python, "-c", "pass"]),
            "--help": ([*cli, "--help"], [python, "-c", "pass"]),
            "list --limit 5": (
                [*cli, "--cache-dir", str(cache), "list", "--limit", "5"],
                [python, "-c", "import sqlalchemy"],
            ),
        }
        for ours, floor in pairs.values():  # warm the file cache and .pyc files
            _seconds(ours, env)
            _seconds(floor, env)
        times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in pairs}
        for _ in range(rounds):
            for name, (ours, floor) in pairs.items():
                times[name][0].append(_seconds(ours, env))
                times[name][1].append(_seconds(floor, env))
    rows = []
    for name, (ours_times, floor_times) in times.items():
        ours_s, floor_s = statistics.median(ours_times), statistics.median(floor_times)
        rows.append(
            {
                "command": f"uniqc-tasks {name}",
                "floor": _floor_name(name),
                "ours_ms": round(ours_s * 1000, 1),
                "floor_ms": round(floor_s * 1000, 1),
                "ratio": round(ours_s / floor_s, 2),
                "goal": GOALS.get(name),
            }
        )
    return rows


def _floor_name(name: str) -> str:
    return 'python -c "import sqlalchemy"' if name.startswith("list") else "python -c pass"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="Runs of each (median).")
    parser.add_argument("--json", metavar="FILE", help="Also write the rows as JSON.")
    args = parser.parse_args(argv)
    rows = measure(args.rounds)
    print("| command | floor | ours (ms) | floor (ms) | ratio | goal |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        goal = f"<= {row['goal']}x" if row["goal"] else "-"
        print(
            f"| `{row['command']}` | `{row['floor']}` | {row['ours_ms']} | "
            f"{row['floor_ms']} | {row['ratio']}x | {goal} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
