"""List pages and summaries in one statement and one pass over the driver's rows.

A page (``list``, ``list_page``, ``summaries``, live or archived) is one ``SELECT``: the
filtered, sorted, limited task rows as a subquery, joined to their tags (a task with
``k`` tags is ``k`` consecutive rows). Its statement is built and compiled once per
filter (:meth:`Database.prepared_as`, the filter's values as constants; the limit,
offset and keyset position as parameters) and run like the point reads
(:meth:`Database.select_raw`): on a pooled driver connection, outside any transaction
(one statement is one snapshot), one round trip on every database.

The driver's rows are mapped here without SQLAlchemy's result machinery. Each value is
converted by its column type's own result processing, except where that processing is
known to return the value as it is or to do one fixed thing: text ids and timestamps
(every database's ``str``), UTC timestamps the servers hand over as naive ``datetime``
(their canonical text in one C call), MariaDB's binary ids (UTF-8). A row as the store
writes it then becomes a task in one pass (:func:`~uniqc_taskstore.statements.task_from_row`'s
sound path); anything else (legacy text, a corrupt value) takes the checked path, so both
give what the column types and :func:`~uniqc_taskstore.statements.task_from_row` give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .column_types import IdText, Timestamp
from .errors import CorruptRowError
from .jsoncodec import decode_json
from .model import TaskInfo, TaskStatus, TaskSummary, coerce_status
from .statements import log_corrupt_row, task_from_row
from .timestamps import CANONICAL_FORM, is_canonical_timestamp

TAG_KEY = "uniqc_tag_key"
TAG_VALUE = "uniqc_tag_value"
"""The joined tag columns of a page's rows (None, None: a task without tags)."""

Convert = Callable[[Any], Any]
Group = tuple[Sequence[Any], dict[str, Any]]
"""A task's first row in a page, and its tags."""


def id_value(process: Convert | None) -> Convert | None:
    """:class:`IdText`'s result processing: text as it is, MariaDB's bytes as UTF-8."""
    if process is None:
        return None

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str or value is None:
            return value
        if kind is bytes:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return process(value)

    return convert


def time_value(process: Convert | None) -> Convert | None:
    """:class:`Timestamp`'s result processing: text as it is, a server's naive UTC
    ``datetime`` as its canonical text (what ``format_timestamp`` writes for it)."""
    if process is None:
        return None

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str or value is None:
            return value
        if kind is datetime and value.tzinfo is None:
            return value.isoformat(timespec="microseconds") + "+00:00"
        return process(value)

    return convert


def converters(types: Sequence[Any], processors: Sequence[Convert | None]) -> list[Convert | None]:
    """One converter per column (None: the value as it is), equal to ``processors``
    (the column types' result processing) for every value."""
    found: list[Convert | None] = []
    for type_, process in zip(types, processors, strict=True):
        if isinstance(type_, IdText):
            found.append(id_value(process))
        elif isinstance(type_, Timestamp):
            found.append(time_value(process))
        else:
            found.append(process)
    return found


