"""Commands that only read: ``list``, ``show``, ``shards``, ``find``, ``results``,
``stats`` and ``watch``. They never create a store."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import (
    ChangesExpiredError,
    CorruptRowError,
    DatabaseBusyError,
    DatabaseConnectionError,
    DatabaseError,
    ShardLayoutError,
    TaskNotFoundError,
)
from ..filters import SORT_COLUMNS, OrderBy, TaskFilter
from ..model import TaskInfo, TaskShard, TaskStatus
from ..sharding import assemble_results
from ..store import TaskStore
from ..twins import count_twins
from . import output
from .completion import complete_task_ids
from .filter_options import filter_options, skip_corrupt_option
from .options import Interrupted, common_options, open_store

DEFAULT_LIMIT = 50


LIST_COLUMNS = {
    "task": "task_id",
    "status": "status",
    "backend": "backend",
    "name": "name",
    "shots": "shots",
    "submitted": "submit_time",
    "updated": "update_time",
    "archived": "archived_at",
    "tags": "tags",
    "error": "error_message",
}
"""``--columns`` names (the table's headers, lower case) and the field each shows."""


def _columns_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    fields = {v: v for v in LIST_COLUMNS.values()}
    chosen = []
    for part in value.split(","):
        name = part.strip().lower()
        if name not in LIST_COLUMNS and name not in fields:
            raise click.BadParameter(
                f"{part.strip()!r} is not a column; choose from {', '.join(LIST_COLUMNS)}",
                ctx=ctx,
                param=param,
            )
        chosen.append(LIST_COLUMNS.get(name, name))
    return list(dict.fromkeys(chosen))


@click.command(
    "list",
    epilog="Tables show the newest 50 (-n N, or --all). --json, --jsonl, --format csv "
    "and -q print every matching task, streamed in flat memory, unless -n is given; "
    "when -n leaves tasks out, stderr says how many. Example: uniqc-tasks list "
    "--status failed --since yesterday -q | uniqc-tasks archive - --yes",
)
@filter_options
@click.option(
    "--sort",
    type=click.Choice(SORT_COLUMNS),
    default="submit_time",
    show_default=True,
    help="Order by submit or last update time.",
)
@click.option("--asc", is_flag=True, help="Oldest first instead of newest first.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help=f"Show at most this many tasks [default: {DEFAULT_LIMIT} in a table, all otherwise].",
)
@click.option("--all", "show_all", is_flag=True, help="Show every matching task (not with -n).")
@click.option("--archived", is_flag=True, help="List the archive instead of live tasks.")
@click.option("-q", "--quiet", is_flag=True, help="Print only task ids, one per line.")
@click.option(
    "--columns",
    metavar="COL[,COL...]",
    callback=_columns_option,
    help=f"Only these columns/fields, in this order: {', '.join(LIST_COLUMNS)}.",
)
@click.option("--no-pager", is_flag=True, help="Never page a long table on a terminal.")
@skip_corrupt_option
@common_options
def list_command(
    task_filter: TaskFilter,
    sort: OrderBy,
    asc: bool,
    limit: int | None,
    show_all: bool,
    archived: bool,
    quiet: bool,
    columns: list[str] | None,
    no_pager: bool,
    skip_corrupt: bool,
) -> None:
    """Tasks, newest first (without their results).

    After a table, stderr says how many were shown of how many matched.
    """
    if show_all and limit is not None:
        raise click.UsageError("--all shows every task and -n/--limit caps them; give one")
    if quiet and (output.wants_json() or columns):
        raise click.UsageError(
            "-q prints only ids; it goes without --json, --jsonl, --format and --columns"
        )
    skipped = output.CorruptCounter() if skip_corrupt else None
    everything = show_all or (limit is None and (quiet or output.wants_json()))
    shown = None if everything else (limit or DEFAULT_LIMIT)
    kind = "archived tasks" if archived else "tasks"
    with open_store(create=False) as store:
        count = store.count_archived if archived else store.count
        if shown is None:
            found = store.iter_tasks(
                task_filter,
                include_results=False,
                order_by=sort,
                descending=not asc,
                archived=archived,
                on_corrupt=skipped,
            )
            if quiet:
                for task in found:
                    output.line(task.task_id)
            elif output.wants_json():
                output.emit_stream(_summary(t, columns) for t in found)
            else:
                tasks = list(found)
                _print_tasks(tasks, sort, archived, columns, no_pager)
                output.note(f"{len(tasks):,} of {len(tasks):,} {kind}")
            if skipped is not None:
                skipped.report()
            return
        fetch = store.list_archived if archived else store.list
        tasks = fetch(
            task_filter,
            limit=shown,
            include_results=False,
            order_by=sort,
            descending=not asc,
            on_corrupt=skipped,
        )
        read = len(tasks) + (len(skipped.keys) if skipped is not None else 0)
        matched = read if read < shown else count(task_filter)
    if quiet:
        for task in tasks:
            output.line(task.task_id)
    elif output.wants_json():
        output.emit_stream(_summary(t, columns) for t in tasks)
    else:
        _print_tasks(tasks, sort, archived, columns, no_pager)
    if skipped is not None:
        skipped.report()
    left_out = matched - read
    if not (quiet or output.wants_json()):
        more = "; -n/--limit N or --all to see more" if left_out > 0 else ""
        output.note(f"{len(tasks):,} of {matched:,} {kind}{more}")
    elif left_out > 0:
        output.note(f"{left_out:,} more {kind} match; -n/--limit N or --all to see them")


def _print_tasks(
    tasks: Sequence[TaskInfo],
    sort: str,
    archived: bool,
    columns: list[str] | None,
    no_pager: bool,
) -> None:
    if columns is None:
        columns = output.task_columns(tasks, updated=sort == "update_time", archived=archived)
    output.tasks_table(tasks, columns, page=not no_pager)


@click.command("show")
@click.argument("task_id", shell_complete=complete_task_ids)
@skip_corrupt_option
@common_options
def show_command(task_id: str, skip_corrupt: bool) -> None:
    """One task in full, live or archived (absent values print as null)."""
    skipped = output.CorruptCounter() if skip_corrupt else None
    with open_store(create=False) as store:
        task = _find(store, task_id, skipped)
    if output.wants_json():
        output.emit(task.to_dict())
    else:
        output.fields(task.to_dict())


@click.command("shards")
@click.argument("task_id", shell_complete=complete_task_ids)
@common_options
def shards_command(task_id: str) -> None:
    """A task's platform jobs, in shard order."""
    with open_store(create=False) as store:
        task = _find(store, task_id)
        shards = (
            store.get_shards(task_id)
            if task.archived_at is None
            else store.get_archived_shards(task_id)
        )
    if output.wants_json():
        output.emit([s.to_dict() for s in shards])
    else:
        output.shards_table(shards)


def _find(store: TaskStore, task_id: str, skipped: output.CorruptCounter | None = None) -> TaskInfo:
    task = None
    for read in (store.get, store.get_archived):
        try:
            task = read(task_id)
        except CorruptRowError as exc:
            if skipped is None:
                raise
            skipped(exc)
        if task is not None:
            break
    if task is None and skipped is not None and skipped.keys:
        skipped.report()
        raise TaskNotFoundError(
            f"task {task_id!r} cannot be read; `uniqc-tasks doctor` says what is wrong with "
            f"it, `uniqc-tasks delete {task_id}` removes it"
        )
    if task is None:
        raise TaskNotFoundError(
            f"no task {task_id!r} in {store.location}; `uniqc-tasks list` shows the ids there"
        )
    return task


def _summary(task: TaskInfo, columns: list[str] | None = None) -> dict[str, Any]:
    data = task.to_dict()
    del data["result"]
    return data if columns is None else {c: data[c] for c in columns}


@click.command("find")
@click.argument("platform_job_id", metavar="PLATFORM_JOB_ID")
@click.option("--backend", help="Only jobs on this platform or device (platforms reuse ids).")
@common_options
def find_command(platform_job_id: str, backend: str | None) -> None:
    """Which task owns a platform job id, live or archived.

    When several tasks have a job with this id (platforms reuse them), the newest
    submitted is shown; --backend narrows the search.
    """
    with open_store(create=False) as store:
        shard = store.get_shard_by_platform_id(platform_job_id, backend=backend)
        task = store.get(shard.uniqc_task_id) if shard is not None else None
        if shard is None:
            shard = _archived_shard(store, platform_job_id, backend)
            task = store.get_archived(shard.uniqc_task_id) if shard is not None else None
        if shard is None or task is None:
            on = f" on {backend}" if backend else ""
            raise TaskNotFoundError(
                f"no task has platform job {platform_job_id!r}{on} in {store.location}"
            )
    found = {
        "task_id": task.task_id,
        "name": task.name,
        "task_status": task.status.value,
        "archived": task.archived_at is not None,
        "shard_index": shard.shard_index,
        "platform_task_id": shard.platform_task_id,
        "shard_status": shard.status.value,
        "backend": shard.backend,
        "circuits": f"{shard.sub_index_offset}..{shard.sub_index_offset + shard.circuit_count - 1}",
    }
    if output.wants_json():
        output.emit(found)
    else:
        output.fields({k: v for k, v in found.items() if v is not None})


def _archived_shard(
    store: TaskStore, platform_job_id: str, backend: str | None
) -> TaskShard | None:
    """The archive's shard of a platform job, chosen as the live lookup chooses."""
    candidates = [
        shard
        for _, shards in store.iter_tasks(
            archived=True, search=platform_job_id, include_shards=True, include_results=False
        )
        for shard in shards
        if shard.platform_task_id == platform_job_id
        and (backend is None or shard.backend == backend or shard.backend.startswith(backend + ":"))
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.submit_time, s.uniqc_task_id, s.shard_index))


