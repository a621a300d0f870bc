"""``uniqc-tasks``: look inside a task store, or run the demo adapter against it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .demo import DummyAdapter
from .errors import TaskStoreError
from .model import TaskInfo, TaskShard, TaskStatus
from .store import TaskStore
from .transfer import copy_tasks


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uniqc-tasks`` console script."""
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "copy", False):
            return _copy(args)
        with _open_store(args) as store:
            return int(args.run(store, args))
    except TaskStoreError as exc:
        print(f"uniqc-tasks: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uniqc-tasks", description="Inspect the uniqc task store, or run a demo against it."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", help="directory of tasks.sqlite (default: ~/.uniqc/cache)")
    where.add_argument("--url", help="SQLAlchemy URL of a server database instead")
    parser.add_argument("--schema", help="PostgreSQL schema holding the tables")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="submit a batch through a dummy adapter and poll it")
    demo.add_argument("--circuits", type=int, default=7)
    demo.add_argument("--max-batch", type=int, default=3, help="adapter's max_native_batch_size")
    demo.set_defaults(run=_demo)

    listing = sub.add_parser("list", help="tasks, newest first")
    listing.add_argument("--status", choices=[s.value for s in TaskStatus], action="append")
    listing.add_argument("--backend", help="platform or device, e.g. originq or originq:WK_C180")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--archived", action="store_true", help="list the archive instead")
    listing.set_defaults(run=_list)

    show = sub.add_parser("show", help="one task in full")
    show.add_argument("task_id")
    show.set_defaults(run=_show)

    shards = sub.add_parser("shards", help="a task's platform jobs")
    shards.add_argument("task_id")
    shards.set_defaults(run=_shards)

    copy = sub.add_parser(
        "copy",
        help="copy every task (live and archived) from one store to another",
        description="SOURCE and DEST are cache directories or SQLAlchemy URLs. Tasks the "
        "destination already has are skipped, so an interrupted copy is finished by "
        "running it again.",
    )
    copy.add_argument("source")
    copy.add_argument("dest")
    copy.add_argument("--source-schema", help="PostgreSQL schema of SOURCE")
    copy.add_argument("--dest-schema", help="PostgreSQL schema of DEST")
    copy.add_argument("--batch-size", type=int, default=1000)
    copy.set_defaults(run=None, copy=True)

    for command in (demo, listing, show, shards, copy):
        command.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _copy(args: argparse.Namespace) -> int:
    with (
        _store_at(args.source, args.source_schema) as source,
        _store_at(args.dest, args.dest_schema) as dest,
    ):
        bar = _ProgressBar() if sys.stderr.isatty() and not args.json else None
        report = copy_tasks(source, dest, batch_size=args.batch_size, progress=bar)
        if bar is not None:
            bar.finish()
    if args.json:
        _print_json(asdict(report))
        return 0
    print(f"Copied from {source.location} to {dest.location} in {report.seconds:.1f} s")
    _print_table(
        ["TABLE", "COPIED", "SOURCE", "DEST"],
        [
            [
                name,
                f"{getattr(report.copied, name):,}",
                f"{getattr(report.source, name):,}",
                f"{getattr(report.destination, name):,}",
            ]
            for name in ("tasks", "shards", "archived_tasks", "archived_shards")
        ],
    )
    return 0


def _store_at(where: str, schema: str | None) -> TaskStore:
    if "://" in where:
        return TaskStore.from_url(where, schema=schema)
    return TaskStore(where)


class _ProgressBar:
    """A one-line progress bar on stderr, for terminals only."""

    def __init__(self, width: int = 40) -> None:
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // total if total else self.width
        sys.stderr.write(
            f"\r[{'#' * filled}{' ' * (self.width - filled)}] {done:,}/{total:,} tasks"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def _open_store(args: argparse.Namespace) -> TaskStore:
    if args.url:
        return TaskStore.from_url(args.url, schema=args.schema)
    return TaskStore(args.cache_dir)


def _demo(store: TaskStore, args: argparse.Namespace) -> int:
    circuits = [f"OPENQASM 2.0; // demo circuit {n}" for n in range(args.circuits)]
    adapter = DummyAdapter(store, max_native_batch_size=args.max_batch)
    task_id = adapter.submit(circuits, shots=1000)
    rounds = 0
    while not adapter.poll(task_id).is_terminal:
        rounds += 1
    task = store.get(task_id)
    assert task is not None
    shards = store.get_shards(task_id)
    results = adapter.results(task_id)
    if args.json:
        _print_json(
            {
                "task": task.to_dict(),
                "shards": [s.to_dict() for s in shards],
                "results": results,
            }
        )
        return 0
    print(f"Store: {store.location}")
    print(
        f"Submitted {len(circuits)} circuits as task {task_id} on {task.backend}, "
        f"cut into {len(shards)} platform jobs of at most {args.max_batch}; "
        f"finished after {rounds + 1} polls.\n"
    )
    _print_tasks(store.list(limit=10, include_results=False))
    print()
    _print_shards(shards)
    print("\nPer-circuit results in submission order:")
    for index, (circuit, counts) in enumerate(zip(circuits, results, strict=True)):
        print(f"  [{index}] {circuit}  ->  {counts}")
    return 0


def _list(store: TaskStore, args: argparse.Namespace) -> int:
    fetch = store.list_archived if args.archived else store.list
    tasks = fetch(status=args.status, backend=args.backend, limit=args.limit, include_results=False)
    if args.json:
        _print_json([_summary(t) for t in tasks])
    else:
        _print_tasks(tasks)
    return 0


def _show(store: TaskStore, args: argparse.Namespace) -> int:
    task = store.get(args.task_id) or store.get_archived(args.task_id)
    if task is None:
        print(f"uniqc-tasks: no task {args.task_id!r} in {store.location}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(task.to_dict())
        return 0
    for name, value in task.to_dict().items():
        if name in ("result", "metadata"):
            value = json.dumps(value, default=repr)
        print(f"{name:>13}: {value}")
    return 0


def _shards(store: TaskStore, args: argparse.Namespace) -> int:
    if store.get(args.task_id) is None and store.get_archived(args.task_id) is None:
        print(f"uniqc-tasks: no task {args.task_id!r} in {store.location}", file=sys.stderr)
        return 1
    shards = store.get_shards(args.task_id) or store.get_archived_shards(args.task_id)
    if args.json:
        _print_json([s.to_dict() for s in shards])
    else:
        _print_shards(shards)
    return 0


def _summary(task: TaskInfo) -> dict[str, Any]:
    data = task.to_dict()
    del data["result"]
    return data


def _print_tasks(tasks: Sequence[TaskInfo]) -> None:
    _print_table(
        ["TASK", "STATUS", "BACKEND", "SHOTS", "SUBMITTED (UTC)"],
        [[t.task_id, t.status.value, t.backend, str(t.shots), t.submit_time[:19]] for t in tasks],
    )


def _print_shards(shards: Sequence[TaskShard]) -> None:
    _print_table(
        ["#", "PLATFORM JOB", "STATUS", "CIRCUITS", "BACKEND"],
        [
            [
                str(s.shard_index),
                s.platform_task_id,
                s.status.value,
                f"{s.sub_index_offset}..{s.sub_index_offset + s.circuit_count - 1}",
                s.backend,
            ]
            for s in shards
        ],
    )


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=repr)
    print()


if __name__ == "__main__":
    raise SystemExit(main())
