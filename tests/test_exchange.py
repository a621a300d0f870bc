"""``uniqc-tasks export`` / ``import``: a lossless, re-importable file, and spreadsheets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, main
from uniqc_taskstore.exchange import export_tasks, import_tasks


def where(store_location: dict[str, Any]) -> list[str]:
    """The CLI options for the ``store`` fixture's location."""
    if "url" in store_location:
        return ["--url", store_location["url"]]
    return ["--cache-dir", str(store_location["cache_dir"])]


def seed(store: TaskStore, n: int = 12) -> list[str]:
    """Tasks with everything an export must carry: NaN, complex and int-keyed results,
    tags, names, metadata, errors, batches of shards, and some of them archived."""
    ids = []
    for k in range(n):
        task = TaskInfo(
            generate_uniqc_task_id(),
            backend=f"originq:WK_C{k % 3}",
            status=TaskStatus.SUCCESS if k % 2 else TaskStatus.RUNNING,
            result={k: float("nan"), "amp": complex(k, -1), "inf": float("-inf")}
            if k % 2
            else None,
            metadata={"k": k, "unicode": "μ", "nested": {"$uniqc": "not a tag"}},
            error_message=None if k % 4 else "boom",
            name=f"run-{k}" if k % 3 else None,
            tags={"team": "qec", "k": str(k)} if k % 2 else {},
        )
        shards = [
            TaskShard(
                task.task_id,
                i,
                f"job-{k}-{i}",
                task.backend,
                2,
                2 * i,
                status=task.status,
                result=[{0: i}, {"1": float("nan")}] if k % 2 else None,
            )
            for i in range(k % 4)
        ]
        store.save(task, shards)
        ids.append(task.task_id)
    for task_id in ids[1::4]:
        assert store.archive(task_id)
    return ids


def contents(store: TaskStore, ids: list[str]) -> str:
    """Every task and shard, live and archived, as text (NaN != NaN, its repr is stable)."""
    return repr(
        {
            task_id: (
                store.get(task_id),
                store.get_shards(task_id),
                store.get_archived(task_id),
                store.get_archived_shards(task_id),
            )
            for task_id in ids
        }
    )