@click.command("results")
@click.argument("task_id", metavar="ID")
@common_options
def results_command(task_id: str) -> None:
    """A task's per-circuit results in submission order (live or archived).

    Counts (a dict of outcome to count) show as outcome, count and probability per
    circuit; other results as JSON. Circuits whose platform job has no result yet
    are named on stderr. --format json|jsonl|csv for scripts.
    """
    with open_store(create=False) as store:
        task = _find(store, task_id)
        shards = (
            store.get_shards(task_id)
            if task.archived_at is None
            else store.get_archived_shards(task_id)
        )
    results, missing = per_circuit_results(task, shards)
    fmt = output.output_format()
    if fmt == "json":
        output.emit(
            {
                "task_id": task.task_id,
                "status": task.status.value,
                "circuits": len(results),
                "missing": missing,
                "results": results,
            }
        )
    elif fmt == "jsonl":
        output.emit([{"circuit": i, "result": r} for i, r in enumerate(results)])
    elif fmt == "csv":
        output.emit(_result_rows(results))
    else:
        output.results_table(_result_rows(results))
    if missing:
        output.note(f"{len(missing):,} of {len(results):,} circuits have no result:")
        for shard in shards:
            if shard.result is None:
                end = shard.sub_index_offset + shard.circuit_count - 1
                circuits = _ranges(list(range(shard.sub_index_offset, end + 1)))
                why = "no result yet" if not shard.status.is_terminal else "no result"
                error = f": {shard.error_message}" if shard.error_message else ""
                label = "circuit" if shard.circuit_count == 1 else "circuits"
                output.note(
                    f"  {label} {circuits}: shard {shard.shard_index} is "
                    f"{shard.status.value}, {why}{error}"
                )
    elif not results:
        output.note(f"no results yet (task is {task.status.value})")