class PageRows:
    """How to map the rows of one compiled page statement (its column ``keys``, their
    ``types`` and result ``processors``)."""

    def __init__(
        self, keys: Sequence[str], types: Sequence[Any], processors: Sequence[Convert | None]
    ) -> None:
        self.keys = list(keys)
        self.task_keys = [k for k in self.keys if k not in (TAG_KEY, TAG_VALUE)]
        self._id = self.keys.index("task_id")
        self._tag_key = self.keys.index(TAG_KEY)
        self._tag_value = self.keys.index(TAG_VALUE)
        self._task_columns = [i for i, k in enumerate(self.keys) if k in self.task_keys]
        convert = converters(types, processors)
        self._convert = [(i, c) for i, c in enumerate(convert) if c is not None]
        self._tag_convert = (convert[self._tag_key], convert[self._tag_value])
        self._fast_task: Callable[[Sequence[Any]], TaskInfo | None] | None = None
        self._fast_summary: Callable[[Sequence[Any], dict[str, Any]], TaskSummary | None] | None
        self._fast_summary = None

    def converted(self, row: Sequence[Any]) -> dict[str, Any]:
        """The task columns of ``row``, converted as the column types convert them."""
        values = list(row)
        for i, convert in self._convert:
            values[i] = convert(values[i])
        return {key: values[i] for key, i in zip(self.task_keys, self._task_columns, strict=True)}

    def groups(self, rows: Sequence[Sequence[Any]]) -> list[Group]:
        """Each task's first row and its tags (in key order), in page order."""
        found: list[Group] = []
        i_id, i_key, i_value = self._id, self._tag_key, self._tag_value
        key_of, value_of = self._tag_convert
        last: Any = _NOTHING
        tags: dict[str, Any] = {}
        for row in rows:
            task_id = row[i_id]
            if task_id != last or type(task_id) is not type(last):
                last = task_id
                tags = {}
                found.append((row, tags))
            key = row[i_key]
            if key is not None:
                value = row[i_value]
                if key_of is not None:
                    key, value = key_of(key), value_of(value)  # type: ignore[misc]
                tags[key] = value
        return found

    def tasks(
        self, groups: Sequence[Group], on_corrupt: Callable[[CorruptRowError], object] | None
    ) -> tuple[list[TaskInfo], dict[str, Any] | None]:
        """The tasks of :meth:`groups` with their tags, and the last one's columns
        (converted; None for none). A row that cannot be read raises
        :class:`CorruptRowError`, or, with ``on_corrupt``, is skipped and handed to it."""
        found: list[TaskInfo] = []
        fast = self._fast_task
        if fast is None:
            fast = self._fast_task = sound_task_reader(self.keys)
        for row, tags in groups:
            task = fast(row)
            if task is None:
                try:
                    task = task_from_row(self.converted(row))
                except CorruptRowError as exc:
                    log_corrupt_row(exc, skipped=on_corrupt is not None)
                    if on_corrupt is None:
                        raise
                    on_corrupt(exc)
                    continue
            task.tags = tags
            found.append(task)
        return found, self.converted(groups[-1][0]) if groups else None

    def last_position(self, groups: Sequence[Group], order_by: str) -> tuple[str, str] | None:
        """The keyset position after ``groups``: the last task's ``order_by`` value as
        stored and its id; past a last task whose value cannot be read at all (a BLOB),
        the last one whose value can. None when no task's can."""
        at = self.keys.index(order_by)
        convert = dict(self._convert)
        for row, _ in reversed(groups):
            value = row[at] if at not in convert else convert[at](row[at])
            if isinstance(value, str):
                task_id = row[self._id]
                if self._id in convert:
                    task_id = convert[self._id](task_id)
                return value, task_id
        return None

    def summaries(self, groups: Sequence[Group]) -> tuple[list[TaskSummary], list[TaskSummary]]:
        """The summaries of :meth:`groups` with their tags, and those of them that took
        the checked path (the only ones whose times may not be canonical)."""
        found = []
        checked = []
        fast = self._fast_summary
        if fast is None:
            fast = self._fast_summary = plain_summary_reader(self.keys)
        for row, tags in groups:
            summary = fast(row, tags)
            if summary is None:
                summary = self.checked_summary(row, tags)
                checked.append(summary)
            found.append(summary)
        return found, checked

    def checked_summary(self, row: Sequence[Any], tags: dict[str, Any]) -> TaskSummary:
        """The summary of ``row`` through the column types' conversions."""
        values = self.converted(row)
        return TaskSummary(
            task_id=values["task_id"],
            name=values["name"],
            backend=values["backend"],
            status=coerce_status(values["status"]),
            shots=values["shots"],
            submit_time=values["submit_time"],
            update_time=values["update_time"],
            tags=tags,
            shard_count=int(values["shard_count"]),
            has_result=bool(values["has_result"]),
            error_message=values["error_message"],
            archived_at=values.get("archived_at"),
        )


_NOTHING = object()
_STATUSES = {status.value: status for status in TaskStatus}


def _id_text(value: Any) -> str | None:
    """An id column's value read as text, if it is text (or MariaDB's UTF-8 bytes)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bytes:
        try:
            return value.decode("utf-8")  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            return None
    return None


def _real_instant(text: str) -> bool:
    """Whether canonical-form ``text`` names a real instant (no 13th month)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _canonical_time(value: Any) -> str | None:
    """A timestamp column's value as canonical text, if it reads as such unchanged."""
    kind = type(value)
    if kind is datetime:
        if value.tzinfo is None:  # a server's UTC instant
            return value.isoformat(timespec="microseconds") + "+00:00"  # type: ignore[no-any-return]
        return None
    if kind is str and is_canonical_timestamp(value):
        return value  # type: ignore[no-any-return]
    return None


