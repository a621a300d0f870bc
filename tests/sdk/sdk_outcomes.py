"""pytest plugin for ``run_sdk_tests.py``: one JSON line per test phase and per failed
collection, written to the file named by ``UNIQC_SDK_OUTCOMES``."""

from __future__ import annotations

import json
import os

import pytest


def _record(nodeid: str, outcome: str) -> None:
    path = os.environ.get("UNIQC_SDK_OUTCOMES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"nodeid": nodeid, "outcome": outcome}) + "\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _record(report.nodeid, report.outcome)
    elif report.failed:  # setup or teardown
        _record(report.nodeid, "error")
    elif report.skipped:
        _record(report.nodeid, "skipped")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(report.nodeid, "error")