def per_circuit_results(task: TaskInfo, shards: Sequence[TaskShard]) -> tuple[list[Any], list[int]]:
    """The task's per-circuit results and the circuits that have none yet.

    The shards are the truth (``assemble_results``); a task whose shards do not fit
    together as a batch, as a task re-keyed from schema 4 or older (one shard of one
    circuit while its own result lists several), falls back to its own result."""
    if shards:
        try:
            results = assemble_results(shards, allow_missing=True)
        except ShardLayoutError as exc:
            if exc.field == "circuit_count":  # too many circuits to list: say so
                raise
        else:
            missing = [
                circuit
                for shard in shards
                if shard.result is None
                for circuit in range(
                    shard.sub_index_offset, shard.sub_index_offset + shard.circuit_count
                )
            ]
            return results, sorted(missing)
    if task.result is None:
        return [], []
    return (list(task.result) if isinstance(task.result, list) else [task.result]), []


def _is_counts(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()
        )
        and sum(value.values()) > 0
    )


def _result_rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per outcome of a counts result, one per other result (as JSON), one
    with nothing for a circuit without a result."""
    rows: list[dict[str, Any]] = []
    for circuit, result in enumerate(results):
        if _is_counts(result):
            total = sum(result.values())
            for outcome in sorted(result):
                rows.append(
                    {
                        "circuit": circuit,
                        "outcome": outcome,
                        "count": result[outcome],
                        "probability": result[outcome] / total,
                    }
                )
        else:
            rows.append({"circuit": circuit, "result": result})
    return rows


def _ranges(numbers: Sequence[int]) -> str:
    """``0..2, 5, 7..9``."""
    parts: list[str] = []
    start = previous = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == previous + 1:
            previous = n
            continue
        parts.append(str(start) if start == previous else f"{start}..{previous}")
        if n is not None:
            start = previous = n
    return ", ".join(parts)


@click.command("stats")
@filter_options
@click.option("--archived", is_flag=True, help="Count the archive instead of live tasks.")
@common_options
def stats_command(task_filter: TaskFilter, archived: bool) -> None:
    """Counts by status and backend, the oldest unfinished task, the store's size."""
    unfinished = [s for s in (task_filter.statuses or TaskStatus) if not s.is_terminal]
    with open_store(create=False) as store:
        by_status = store.count_by("status", task_filter, archived=archived)
        by_backend = store.count_by("backend", task_filter, archived=archived)
        other_side = (store.count if archived else store.count_archived)(task_filter)
        twins = count_twins(store, task_filter, archived=archived)
        oldest = (
            store.summaries(
                replace(task_filter, status=unfinished),
                limit=1,
                order_by="submit_time",
                descending=False,
            )
            if unfinished and not archived
            else []
        )
        size = store.storage_bytes()
    total = sum(by_status.values())
    statuses: dict[str, int] = {
        s.value: by_status[s.value] for s in TaskStatus if s.value in by_status
    }
    # Rows whose status is none of ours cannot be read as tasks: counted, not hidden.
    unreadable = total - sum(statuses.values())
    backends = dict(sorted(by_backend.items(), key=lambda item: (-item[1], item[0])))
    first = oldest[0] if oldest else None
    if output.wants_json():
        output.emit(
            {
                "tasks": total,
                "archive": archived,
                "by_status": statuses,
                "unreadable": unreadable,
                "by_backend": backends,
                "live_tasks": other_side if archived else total,
                "archived_tasks": total if archived else other_side,
                "also_on_the_other_side": twins,
                "oldest_unfinished": (
                    None
                    if first is None
                    else {
                        "task_id": first.task_id,
                        "status": first.status.value,
                        "backend": first.backend,
                        "submit_time": first.submit_time,
                    }
                ),
                "store_bytes": size,
            }
        )
        return
    kind, other = ("archived tasks", "live") if archived else ("tasks", "archived")
    both = f"; {twins:,} of these ids are {other} too" if twins else ""
    output.line(f"{total:,} {kind} ({other}: {other_side:,}{both})")
    output.line()
    output.bar_table("STATUS", statuses | ({"unreadable": unreadable} if unreadable else {}), total)
    output.line()
    output.bar_table("BACKEND", backends, total)
    output.line()
    if first is not None:
        output.line(
            f"oldest unfinished: {first.task_id} {first.status.value} on {first.backend}, "
            f"submitted {first.submit_time[:19]} UTC ({_ago(first.submit_time)} ago)"
        )
    elif not archived:
        output.line("oldest unfinished: none")
    output.line(f"store size: {_size(size)}")
    if unreadable:
        output.note(
            f"uniqc-tasks: {unreadable:,} {'row has' if unreadable == 1 else 'rows have'} a "
            "status that cannot be read; `uniqc-tasks doctor` names them"
        )