def test_export_then_import_gives_back_every_field_live_and_archived(
    store: TaskStore,
    store_location: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = seed(store)
    before = contents(store, ids)
    exported = tmp_path / "tasks.jsonl"

    assert main(["export", *where(store_location), "--archived", "-o", str(exported)]) == EXIT_OK
    assert "Exported 9 live and 3 archived tasks" in capsys.readouterr().out
    lines = exported.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["uniqc_export"] == 1
    assert len(lines) == 1 + len(ids)
    assert not (tmp_path / "tasks.jsonl.partial").exists()

    # Into a fresh SQLite store, and back into the emptied original database.
    assert main(["import", str(exported), "--cache-dir", str(tmp_path / "fresh")]) == EXIT_OK
    with TaskStore(tmp_path / "fresh") as fresh:
        assert contents(fresh, ids) == before
    capsys.readouterr()
    store.clear_all()
    assert main(["import", str(exported), *where(store_location), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert (report["tasks"], report["archived_tasks"], report["skipped"]) == (9, 3, 0)
    assert contents(store, ids) == before


def test_importing_again_adds_nothing_and_finishes_an_interrupted_import(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "source") as source:
        ids = seed(source)
        text = io.StringIO()
        export_tasks(source, text, archived=True)
        before = contents(source, ids)
    lines = text.getvalue().splitlines(keepends=True)
    with TaskStore(tmp_path / "dest") as dest:
        # An import stopped after the first five tasks ...
        first = import_tasks(dest, io.StringIO("".join(lines[:6])), batch_size=2)
        assert first.tasks + first.archived_tasks == 5
        # ... is finished by importing the whole file again, and a third run adds nothing.
        second = import_tasks(dest, io.StringIO(text.getvalue()), batch_size=2)
        assert (second.skipped, second.tasks + second.archived_tasks) == (5, len(ids) - 5)
        third = import_tasks(dest, io.StringIO(text.getvalue()))
        assert (third.skipped, third.tasks, third.archived_tasks, third.shards) == (
            len(ids),
            0,
            0,
            0,
        )
        assert contents(dest, ids) == before


def test_filters_choose_what_is_exported(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "s") as store:
        seed(store)
        text = io.StringIO()
        report = export_tasks(store, text, None, live=False, archived=True)
        assert (report.tasks, report.archived_tasks) == (0, 3)
    code = main(
        [
            "export",
            "--cache-dir",
            str(tmp_path / "s"),
            "--tag",
            "team=qec",
            "-o",
            "-",
            "--status",
            "success",
        ]
    )
    assert code == EXIT_OK


def test_import_refuses_a_file_that_is_not_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "tasks.csv"
    foreign.write_text("task_id,status\nuqt_x,success\n", encoding="utf-8")
    code = main(["import", str(foreign), "--cache-dir", str(tmp_path / "dest")])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    assert err.count("\n") == 1
    assert "is not a uniqc-tasks export" in err


def test_import_names_the_line_it_cannot_store(tmp_path: Path) -> None:
    header = json.dumps({"uniqc_export": 1}) + "\n"
    bad = json.dumps({"task": {"task_id": "uqt_1", "backend": "x", "shots": -1}}) + "\n"
    with TaskStore(tmp_path / "dest") as dest, pytest.raises(Exception, match="line 2"):
        import_tasks(dest, io.StringIO(header + bad))


def test_import_refuses_an_export_from_a_newer_format(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "dest") as dest, pytest.raises(Exception, match="newer"):
        import_tasks(dest, io.StringIO(json.dumps({"uniqc_export": 99}) + "\n"))


def test_csv_has_one_row_per_task_or_per_circuit_in_submission_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with TaskStore(tmp_path / "s") as store:
        task = TaskInfo(
            generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS, tags={"a": "1"}
        )
        shards = [
            TaskShard(
                task.task_id, 1, "j1", "dummy", 1, 2, status=TaskStatus.SUCCESS, result={"11": 5}
            ),
            TaskShard(
                task.task_id,
                0,
                "j0",
                "dummy",
                2,
                0,
                status=TaskStatus.SUCCESS,
                result=[{"00": 1}, {"01": 2}],
            ),
        ]
        store.save(task, shards)
    out = tmp_path / "circuits.csv"
    assert (
        main(["export", "--cache-dir", str(tmp_path / "s"), "--per-circuit", "-o", str(out)]) == 0
    )
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [(r["circuit_index"], json.loads(r["result"])) for r in rows] == [
        ("0", {"00": 1}),
        ("1", {"01": 2}),
        ("2", {"11": 5}),
    ]
    per_task = tmp_path / "tasks.csv"
    assert main(["export", "--cache-dir", str(tmp_path / "s"), "-o", str(per_task)]) == 0
    (row,) = csv.DictReader(per_task.open(encoding="utf-8", newline=""))
    assert (row["task_id"], row["status"], json.loads(row["tags"])) == (
        task.task_id,
        "success",
        {"a": "1"},
    )
    capsys.readouterr()


def test_export_of_a_missing_store_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--cache-dir", str(tmp_path / "none"), "-o", str(tmp_path / "x.jsonl")])
    assert code == EXIT_REFUSED
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert "no task store" in capsys.readouterr().err


def test_ctrl_c_during_import_says_how_far_it_got_and_running_again_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uniqc_taskstore.cli.transfer as cli_transfer

    with TaskStore(tmp_path / "source") as source:
        ids = seed(source)
        before = contents(source, ids)
    exported = tmp_path / "tasks.jsonl"
    assert (
        main(["export", "--cache-dir", str(tmp_path / "source"), "--archived", "-o", str(exported)])
        == 0
    )

    def interrupted_after_first_batch(store: TaskStore, stream: Any, **kwargs: Any) -> Any:
        def progress(done: int, total: int | None) -> None:
            kwargs["progress"](done, total)
            if done:
                raise KeyboardInterrupt  # as Ctrl-C between two batches

        return import_tasks(store, stream, batch_size=4, progress=progress)

    monkeypatch.setattr(cli_transfer, "import_tasks", interrupted_after_first_batch)
    args = ["import", str(exported), "--cache-dir", str(tmp_path / "dest")]
    capsys.readouterr()
    assert main(args) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "interrupted after 4 of 12 tasks" in err
    assert "run the same command again" in err
    monkeypatch.undo()
    assert main(args) == EXIT_OK
    assert "4 already there were skipped" in capsys.readouterr().out
    with TaskStore(tmp_path / "dest") as dest:
        assert contents(dest, ids) == before
