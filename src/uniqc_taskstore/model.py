"""Tasks, shards, statuses and the rules over them. Imports nothing from SQLAlchemy."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Self

from .errors import InvalidInputError
from .timestamps import parse_timestamp, utc_now

UNIQC_TASK_ID_PREFIX = "uqt_"
MAX_ID_LENGTH = 255
"""Longest task, platform or backend id accepted, the same on every database."""

MAX_COUNT = 2**31 - 1
"""Largest shots, index, offset or circuit count: a 32-bit integer on every database."""

MAX_ROWS = 2**62
"""Largest ``limit`` or ``offset``: a 64-bit integer on every database."""

_UNIQC_TASK_ID = re.compile(r"uqt_[0-9a-f]{32}")


class TaskStatus(StrEnum):
    """Lifecycle of a task or shard; members compare equal to their lowercase strings."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for success, failed and cancelled: nothing more will happen."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED}
)


def generate_uniqc_task_id() -> str:
    """A new task id: ``uqt_`` followed by a uuid4 in 32 lowercase hex digits."""
    return UNIQC_TASK_ID_PREFIX + uuid.uuid4().hex


def is_uniqc_task_id(value: object) -> bool:
    """True when ``value`` is a string starting with ``uqt_``: an id this store owns,
    as opposed to a cloud platform's own job id.

    This is the original's meaning, which callers route on (``uqt_timeout`` is ours,
    not the platform's). For the exact shape :func:`generate_uniqc_task_id` makes,
    use :func:`is_generated_task_id`.
    """
    return isinstance(value, str) and value.startswith(UNIQC_TASK_ID_PREFIX)


def is_generated_task_id(value: object) -> bool:
    """True when ``value`` has exactly the shape :func:`generate_uniqc_task_id` makes:
    ``uqt_`` and 32 lowercase hex digits."""
    return isinstance(value, str) and _UNIQC_TASK_ID.fullmatch(value) is not None


def coerce_status(value: object, field_name: str = "status") -> TaskStatus:
    """The :class:`TaskStatus` named by ``value``, or :class:`InvalidInputError`."""
    if isinstance(value, TaskStatus):
        return value
    if isinstance(value, str):
        try:
            return TaskStatus(value)
        except ValueError:
            pass
    allowed = ", ".join(s.value for s in TaskStatus)
    raise InvalidInputError(field_name, value, f"unknown status; expected one of {allowed}")


class _Record:
    """What tasks and shards share: a coerced status and the dict round trip."""

    status: TaskStatus

    def __post_init__(self) -> None:
        self.status = coerce_status(self.status)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of every field, the status as its string."""
        data = asdict(self)  # type: ignore[call-overload]
        data["status"] = self.status.value
        return data  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict` output; fields with defaults may be missing and
        unknown keys are ignored."""
        names = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{name: data[name] for name in names if name in data})


@dataclass
class TaskInfo(_Record):
    """One user-visible task. ``result`` and ``metadata`` hold JSON-like values."""

    task_id: str
    backend: str
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    shots: int = 1000
    submit_time: str = field(default_factory=utc_now)
    update_time: str = field(default_factory=utc_now)
    metadata: dict[str, Any] = field(default_factory=dict)
    error_message: str | None = None
    archived_at: str | None = None
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskShard(_Record):
    """One platform-side job of a task, covering ``circuit_count`` circuits of the batch
    from position ``sub_index_offset`` on."""

    uniqc_task_id: str
    shard_index: int
    platform_task_id: str
    backend: str
    circuit_count: int = 1
    sub_index_offset: int = 0
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error_message: str | None = None
    submit_time: str = field(default_factory=utc_now)
    update_time: str = field(default_factory=utc_now)


def aggregate_status(statuses: Iterable[TaskStatus | str]) -> TaskStatus:
    """A task's status from its shards' statuses.

    No shards: pending. Any shard not finished: running. All success: success.
    All finished with any failure: failed. Otherwise (cancellations, possibly
    with successes): cancelled.
    """
    seen = {coerce_status(s) for s in statuses}
    if not seen:
        return TaskStatus.PENDING
    if not seen <= TERMINAL_STATUSES:
        return TaskStatus.RUNNING
    if seen == {TaskStatus.SUCCESS}:
        return TaskStatus.SUCCESS
    if TaskStatus.FAILED in seen:
        return TaskStatus.FAILED
    return TaskStatus.CANCELLED


def task_status_after_write(
    current: TaskStatus, shard_statuses: Iterable[TaskStatus | str], *, new_job: bool = False
) -> TaskStatus:
    """The status a task takes after a write that touched it.

    ``current`` is its status as the write left the task row (the stored one, or
    the one just saved). A task with shards takes their :func:`aggregate_status`,
    except that a finished status is never replaced by an unfinished aggregate (a
    late poll, or shards still running after the user cancelled, do not reopen a
    finished task), unless the write gave the task a new platform job (``new_job``:
    a shard at a new index, or a resubmission at a stored index). A task with no
    shards keeps ``current``.
    """
    present = {coerce_status(s) for s in shard_statuses}
    if not present:
        return current
    aggregate = aggregate_status(present)
    if current.is_terminal and not aggregate.is_terminal and not new_job:
        return current
    return aggregate