def _ago(timestamp: str) -> str:
    seconds = max(0, int((datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _size(size: int | None) -> str:
    if size is None:
        return "unknown (in memory)"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            shown = f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            return f"{shown} ({size:,} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


@click.command("watch")
@click.argument("task_ids", metavar="[ID...]", nargs=-1)
@filter_options
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds between looks.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Watch at most this many of the matching tasks (oldest submitted first).",
)
@common_options
def watch_command(
    task_ids: tuple[str, ...], task_filter: TaskFilter, interval: float, limit: int
) -> None:
    """Follow tasks until every one has finished (or Ctrl-C).

    Watches the IDs given, or else the tasks matching the filters when it starts
    (without filters: every pending or running task). On a terminal it shows a
    table that updates in place; otherwise it prints each task's status once, then a
    line `ID OLD -> NEW` per change (--jsonl: one JSON object per status seen).
    Exits 0 when all have finished, 130 on Ctrl-C.
    """
    if task_ids and task_filter != TaskFilter():
        raise click.UsageError("give task ids or filters, not both")
    if output.output_format() in ("json", "csv"):
        raise click.UsageError(
            "watch prints a stream of changes, not one document; use --jsonl for one JSON "
            "object per change"
        )
    with open_store(create=False) as store:
        if task_ids:
            ids = list(dict.fromkeys(task_ids))
            for task_id in ids:
                _find(store, task_id)
        else:
            chosen = task_filter if task_filter != TaskFilter() else TaskFilter(status=_UNFINISHED)
            ids = [
                s.task_id
                for s in store.summaries(
                    chosen, limit=limit, order_by="submit_time", descending=False
                )
            ]
            if len(ids) == limit:
                matched = store.count(chosen)
                if matched > limit:
                    output.note(
                        f"watching the oldest {limit:,} of {matched:,} matching tasks; "
                        "--limit N to watch more"
                    )
        if not ids:
            output.note("nothing to watch: no task matches")
            return
        watcher = _Watcher(store, ids)
        try:
            if sys.stdout.isatty() and not output.wants_json():
                output.live_watch(watcher.look, watcher.rows, watcher.caption, interval)
            else:
                _watch_plainly(watcher, interval)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; {watcher.finished():,} of {len(ids):,} watched tasks had finished"
            ) from None


_UNFINISHED = [TaskStatus.PENDING, TaskStatus.RUNNING]
_GONE = "gone"
"""The status shown for a watched task that was deleted meanwhile (it counts as finished)."""


class _Watcher:
    """The watched tasks' latest statuses, kept up to date from the change feed: a look
    re-reads only the watched tasks the feed names since the last one, and piped,
    :meth:`wait` returns as soon as a change commits. Where the feed cannot be read
    (:meth:`_feed_unavailable`) it polls instead: every look re-reads every task."""

    def __init__(self, store: TaskStore, ids: list[str]) -> None:
        self.store = store
        self.ids = ids
        self.tasks: dict[str, TaskInfo | None] = {}
        # The feed's position before the first read: a change committed after it is
        # seen by the next look, so re-reading only the tasks the feed names misses none.
        self.token: str | None = self._fresh_token()
        self._read(ids)

    def _fresh_token(self) -> str | None:
        try:
            return self.store.changes().token
        except DatabaseError as exc:
            if _feed_unavailable(exc):
                return None  # polling: every look reads every watched task
            raise

    def look(self) -> dict[str, tuple[str, str]]:
        """Read again the watched tasks the change feed names since the last look (all of
        them if the feed's retention passed the position, or when polling); return
        ``id: (old, new)`` for each status that changed."""
        changed = self._changed()
        return self._read([task_id for task_id in self.ids if task_id in changed])

    def _changed(self) -> set[str]:
        """The watched tasks that may have changed since the last look."""
        watched = set(self.ids)
        if self.token is None:
            return watched
        changed: set[str] = set()
        try:
            while True:
                page = self.store.changes(self.token, limit=1000)
                changed.update(c.task_id for c in page if c.task_id in watched)
                self.token = page.token
                if not page.more:
                    return changed
        except ChangesExpiredError:
            # Retention (or clear_all) passed our position: start again from now, and
            # read everything once, which sees whatever the lost changes did.
            self.token = self._fresh_token()
        except DatabaseError as exc:
            if not _feed_unavailable(exc):
                raise
            self.token = None
        return watched

    def wait(self, interval: float) -> None:
        """Until something changes in the store, or ``interval`` seconds at most."""
        if self.token is None:
            time.sleep(interval)
            return
        try:
            self.store.wait_for_changes(self.token, min(interval, 86_400.0))
        except ChangesExpiredError:
            return  # the next look reads every watched task again
        except DatabaseError as exc:
            if not _feed_unavailable(exc):
                raise
            self.token = None  # the next look reads every watched task again

    def _read(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        changes = {}
        for task_id in ids:
            before = self.tasks.get(task_id)
            now = self.store.get(task_id) or self.store.get_archived(task_id)
            if task_id in self.tasks and _status(before) != _status(now):
                changes[task_id] = (_status(before), _status(now))
            self.tasks[task_id] = now
        return changes

    def finished(self) -> int:
        return sum(1 for t in self.tasks.values() if t is None or t.status.is_terminal)

    def done(self) -> bool:
        return self.finished() == len(self.ids)

    def rows(self) -> list[list[str]]:
        return [
            [
                task_id,
                _status(task),
                task.backend if task else "-",
                (task.name or "-") if task else "-",
                task.update_time[:19] if task else "-",
            ]
            for task_id, task in self.tasks.items()
        ]

    def caption(self) -> str | None:
        if self.done():
            return f"all {len(self.ids):,} finished"
        return f"{self.finished():,} of {len(self.ids):,} finished; Ctrl-C to stop"


def _feed_unavailable(exc: DatabaseError) -> bool:
    """Whether ``exc`` says the change feed cannot be read here (a login not allowed to
    read the change log, a log table gone) rather than that the database is down or
    busy, which every other read would meet as well."""
    return not isinstance(exc, (DatabaseConnectionError, DatabaseBusyError))


def _status(task: TaskInfo | None) -> str:
    return _GONE if task is None else task.status.value


def _watch_plainly(watcher: _Watcher, interval: float) -> None:
    for task_id, task in watcher.tasks.items():
        _said(task_id, None, _status(task))
    output.flush()
    while not watcher.done():
        watcher.wait(interval)
        for task_id, (old, new) in watcher.look().items():
            _said(task_id, old, new)
        output.flush()


def _said(task_id: str, old: str | None, new: str) -> None:
    if output.wants_json():
        output.emit({"task_id": task_id, "status": new, "previous": old})
    elif old is None:
        output.line(f"{task_id}  {new}")
    else:
        output.line(f"{task_id}  {old} -> {new}")


COMMANDS = (
    list_command,
    show_command,
    shards_command,
    find_command,
    results_command,
    stats_command,
    watch_command,
)
