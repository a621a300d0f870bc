"""Task ids both live and archived ("twins": save X, archive X, save X again), issue 17
item 3. One rule everywhere: both copies are kept and stay retrievable. Archiving the
live copy is refused while the archive holds the id (archive, archive_many,
archive_older_than); an export with --archived imports back as both; copy carries
archive and restore moves over so SOURCE = DEST; stats says how many ids are twins."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import (
    TaskInfo,
    TaskShard,
    TaskStateError,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import EXIT_OK, main
from uniqc_taskstore.exchange import export_tasks, import_tasks
from uniqc_taskstore.transfer import copy_tasks, count_rows

LONG_AGO = "2020-01-01T00:00:00+00:00"


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def save(store: TaskStore, task_id: str, status: TaskStatus, circuits: int) -> TaskInfo:
    task = TaskInfo(
        task_id,
        "dummy",
        status=status,
        submit_time=LONG_AGO,
        update_time=LONG_AGO,
        metadata={"version": circuits},
        tags={"run": str(circuits)},
    )
    shards = [
        TaskShard(task_id, i, f"job-{circuits}-{i}", "dummy", 1, i, status=status)
        for i in range(circuits)
    ]
    store.save(task, shards)
    return task


def make_twin(store: TaskStore) -> str:
    """X archived (an older task with 2 shards), then X saved again (1 shard)."""
    task_id = generate_uniqc_task_id()
    save(store, task_id, TaskStatus.SUCCESS, 2)
    assert store.archive(task_id)
    save(store, task_id, TaskStatus.FAILED, 1)
    return task_id


def both(store: TaskStore, task_id: str) -> tuple[Any, ...]:
    return (
        store.get(task_id),
        store.get_shards(task_id),
        store.get_archived(task_id),
        store.get_archived_shards(task_id),
    )


def test_every_archive_path_refuses_a_twin_and_keeps_both_copies(store: TaskStore) -> None:
    twin = make_twin(store)
    plain = generate_uniqc_task_id()
    save(store, plain, TaskStatus.SUCCESS, 1)
    before = both(store, twin)
    assert before[2] is not None
    assert len(before[3]) == 2

    with pytest.raises(TaskStateError, match="already archived"):
        store.archive(twin)
    assert both(store, twin) == before

    result = store.archive_many([twin, plain])
    assert result.done == [plain]
    assert result.refused == [(twin, "already archived")]
    assert both(store, twin) == before

    store.restore(plain)
    dry = store.archive_older_than(timedelta(days=1), statuses=None, by="submit_time", dry_run=True)
    assert (dry.task_ids, dry.refused) == ([plain], [twin])
    done = store.archive_older_than(timedelta(days=1), statuses=None, by="submit_time")
    assert (done.count, done.refused) == (1, [twin])
    assert both(store, twin) == before
    assert store.get_archived(plain) is not None


def test_an_export_with_the_archive_imports_back_both_copies_of_a_twin(
    store: TaskStore, tmp_path: Path
) -> None:
    twin = make_twin(store)
    before = both(store, twin)
    text = io.StringIO()
    report = export_tasks(store, text, archived=True)
    assert (report.tasks, report.archived_tasks) == (1, 1)
    lines = [json.loads(line) for line in text.getvalue().splitlines()[1:]]
    assert [line.get("twin") for line in lines] == [True, True]
    with TaskStore(tmp_path / "copy") as copy:
        # the archived line first: each copy is judged against its own side only
        reordered = text.getvalue().splitlines(keepends=True)
        imported = import_tasks(copy, io.StringIO("".join([reordered[0], *reordered[:0:-1]])))
        assert (imported.tasks, imported.archived_tasks, imported.skipped) == (1, 1, 0)
        assert both(copy, twin) == before
        again = import_tasks(copy, io.StringIO(text.getvalue()), batch_size=1)
        assert (again.tasks, again.archived_tasks, again.skipped) == (0, 0, 2)
    # And the other way round: a SQLite export into this database.
    store.clear_all()
    import_tasks(store, io.StringIO(text.getvalue()), batch_size=1)
    assert both(store, twin) == before


def test_an_unmarked_line_is_skipped_when_its_id_is_on_either_side(tmp_path: Path) -> None:
    with TaskStore(tmp_path / "s") as store:
        task_id = generate_uniqc_task_id()
        old = save(store, task_id, TaskStatus.SUCCESS, 1)
        text = io.StringIO()
        export_tasks(store, text)  # X live, no twin: unmarked
        store.archive(task_id)
        # An old export of X, imported after X was archived, does not make a twin.
        report = import_tasks(store, io.StringIO(text.getvalue()))
        assert (report.tasks, report.skipped) == (0, 1)
        assert store.get(task_id) is None
        assert store.get_archived(task_id) is not None
        assert old.task_id == task_id


@pytest.fixture
def source(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "source")


def counts_match(report: Any) -> None:
    assert report.source == report.destination


def test_copy_carries_archive_and_restore_moves_over(source: TaskStore, store: TaskStore) -> None:
    archived_later = generate_uniqc_task_id()
    restored_later = generate_uniqc_task_id()
    save(source, archived_later, TaskStatus.SUCCESS, 2)
    save(source, restored_later, TaskStatus.SUCCESS, 3)
    source.archive(restored_later)
    first = copy_tasks(source, store)
    counts_match(first)

    source.archive(archived_later)
    source.restore(restored_later)
    second = copy_tasks(source, store)
    assert second.moved == 2
    assert second.kept == []
    counts_match(second)
    for task_id in (archived_later, restored_later):
        assert both(store, task_id) == both(source, task_id)
    third = copy_tasks(source, store)
    assert (third.moved, third.copied.tasks, third.copied.archived_tasks) == (0, 0, 0)


def test_copy_keeps_a_task_the_destination_changed_since_and_names_it(
    source: TaskStore, store: TaskStore
) -> None:
    task_id = generate_uniqc_task_id()
    save(source, task_id, TaskStatus.RUNNING, 1)
    copy_tasks(source, store)
    mine = store.get(task_id)
    assert mine is not None
    store.save(TaskInfo(**{**mine.to_dict(), "status": TaskStatus.SUCCESS}))  # changed in DEST
    changed = both(store, task_id)
    source.archive(task_id)
    report = copy_tasks(source, store)
    assert (report.moved, report.kept) == (0, [task_id])
    assert both(store, task_id) == changed  # no twin made, nothing replaced


def test_copy_of_a_source_holding_a_twin_gives_the_destination_both(
    source: TaskStore, store: TaskStore
) -> None:
    twin = make_twin(source)
    report = copy_tasks(source, store)
    counts_match(report)
    assert both(store, twin) == both(source, twin)
    assert count_rows(store).tasks == count_rows(store).archived_tasks == 1


def test_copy_on_the_cli_says_what_it_moved_and_source_equals_dest(
    tmp_path: Path,
    store: TaskStore,
    store_location: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TaskStore(tmp_path / "src") as src:
        task_id = generate_uniqc_task_id()
        save(src, task_id, TaskStatus.SUCCESS, 1)
        dest = where(store_location)[1]
        assert main(["copy", str(tmp_path / "src"), dest, "--json"]) == EXIT_OK
        src.archive(task_id)
    capsys.readouterr()
    assert main(["copy", str(tmp_path / "src"), dest, "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["moved"] == 1
    assert report["source"] == report["destination"]
    assert (store.count(), store.count_archived()) == (0, 1)


def test_stats_say_how_many_ids_are_also_on_the_other_side(
    store: TaskStore, store_location: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    make_twin(store)
    save(store, generate_uniqc_task_id(), TaskStatus.SUCCESS, 1)
    assert main(["stats", *where(store_location)]) == EXIT_OK
    assert "2 tasks (archived: 1; 1 of these ids are archived too)" in capsys.readouterr().out
    assert main(["stats", "--archived", "--json", *where(store_location)]) == EXIT_OK
    stats = json.loads(capsys.readouterr().out)
    assert (stats["tasks"], stats["also_on_the_other_side"]) == (1, 1)