def validate_id(value: object, field_name: str) -> str:
    """``value`` if it is a usable id: a non-empty string of at most 255 characters."""
    if not isinstance(value, str):
        raise InvalidInputError(field_name, value, "must be a string")
    if not value or value.isspace():
        raise InvalidInputError(field_name, value, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(field_name, value, f"longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        raise InvalidInputError(field_name, value, "contains a NUL character")
    _require_utf8(value, field_name)
    return value


def validate_key(value: object, field_name: str) -> str:
    """``value`` if it can be looked up: a string without NUL that is valid Unicode.
    (An empty or overlong id is a valid question whose answer is "no such task".)"""
    if not isinstance(value, str):
        raise InvalidInputError(field_name, value, "must be a string")
    if "\x00" in value:
        raise InvalidInputError(field_name, value, "contains a NUL character")
    _require_utf8(value, field_name)
    return value


def validate_optional_key(value: object, field_name: str) -> str | None:
    """None, or a string :func:`validate_key` accepts (filters such as ``backend=``)."""
    return None if value is None else validate_key(value, field_name)


def validate_statuses(value: object, field_name: str = "status") -> list[TaskStatus]:
    """One status or an iterable of them as a list (a status filter)."""
    if isinstance(value, (TaskStatus, str)):
        return [coerce_status(value, field_name)]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidInputError(field_name, value, "must be a status or an iterable of statuses")
    return [coerce_status(item, field_name) for item in value]


def validate_items(value: object, field_name: str) -> list[Any]:
    """The items of a list or tuple argument (tasks, shards)."""
    if not isinstance(value, (list, tuple)):
        raise InvalidInputError(field_name, value, "must be a list or tuple")
    return list(value)


def validate_names(
    value: object, field_name: str, check: Callable[[object, str], str] = validate_id
) -> list[str]:
    """The items of an iterable of ids or keys (a list, tuple, set or generator, read
    once), each passed through ``check``. One string is refused rather than read as
    its characters, and so is a mapping or bytes. An error raised by the caller's own
    iterator while it is read comes out unchanged."""
    if isinstance(value, (str, bytes, bytearray)):
        raise InvalidInputError(field_name, value, "must be a list of strings, not one")
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidInputError(field_name, value, "must be a list of strings")
    return [check(item, field_name) for item in value]


def validate_page(limit: object, offset: object = None) -> None:
    """``limit`` and ``offset`` are None or a non-negative integer a database can take."""
    for name, value in (("limit", limit), ("offset", offset)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(name, value, "must be a non-negative integer or None")
        if value > MAX_ROWS:
            raise InvalidInputError(name, value, f"is larger than {MAX_ROWS}")


def validate_cursor(value: object) -> tuple[str, str] | None:
    """None, or a page's ``next_after``: a (submit time, task id) pair of strings, given
    back as stored (it is compared with the stored text, which in a legacy SQLite row
    may be text that is no timestamp; servers refuse such text, ``queries.page``)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidInputError("after", value, "must be a previous page's next_after or None")
    submitted, task_id = value
    if not isinstance(submitted, str):
        raise InvalidInputError("after", value, "must start with an ISO-8601 submit time")
    validate_key(submitted, "after")
    return submitted, validate_key(task_id, "after")


def validate_flag(value: object, field_name: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise InvalidInputError(field_name, value, "must be True or False")
    return value


def validate_callback(value: object, field_name: str) -> None:
    """``value`` is None or callable."""
    if value is not None and not callable(value):
        raise InvalidInputError(field_name, value, "must be a callable or None")


def validate_path(value: object, field_name: str) -> None:
    """``value`` is None or a path the operating system can take."""
    if value is None:
        return
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise InvalidInputError(field_name, value, "must be a path (str or os.PathLike)")
    if "\x00" in path:
        raise InvalidInputError(field_name, value, "contains a NUL character")
    try:
        os.fsencode(path)
    except UnicodeError as exc:
        raise InvalidInputError(field_name, value, "cannot be a file name here") from exc


def _require_utf8(value: str, field_name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(field_name, value, "is not valid Unicode text") from exc


def validate_count(value: object, field_name: str, minimum: int = 0) -> int:
    """``value`` if it is an integer from ``minimum`` to :data:`MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field_name, value, "must be an integer")
    if value < minimum:
        raise InvalidInputError(field_name, value, f"must be at least {minimum}")
    if value > MAX_COUNT:
        raise InvalidInputError(field_name, value, f"is larger than {MAX_COUNT}")
    return value


def validate_optional_text(value: object, field_name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidInputError(field_name, value, "must be a string or None")
    if "\x00" in value:
        raise InvalidInputError(field_name, value, "contains a NUL character")
    _require_utf8(value, field_name)


def _validate_time(value: object, field_name: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(field_name, value, "must be an ISO-8601 string")
    parse_timestamp(value, field_name)


def validate_task(task: TaskInfo) -> None:
    """Raise :class:`InvalidInputError` naming the first unstorable field of ``task``."""
    if not isinstance(task, TaskInfo):
        raise InvalidInputError("task", task, "expected a TaskInfo")
    validate_id(task.task_id, "task_id")
    validate_id(task.backend, "backend")
    task.status = coerce_status(task.status)
    validate_count(task.shots, "shots", 0)
    if not isinstance(task.metadata, dict):
        raise InvalidInputError("metadata", task.metadata, "must be a dict")
    validate_optional_text(task.error_message, "error_message")
    _validate_time(task.submit_time, "submit_time")
    if task.name is not None:
        validate_id(task.name, "name")
    validate_tags(task.tags)


def validate_tags(tags: object, field_name: str = "tags") -> dict[str, str]:
    """``tags`` as a plain dict if every key is a usable id (non-empty, at most 255
    characters, no NUL) and every value a string of at most 255 characters without NUL."""
    if not isinstance(tags, Mapping):
        raise InvalidInputError(field_name, tags, "must be a mapping of strings to strings")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        validate_id(key, f"{field_name} key")
        validate_tag_value(value, f"{field_name}[{key!r}]")
        checked[key] = value
    return checked


def validate_tag_value(value: object, field_name: str) -> str:
    """``value`` if it can be stored as a tag value (may be empty)."""
    if not isinstance(value, str):
        raise InvalidInputError(field_name, value, "must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(field_name, value, f"longer than {MAX_ID_LENGTH} characters")
    validate_optional_text(value, field_name)
    return value


def legacy_task_name(metadata: object) -> str | None:
    """The name the original implementation kept in ``metadata["task_name"]``, if it is
    usable as a name (the v8 migration applies the same rule to stored tasks)."""
    name = metadata.get("task_name") if isinstance(metadata, dict) else None
    try:
        return validate_id(name, "name")
    except InvalidInputError:
        return None


def validate_shard(shard: TaskShard) -> None:
    """Raise :class:`InvalidInputError` naming the first unstorable field of ``shard``."""
    if not isinstance(shard, TaskShard):
        raise InvalidInputError("shard", shard, "expected a TaskShard")
    validate_id(shard.uniqc_task_id, "uniqc_task_id")
    validate_count(shard.shard_index, "shard_index", 0)
    validate_id(shard.platform_task_id, "platform_task_id")
    validate_id(shard.backend, "backend")
    validate_count(shard.circuit_count, "circuit_count", 1)
    validate_count(shard.sub_index_offset, "sub_index_offset", 0)
    shard.status = coerce_status(shard.status)
    validate_optional_text(shard.error_message, "error_message")
    _validate_time(shard.submit_time, "submit_time")


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a stored value that cannot be read back (malformed JSON, a BLOB
    where a timestamp belongs); the row holding it is corrupt."""

    reason: str


@dataclass(frozen=True)
class ShardUpdate:
    """What :meth:`TaskStore.update_shard` did.

    ``applied`` is False when the report was stale: the shard had already reached a
    final status and the report named a non-final one, so nothing changed.
    ``shard_status`` and ``task_status`` are the stored statuses afterwards.
    """

    applied: bool
    shard_status: TaskStatus
    task_status: TaskStatus


@dataclass(frozen=True)
class TaskPage:
    """A page of tasks and where the next one starts.

    Pass ``next_cursor`` as ``cursor=`` (or, for the submit-time order only,
    ``next_after`` as ``after=``) to get the next page; both are None after the last
    page. ``resume_cursor`` is set even then (to the cursor given, on an empty page):
    keep it to ask later for what came after in this order (for every change since a
    point, use ``TaskStore.changes``)."""

    tasks: list[TaskInfo]
    next_after: tuple[str, str] | None
    next_cursor: str | None = None
    resume_cursor: str | None = None


@dataclass(frozen=True)
class TaskSummary:
    """What a list view shows of a task, read without its result or metadata.

    ``has_result`` is True when the task itself holds a result (see
    :meth:`TaskStore.finalize`); ``shard_count`` counts its platform jobs."""

    task_id: str
    name: str | None
    backend: str
    status: TaskStatus
    shots: int
    submit_time: str
    update_time: str
    tags: dict[str, str]
    shard_count: int
    has_result: bool
    error_message: str | None
    archived_at: str | None = None


@dataclass(frozen=True)
class BulkResult:
    """What a bulk call did: ``done`` ids, ``missing`` ids (not there to act on) and
    ``refused`` ``(id, reason)`` pairs, each in the order the ids were given."""

    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RetentionResult:
    """What a retention call did (or, with ``dry_run``, would do): ``count`` tasks, and
    in a dry run their ids in ``task_ids`` (empty otherwise, to keep memory flat).
    ``refused``: ids :meth:`~uniqc_taskstore.TaskStore.archive_older_than` matched but
    left live because the archive already holds a task under the same id."""

    count: int
    dry_run: bool = False
    task_ids: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