def sound_task_reader(keys: Sequence[str]) -> Callable[[Sequence[Any]], TaskInfo | None]:
    """What maps a driver row of a page (columns ``keys``) to its task in one pass when
    every value is as the store writes it, else returns None (then the row takes the
    checked path: :meth:`PageRows.converted`, then ``task_from_row``). For every row it
    accepts it gives what that path gives."""
    at = {key: i for i, key in enumerate(keys)}
    i_id, i_backend, i_status, i_shots = (at[k] for k in ("task_id", "backend", "status", "shots"))
    i_submit, i_update, i_metadata = at["submit_time"], at["update_time"], at["metadata_json"]
    i_error, i_name, i_platform = at["error_message"], at["name"], at["platform"]
    i_result, i_archived = at.get("result_json"), at.get("archived_at")
    statuses = _STATUSES
    canonical, valid = CANONICAL_FORM.fullmatch, _real_instant

    def read(row: Sequence[Any]) -> TaskInfo | None:
        task_id = row[i_id]
        if type(task_id) is not str:
            task_id = _id_text(task_id)
        backend = row[i_backend]
        if type(backend) is not str:
            backend = _id_text(backend)
        status = statuses.get(row[i_status]) if type(row[i_status]) is str else None
        shots = row[i_shots]
        error = row[i_error]
        if (
            task_id is None
            or backend is None
            or status is None
            or type(shots) is not int
            or (error is not None and type(error) is not str)
        ):
            return None
        name = row[i_name]
        if name is not None and type(name) is not str:
            name = _id_text(name)
            if name is None:
                return None
        platform = row[i_platform]
        if platform is not None and type(platform) is not str and _id_text(platform) is None:
            return None
        raw_submit, raw_update = row[i_submit], row[i_update]
        submit_time = (
            raw_submit
            if type(raw_submit) is str and canonical(raw_submit) and valid(raw_submit)
            else _canonical_time(raw_submit)
        )
        if raw_update is raw_submit:
            update_time = submit_time
        elif type(raw_update) is str and canonical(raw_update) and valid(raw_update):
            update_time = raw_update
        else:
            update_time = _canonical_time(raw_update)
        if submit_time is None or update_time is None:
            return None
        archived_at = None
        if i_archived is not None and row[i_archived] is not None:
            archived_at = _canonical_time(row[i_archived])
            if archived_at is None:
                return None
        try:
            metadata = row[i_metadata]
            if metadata is not None:
                if type(metadata) is not str:
                    return None
                metadata = decode_json(metadata)
                if type(metadata) is not dict:
                    return None
            result = None if i_result is None else row[i_result]
            if result is not None:
                if type(result) is not str:
                    return None
                result = decode_json(result)
        except (ValueError, TypeError, RecursionError):
            return None
        return TaskInfo(
            task_id,
            backend,
            status,
            result,
            shots,
            submit_time,
            update_time,
            {} if metadata is None else metadata,
            error,
            archived_at,
            name,
        )

    return read


def plain_summary_reader(
    keys: Sequence[str],
) -> Callable[[Sequence[Any], dict[str, Any]], TaskSummary | None]:
    """What maps a driver row of a summary page to its summary in one pass when its ids
    and status need no conversion beyond the shortcuts of :func:`converters` and its
    times are canonical, else returns None (then :meth:`PageRows.converted` and the same
    construction, and the caller's repair of legacy times)."""
    at = {key: i for i, key in enumerate(keys)}
    i_id, i_name, i_backend, i_status = (at[k] for k in ("task_id", "name", "backend", "status"))
    i_shots, i_submit, i_update = at["shots"], at["submit_time"], at["update_time"]
    i_error, i_count, i_result = at["error_message"], at["shard_count"], at["has_result"]
    i_archived = at.get("archived_at")
    statuses = _STATUSES

    def time(value: Any) -> Any:
        kind = type(value)
        if value is None:
            return value
        if kind is str:
            return value if is_canonical_timestamp(value) else _NOTHING
        if kind is datetime and value.tzinfo is None:
            return value.isoformat(timespec="microseconds") + "+00:00"
        return _NOTHING

    def read(row: Sequence[Any], tags: dict[str, Any]) -> TaskSummary | None:
        task_id, backend, name = _id_text(row[i_id]), _id_text(row[i_backend]), row[i_name]
        if name is not None:
            name = _id_text(name)
            if name is None:
                return None
        status = statuses.get(row[i_status]) if type(row[i_status]) is str else None
        submit_time, update_time = time(row[i_submit]), time(row[i_update])
        archived_at = None if i_archived is None else time(row[i_archived])
        count = row[i_count]
        if (
            task_id is None
            or backend is None
            or status is None
            or submit_time is _NOTHING
            or update_time is _NOTHING
            or archived_at is _NOTHING
            or type(count) is not int
        ):
            return None
        return TaskSummary(
            task_id,
            name,
            backend,
            status,
            row[i_shots],
            submit_time,
            update_time,
            tags,
            count,
            bool(row[i_result]),
            row[i_error],
            archived_at,
        )

    return read
