"""The store logs through :mod:`logging` under ``uniqc_taskstore``: silent unless the
application (or the CLI's -v/-vv) turns it on, and never a stored value or a password.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fault_proxy import proxy_for
from uniqc_taskstore import (
    DatabaseConnectionError,
    ForeignDatabaseError,
    TaskInfo,
    TaskShard,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import main

SECRET_VALUE = "s3cr3t-stored-value-7f1c"
SECRET_PASSWORD = "pw-9d2e-never-logged"


def test_the_package_logger_is_silent_by_default() -> None:
    logger = logging.getLogger("uniqc_taskstore")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert not [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]


def test_a_migration_is_logged_with_versions_and_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="uniqc_taskstore"):
        TaskStore(tmp_path).close()
    messages = [r.getMessage() for r in caplog.records if r.name == "uniqc_taskstore.migrator"]
    assert any("from schema version 0 to" in m for m in messages), messages
    assert any(m.endswith(" s") and "after" in m for m in messages), messages


def test_a_refused_file_is_logged_as_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite3.connect(tmp_path / "tasks.sqlite").execute(
        "CREATE TABLE theirs (x)"
    ).connection.commit()
    with (
        caplog.at_level(logging.WARNING, logger="uniqc_taskstore"),
        pytest.raises(ForeignDatabaseError),
    ):
        TaskStore(tmp_path)
    assert any(r.levelno == logging.WARNING and "refused" in r.getMessage() for r in caplog.records)


def test_a_corrupt_row_is_logged_as_a_warning_naming_the_row(
    store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy")
    store.save(task)
    with store._db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET status = 'bogus' WHERE task_id = :t"), {"t": task.task_id}
        )
    with caplog.at_level(logging.WARNING, logger="uniqc_taskstore"):
        assert store.list(on_corrupt=lambda _: None) == []
    (record,) = [r for r in caplog.records if "corrupt row" in r.getMessage()]
    assert task.task_id in record.getMessage()
    assert "status" in record.getMessage()
    assert "bogus" not in record.getMessage()


def test_slow_calls_are_logged_at_debug_by_name(
    store: TaskStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIQC_SLOW_CALL_MS", "0")
    task = TaskInfo(generate_uniqc_task_id(), "dummy", result={"v": SECRET_VALUE})
    with caplog.at_level(logging.DEBUG, logger="uniqc_taskstore"):
        store.save(task)
        store.get(task.task_id)
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow call")]
    assert any("save" in m for m in slow), slow
    assert all(SECRET_VALUE not in m for m in slow)


def test_no_password_or_stored_value_is_ever_logged(
    fresh_database_url: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every kind of record the store writes, on PostgreSQL with a password in the URL
    (the server trusts local logins, so any password opens it): a migration, slow
    calls, reconnects after cut connections, a connection refused past the retry
    budget; none holds the password or a value the store was given."""
    url = make_url(fresh_database_url("postgresql")).set(password=SECRET_PASSWORD)
    monkeypatch.setenv("UNIQC_SLOW_CALL_MS", "0")
    proxy = proxy_for(url.render_as_string(False))
    proxied = proxy.url(url.render_as_string(False)) + "&retry_budget=0.3"
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="uniqc_taskstore"),
            TaskStore(url=proxied) as store,
        ):
            task = TaskInfo(
                generate_uniqc_task_id(),
                "dummy",
                result={"v": SECRET_VALUE},
                metadata={"m": SECRET_VALUE},
                error_message=SECRET_VALUE,
            )
            shard = TaskShard(task.task_id, 0, f"job-{SECRET_VALUE}", "dummy")
            store.save(task, [shard])
            proxy.cut_all()
            store.update_shard(task.task_id, 0, status="failed", error_message=SECRET_VALUE)
            proxy.cut_all()
            assert store.list()[0].error_message == SECRET_VALUE
            proxy.refuse()
            proxy.cut_all()
            with pytest.raises(DatabaseConnectionError):
                store.get(task.task_id)
    finally:
        proxy.close()
    levels = {r.levelname for r in caplog.records}
    assert {"INFO", "WARNING", "DEBUG"} <= levels, levels
    for record in caplog.records:
        line = record.getMessage()
        assert SECRET_PASSWORD not in line, line
        assert SECRET_VALUE not in line, line


def test_cli_verbose_logs_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sqlite3.connect(tmp_path / "tasks.sqlite").execute(
        "CREATE TABLE theirs (x)"
    ).connection.commit()
    assert main(["--cache-dir", str(tmp_path), "list"]) == 3
    quiet = capsys.readouterr().err
    assert main(["-v", "--cache-dir", str(tmp_path), "list"]) == 3
    loud = capsys.readouterr().err
    assert "WARNING" not in quiet
    assert "uniqc-tasks: WARNING uniqc_taskstore.backends.base: refused" in loud
    assert loud.strip().splitlines()[-1].startswith("uniqc-tasks: ")
