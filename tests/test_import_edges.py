"""What import reads, and what export and --json write (issue 17, items 8, 9, 11):
whatever ``save`` accepts round-trips; a line nested 200,000 deep or bytes that are not
UTF-8 are an :class:`ImportLineError` and one CLI line; errors name the file and the
line; the task lines before a bad line are imported, none after, and the message says
so; a header's format must be a whole number from 1; a failed import into a new
directory creates nothing."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from uniqc_taskstore import (
    ImportLineError,
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
    generate_uniqc_task_id,
)
from uniqc_taskstore.cli import EXIT_OK, EXIT_REFUSED, main
from uniqc_taskstore.exchange import ImportReport, export_tasks, import_tasks
from uniqc_taskstore.jsoncodec import MAX_DEPTH, from_jsonable

HEADER = json.dumps({"uniqc_export": 1}) + "\n"


def where(store_location: dict[str, Any]) -> list[str]:
    if "url" in store_location:
        return ["--url", str(store_location["url"])]
    return ["--cache-dir", str(store_location["cache_dir"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return [value]


def nested_map(depth: int) -> Any:
    value: Any = {0: "leaf"}
    for level in range(depth - 1):
        value = {level + 1: value}
    return value


def line(task: TaskInfo, **extra: Any) -> str:
    return json.dumps({"task": task.to_dict(), **extra}) + "\n"


def plain_task() -> TaskInfo:
    return TaskInfo(generate_uniqc_task_id(), "dummy", status=TaskStatus.SUCCESS)


# -- item 9: whatever save accepts round-trips ---------------------------------------------


def test_whatever_save_accepts_is_exported_imported_and_shown_as_json(
    store: TaskStore,
    store_location: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = TaskInfo(
        generate_uniqc_task_id(),
        "dummy",
        status=TaskStatus.SUCCESS,
        result=nested(MAX_DEPTH),
        metadata={"calibration": nested_map(MAX_DEPTH - 1)},
    )
    shard = TaskShard(task.task_id, 0, "job", "dummy", 1, 0, TaskStatus.SUCCESS)
    shard.result = nested(MAX_DEPTH, 1.5)
    store.save(task, [shard])
    stored = store.get(task.task_id)  # as stored (times, name)
    assert stored is not None
    task = stored
    text = io.StringIO()
    assert export_tasks(store, text).tasks == 1
    with TaskStore(tmp_path / "copy") as copy:
        assert import_tasks(copy, io.StringIO(text.getvalue())).tasks == 1
        assert copy.get(task.task_id) == task
        assert copy.get_shards(task.task_id) == store.get_shards(task.task_id)
    exported = tmp_path / "out.jsonl"
    assert run(capsys, "export", *where(store_location), "-o", str(exported))[0] == EXIT_OK
    code, out, err = run(capsys, "show", *where(store_location), task.task_id, "--json")
    assert (code, err) == (EXIT_OK, "")
    shown = from_jsonable(json.loads(out))
    assert (shown["result"], shown["metadata"]) == (task.result, task.metadata)
    code, out, _ = run(capsys, "list", *where(store_location), "--jsonl")
    assert code == EXIT_OK
    code, out, _ = run(capsys, "shards", *where(store_location), task.task_id, "--json")
    assert code == EXIT_OK
    assert from_jsonable(json.loads(out))[0]["result"] == shard.result


# -- item 8: nothing but TaskStoreError, one CLI line ---------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["bytes", "text"])
def test_a_line_nested_200000_deep_is_an_import_line_error(tmp_path: Path, binary: bool) -> None:
    deep = HEADER + "[" * 200_000 + "]" * 200_000 + "\n"
    stream: Any = io.BytesIO(deep.encode()) if binary else io.StringIO(deep)
    with TaskStore(tmp_path / "s") as store, pytest.raises(ImportLineError) as raised:
        import_tasks(store, stream, name="deep.jsonl")
    assert (raised.value.file, raised.value.line) == ("deep.jsonl", 2)
    assert "nests too deeply" in str(raised.value)


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path: Path) -> None:
    good = [line(plain_task()) for _ in range(3)]
    data = (HEADER + "".join(good)).encode() + b"\x00\xff\xfe binary\n" + good[0].encode()
    with TaskStore(tmp_path / "s") as store:
        with pytest.raises(ImportLineError) as raised:
            import_tasks(store, io.BytesIO(data), name="mixed.jsonl")
        assert raised.value.line == 5
        assert "byte 0xff at column 2" in str(raised.value)
        assert isinstance(raised.value.report, ImportReport)
        assert raised.value.report.tasks == 3
        assert store.count() == 3
        # From a text stream the decoder reads ahead: the error is still typed.
        with pytest.raises(ImportLineError, match="not UTF-8"):
            import_tasks(store, io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize(
    "content",
    [
        HEADER.encode() + b"[" * 200_000 + b"]" * 200_000 + b"\n",
        HEADER.encode() + bytes(range(256)) + b"\n",
    ],
    ids=["nested_200000_deep", "binary_after_the_header"],
)
def test_the_cli_says_one_line_and_exits_1_for_an_unreadable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    file = tmp_path / "in.jsonl"
    file.write_bytes(content)
    code, _, err = run(capsys, "import", str(file), "--cache-dir", str(tmp_path / "dest"))
    assert code == EXIT_REFUSED
    assert err.startswith(f"uniqc-tasks: {file}, line 2: ")
    assert err.count("\n") == 1
    assert "nothing was imported" in err
    assert not (tmp_path / "dest").exists()


# -- item 11: the file and the line, what was kept, nothing created -------------------------


def test_a_bad_byte_at_the_end_of_a_valid_file_names_the_last_line_not_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [plain_task() for _ in range(3)]
    file = tmp_path / "export.jsonl"
    file.write_bytes((HEADER + "".join(line(t) for t in tasks)).encode() + b"\xff")
    dest = tmp_path / "dest"
    code, _, err = run(capsys, "import", str(file), "--cache-dir", str(dest))
    assert code == EXIT_REFUSED
    assert "not a uniqc-tasks export" not in err
    assert f"{file}, line 5: is not UTF-8 text" in err
    assert "every task of lines 2 to 4 was imported (3 added, 0 already there)" in err
    with TaskStore(dest, create=False) as store:
        assert {t.task_id for t in store.list()} == {t.task_id for t in tasks}


def test_a_bad_byte_mid_file_names_its_line_and_quotes_no_fragment_as_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [plain_task() for _ in range(400)]  # more than one read-ahead chunk
    text = HEADER + "".join(line(t) for t in tasks)
    cut = text.index(tasks[200].task_id)
    file = tmp_path / "export.jsonl"
    file.write_bytes(text[:cut].encode() + b"\xc3" + text[cut:].encode())
    code, _, err = run(capsys, "import", str(file), "--cache-dir", str(tmp_path / "dest"))
    assert code == EXIT_REFUSED
    assert f"{file}, line 202: is not UTF-8 text (byte 0xc3" in err
    assert "header" not in err
    with TaskStore(tmp_path / "dest", create=False) as store:
        assert store.count() == 200


def test_a_line_whose_rows_cannot_be_built_is_named_and_the_lines_before_it_kept(
    tmp_path: Path,
) -> None:
    good = [plain_task() for _ in range(4)]
    too_deep = plain_task()
    bad = json.dumps({"task": {**too_deep.to_dict(), "result": nested(MAX_DEPTH + 1)}}) + "\n"
    content = HEADER + "".join(line(t) for t in good[:2]) + bad + line(good[2])
    with TaskStore(tmp_path / "s") as store:
        with pytest.raises(ImportLineError) as raised:
            import_tasks(store, io.StringIO(content), batch_size=1000)
        assert raised.value.line == 4
        assert too_deep.task_id in str(raised.value)
        assert "nest more than 100 deep" in str(raised.value)
        assert "every task of lines 2 to 3 was imported (2 added" in str(raised.value)
        assert "nothing from line 4 on" in str(raised.value)
        assert {t.task_id for t in store.list()} == {good[0].task_id, good[1].task_id}


def test_a_line_the_database_refuses_is_named_and_the_lines_before_it_kept(
    tmp_path: Path,
) -> None:
    tasks = [plain_task() for _ in range(5)]
    with TaskStore(tmp_path / "s") as store:
        assert store.db_path is not None
        refused = tasks[3].task_id
    with sqlite3.connect(tmp_path / "s" / "tasks.sqlite") as raw:
        raw.execute(
            f"CREATE TRIGGER no_such_task BEFORE INSERT ON tasks WHEN NEW.task_id = '{refused}' "
            "BEGIN SELECT RAISE(ABORT, 'this database takes no such task'); END"
        )
    raw.close()
    content = HEADER + "".join(line(t) for t in tasks)
    with TaskStore(tmp_path / "s") as store:
        with pytest.raises(ImportLineError) as raised:
            import_tasks(store, io.StringIO(content))
        assert raised.value.line == 5
        assert "refused by the database" in str(raised.value)
        assert {t.task_id for t in store.list()} == {t.task_id for t in tasks[:3]}


@pytest.mark.parametrize("version", [0, -5, True, "1", 1.0, None])
def test_a_header_whose_format_is_not_a_whole_number_from_1_is_refused(
    tmp_path: Path, version: Any
) -> None:
    content = json.dumps({"uniqc_export": version}) + "\n" + line(plain_task())
    with TaskStore(tmp_path / "s") as store:
        with pytest.raises(ImportLineError, match=r"line 1: .*not an export format"):
            import_tasks(store, io.StringIO(content))
        assert store.count() == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"task_id,status\nuqt_x,success\n", HEADER.encode() + b'{"task": 5}\n'],
    ids=["empty", "a_csv", "bad_first_task_line"],
)
def test_a_failed_import_into_a_new_cache_dir_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    file = tmp_path / "in.jsonl"
    file.write_bytes(content)
    dest = tmp_path / "new" / "cache"
    code, _, err = run(capsys, "import", str(file), "--cache-dir", str(dest))
    assert code == EXIT_REFUSED
    assert err.startswith(f"uniqc-tasks: {file}, line ")
    assert not (tmp_path / "new").exists()


def test_an_import_error_is_a_task_store_error_with_the_file_and_line() -> None:
    error = ImportLineError("x.jsonl", 7, "is not a task line")
    assert isinstance(error, InvalidInputError)
    assert isinstance(error, TaskStoreError)
    assert str(error) == "x.jsonl, line 7: is not a task line"
    assert (error.file, error.line, error.field) == ("x.jsonl", 7, "x.jsonl, line 7")
