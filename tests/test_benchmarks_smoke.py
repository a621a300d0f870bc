"""The benchmark suite runs end to end at a tiny size: its tables and its JSON appear.

Nothing here times anything; the figures live in BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.suite import main


def test_benchmark_suite_prints_its_tables_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    main(
        [
            "--db=sqlite",
            "--size=200",
            "--small=50",
            "--ops=20",
            "--reps=3",
            "--skip-memory",
            "--pages=20",
            f"--cache={tmp_path / 'cache'}",
            f"--json={out}",
        ]
    )
    printed = capsys.readouterr().out
    assert "| save_shard |" in printed
    assert "| page 21, tag |" in printed
    result = json.loads(out.read_text())
    names = {row["operation"] for row in result["operations"]}
    assert {"get by id", "update_shard", "shard by platform job id"} <= names
    assert all(row["ours"] > 0 and row["floor"] > 0 for row in result["operations"])
    assert {row["read"] for row in result["scaling"]["reads"]} >= {"get", "count_by(status)"}
    assert "| summaries(status=…, limit=50) |" in printed
    assert all(row["ours"] > 0 and row["floor"] > 0 for row in result["pages"])


def test_cli_startup_benchmark_prints_each_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli_startup import main as startup

    startup(["--rounds", "1"])
    printed = capsys.readouterr().out
    for command in ("uniqc-tasks --version", "uniqc-tasks --help", "uniqc-tasks list --limit 5"):
        assert f"| `{command}` |" in printed
