"""Only TaskStoreError subclasses leave the public API, whatever the arguments.

Every public method of ``TaskStore`` is found by introspection and called with
arguments drawn from hostile values (wrong types, lone surrogates, NUL, huge ints,
NaN, deep nesting, long strings, generators, naive times, overflowing timedeltas)
mixed with plausible ones, on every database. A method added later is fuzzed
automatically; ``test_every_public_method_is_fuzzed`` fails if one is left out.

``**criteria`` (the :class:`TaskFilter` fields as keywords) is filled from the keys
of ``FilterArgs``, read by introspection, so a new filter field is fuzzed as soon as
it exists; ``filter=`` gets :class:`TaskFilter` objects built from hostile fields
(the construction is part of the call). An iterator a method returns is consumed.

An unknown keyword to a method that takes ``**criteria`` is a typo of a filter
(``statuses=`` for ``status=``): it raises :class:`InvalidInputError` naming it and
listing the known filters, like any other bad filter, never ``TypeError``. Python's
own ``TypeError`` only comes from methods without ``**criteria``, or a wrong number
of positional arguments, which the fuzz does not draw (every call fits the signature).

``UNIQC_FUZZ_EXAMPLES`` sets the examples per method and database (default 25);
``UNIQC_FUZZ_EXAMPLES=2000`` is the deep run used when changing validation.
"""

from __future__ import annotations

import base64
import copy
import inspect
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    StoreLocationError,
    TaskFilter,
    TaskInfo,
    TaskShard,
    TaskStatus,
    TaskStore,
    TaskStoreError,
)
from uniqc_taskstore.exchange import import_tasks
from uniqc_taskstore.filters import (
    LIVE,
    FilterArgs,
    Sort,
    encode_cursor,
    filter_fingerprint,
)

SEEDED_ID = "uqt_" + "a" * 32
NOT_FUZZED = {"close": "ends the store's use; called last by the fixture"}
ENDLESS = {"follow"}
"""Methods returning an endless iterator: their arguments are checked at the call, and
the iterator is closed unread (reading it would wait for changes without end)."""
SEED_TOKENS: dict[str, str] = {}
"""A change-feed token from before the seeded task was saved (set by ``seeded``): a
wait from it returns at once."""
CONSTRUCTORS = ("__init__", "from_url", "in_memory")
FILTER_KEYS = sorted(FilterArgs.__required_keys__ | FilterArgs.__optional_keys__)
"""The filter keywords every ``**criteria`` method takes, by introspection."""
CRITERIA_ANNOTATION = "Unpack[FilterArgs]"
UNKNOWN_KEYWORDS = ["statuses", "limit", "tag", "backends", "filter_", "\ud800", ""]


def public_methods() -> list[str]:
    """Every public callable of TaskStore: methods, classmethods and staticmethods."""
    return sorted(
        name
        for name, member in inspect.getmembers(TaskStore)
        if not name.startswith("_") and callable(member) and not isinstance(member, type)
    )


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


class Hostile:
    """A hostile value, drawn as this token so that Hypothesis can print the example
    (it cannot print a 5,000-digit int or a 5,000-deep list) and so that a one-shot
    value (a generator) is made afresh for each call; the token is swapped for its
    value just before the call."""

    def __init__(self, label: str, make: Callable[[], Any]) -> None:
        self.label = label
        self.make = make

    def __repr__(self) -> str:
        return f"<{self.label}>"


def fixed(label: str, value: Any) -> Hostile:
    return Hostile(label, lambda: value)


class Built:
    """``TaskFilter(**fields)``, built inside the fuzzed call, so that a refused field
    counts as that call's error."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return f"TaskFilter(**{self.fields!r})"


def _ids() -> Iterator[Any]:
    yield SEEDED_ID
    yield "uqt_" + "b" * 32


def _bad_ids() -> Iterator[Any]:
    yield SEEDED_ID
    yield None


class CallersOwnError(Exception):
    """Raised by an iterable the caller passed: it comes out unchanged, as the caller's
    own error (wrapping it would hide the caller's bug)."""


def _exploding() -> Iterator[Any]:
    yield SEEDED_ID
    raise CallersOwnError("the caller's iterable failed")


OTHER_SORT_CURSOR = encode_cursor(
    Sort("update_time", False),
    filter_fingerprint(TaskFilter(), LIVE.tasks.name),
    "2026-01-01T00:00:00.000000+00:00",
    SEEDED_ID,
)
FIXED_HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31 - 1,
    2**31,
    2**63,
    fixed("10**5000", 10**5000),
    fixed("-10**5000", -(10**5000)),
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    7.0,
    1e300,
    1 + 2j,
    "",
    " ",
    "a\x00b",
    "\ud800",
    "ok\udcff",
    "x" * 256,
    "d/" + "x" * 300 + "/e",
    fixed("'x' * 100_000", "x" * 100_000),
    b"bytes",
    b"\xff\xfe",
    bytearray(b"ab"),
    object(),
    [],
    [1, "a"],
    (SEEDED_ID, "x"),
    ("2026-01-01T00:00:00+00:00", "\ud800"),
    {"a": 1},
    {"a": None},
    {1: "a"},
    {None: None},
    {1, 2},
    fixed("list nested 5000 deep", _nested(5000, 1)),
    fixed("dict nested 2000 deep", _nested_dict(2000)),
    fixed("list nested 101 deep", _nested(101, 1)),
    fixed("[10**5000]", [10**5000]),
    Hostile("generator of ids", _ids),
    Hostile("generator yielding None", _bad_ids),
    TaskStatus.SUCCESS,
    "success",
    "SUCCESS",
    Path("/"),
    print,
    timedelta(days=1),
    timedelta(seconds=-1),
    timedelta.max,
    timedelta.min,
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
    "2026-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00",
    "0000-01-01T00:00:00+00:00",
    "10000-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "not a time",
    OTHER_SORT_CURSOR,
    base64.urlsafe_b64encode(b"garbage").decode(),
    base64.urlsafe_b64encode(b'["submit_time",true,1,2]').decode(),
    base64.urlsafe_b64encode(b'["submit_time",true,"x","y"]').decode(),
    base64.urlsafe_b64encode(b'["submit_time",true,"2026-01-01T00:00:00+00:00"]').decode(),
    base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "====",
    "\u00e9\u00e9",
]


def materialize(value: Any) -> Any:
    """``value`` with every :class:`Hostile` token replaced by what it stands for."""
    if isinstance(value, Hostile):
        return value.make()
    if isinstance(value, Built):
        return TaskFilter(**materialize(value.fields))
    if isinstance(value, (TaskInfo, TaskShard)):
        real = copy.copy(value)
        for name in type(value).__dataclass_fields__:
            setattr(real, name, materialize(getattr(value, name)))
        return real
    if isinstance(value, list):
        return [materialize(item) for item in value]
    if isinstance(value, tuple):
        return tuple(materialize(item) for item in value)
    if isinstance(value, dict):
        return {key: materialize(item) for key, item in value.items()}
    return value


_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
HOSTILE = st.one_of(
    st.sampled_from(FIXED_HOSTILE),
    st.integers(),
    st.floats(),
    _text,
    st.binary(max_size=20),
    st.lists(st.one_of(st.none(), st.integers(), _text), max_size=4),
    st.dictionaries(_text, st.one_of(st.none(), st.integers(), st.floats(), _text), max_size=3),
    st.dictionaries(st.one_of(st.integers(), st.none()), _text, max_size=2),
    st.timedeltas(),
    st.datetimes(
        timezones=st.sampled_from([None, UTC, *(timezone(timedelta(hours=h)) for h in (-12, 14))])
    ),
)


def _valid_task() -> TaskInfo:
    return TaskInfo("uqt_" + "b" * 32, "originq:WK_C180", result={"00": 1})


def _valid_shard(index: int = 0) -> TaskShard:
    return TaskShard("uqt_" + "b" * 32, index, f"job-{index}", "originq:WK_C180")


TASK_FIELDS = list(TaskInfo.__dataclass_fields__)
SHARD_FIELDS = list(TaskShard.__dataclass_fields__)


@st.composite
def hostile_task(draw: st.DrawFn) -> TaskInfo:
    task = _valid_task()
    if draw(st.booleans()):
        setattr(task, draw(st.sampled_from(TASK_FIELDS)), draw(HOSTILE))
    return task


@st.composite
def hostile_shard(draw: st.DrawFn) -> TaskShard:
    shard = _valid_shard(draw(st.integers(0, 2)))
    if draw(st.booleans()):
        setattr(shard, draw(st.sampled_from(SHARD_FIELDS)), draw(HOSTILE))
    return shard


def _one_shot(label: str, make: Callable[[], Any]) -> st.SearchStrategy[Any]:
    return st.just(Hostile(label, make))


_ID_LISTS = st.one_of(
    st.lists(st.sampled_from([SEEDED_ID, "uqt_" + "b" * 32, "uqt_none"]), max_size=3),
    st.just((SEEDED_ID,)),
    _one_shot("generator of ids", _ids),
    _one_shot("generator yielding None", _bad_ids),
    _one_shot("iterator that raises", _exploding),
    st.lists(HOSTILE, max_size=3),
)
_AGES = st.one_of(
    st.sampled_from([0, 1, 86400, 0.5, timedelta(0), timedelta(days=3650), 10**12, 1e18]),
    st.timedeltas(),
    st.floats(),
)
_TIME_BOUNDS = st.sampled_from(
    [
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00.000000+00:00",
        "2026-01-01T08:00:00+08:00",
        datetime(2026, 1, 1, tzinfo=UTC),
        "2026-01-01",
    ]
)
FILTER_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from([*TaskStatus, ["success", "failed"], (), frozenset({"running"})]),
    "backend": st.sampled_from(["originq", "originq:WK_C180", "ORIGINQ"]),
    "submitted_after": _TIME_BOUNDS,
    "submitted_before": _TIME_BOUNDS,
    "updated_after": _TIME_BOUNDS,
    "updated_before": _TIME_BOUNDS,
    "tags": st.dictionaries(
        st.sampled_from(["team", "k", "x" * 255]),
        st.one_of(st.none(), st.sampled_from(["", "v", "x" * 255])),
        max_size=2,
    ),
    "name": st.sampled_from(["job", "x" * 255]),
    "search": st.sampled_from(["uqt", "%", "_", "!", "job-0", ""]),
}


def argument_for_filter(key: str) -> st.SearchStrategy[Any]:
    """Hostile values for one filter field, mixed with plausible ones where known (a
    field added later is fuzzed with hostile values alone until it is listed here)."""
    plausible = FILTER_PLAUSIBLE.get(key)
    return HOSTILE if plausible is None else st.one_of(HOSTILE, plausible)


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "task": hostile_task(),
    "tasks_": st.lists(hostile_task(), max_size=3),
    "shard": hostile_shard(),
    "shards": st.one_of(st.lists(hostile_shard(), max_size=3), st.lists(HOSTILE, max_size=3)),
    "task_id": st.sampled_from([SEEDED_ID, "uqt_" + "b" * 32]),
    "uniqc_task_id": st.sampled_from([SEEDED_ID, "uqt_" + "b" * 32]),
    "platform_task_id": st.sampled_from(["job-0", "job-1"]),
    "status": st.sampled_from([*TaskStatus, ["success", "failed"]]),
    "statuses": st.sampled_from([None, [*TaskStatus], ["success"], "failed", ()]),
    "terminal_statuses": st.sampled_from([[*TaskStatus], ["success"], "failed", ()]),
    "backend": st.sampled_from(["originq", "originq:WK_C180"]),
    "limit": st.integers(-2, 5),
    "offset": st.integers(0, 5),
    "batch_size": st.one_of(st.integers(-1, 3), st.sampled_from([2**31, 2**63, 10**30])),
    "shard_index": st.integers(0, 2),
    "on_corrupt": st.just(lambda error: None),
    "field": st.sampled_from(["status", "backend", "platform", "name"]),
    "by": st.sampled_from(["update_time", "submit_time", "archived_at"]),
    "order_by": st.sampled_from(["submit_time", "update_time", "task_id", "archived_at"]),
    "cursor": st.sampled_from([OTHER_SORT_CURSOR, "garbage", "", None]),
    "after": st.sampled_from([("2026-01-01T00:00:00+00:00", SEEDED_ID), ("x", "y"), (1, 2)]),
    "age": _AGES,
    "older_than": _AGES,
    "task_ids": _ID_LISTS,
    "keys": st.one_of(st.lists(st.sampled_from(["team", "k"]), max_size=2), _ID_LISTS),
    "tags_": FILTER_PLAUSIBLE["tags"],
    "patch": st.dictionaries(
        st.one_of(st.sampled_from(["a", "b", 1, None, "\ud800", "a\x00b", 1.5]), _text),
        HOSTILE,
        max_size=2,
    ),
    "remove": st.one_of(st.lists(st.sampled_from(["a", "b"]), max_size=2), _ID_LISTS),
    "since": st.sampled_from([None, Hostile("token before the seed", lambda: SEED_TOKENS["t"])]),
    "token": st.just(Hostile("token before the seed", lambda: SEED_TOKENS["t"])),
    "timeout": st.sampled_from([0, 0.01, -1, 86_401]),
    "wait": st.sampled_from([0, 0.01, -1]),
    "filter": st.one_of(
        st.none(),
        st.just(TaskFilter()),
        st.builds(
            Built,
            st.fixed_dictionaries(
                {}, optional={key: argument_for_filter(key) for key in FILTER_KEYS}
            ),
        ),
    ),
}


def argument(name: str) -> st.SearchStrategy[Any]:
    plausible = PLAUSIBLE.get(name)
    return HOSTILE if plausible is None else st.one_of(HOSTILE, plausible)


@st.composite
def criteria(draw: st.DrawFn, taken: set[str]) -> dict[str, Any]:
    """Some filter keywords with plausible or hostile values, now and then one that no
    filter has (never a name the signature has, which would not reach ``**criteria``)."""
    chosen = draw(st.lists(st.sampled_from(FILTER_KEYS), unique=True, max_size=3))
    drawn = {key: draw(argument_for_filter(key)) for key in chosen}
    unknown = [k for k in UNKNOWN_KEYWORDS if k not in taken and k not in FILTER_KEYS]
    if unknown and draw(st.integers(0, 9)) == 0:
        drawn[draw(st.sampled_from(unknown))] = draw(HOSTILE)
    return drawn


@st.composite
def call_arguments(
    draw: st.DrawFn, function: Callable[..., Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for every required parameter and some optional ones, each passed the
    way the signature allows (so the number of arguments is always right), and filter
    keywords for ``**criteria``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    parameters = inspect.signature(function).parameters.values()
    for parameter in parameters:
        if parameter.name in ("self", "cls"):
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(draw(criteria({p.name for p in parameters})))
            continue
        optional = parameter.default is not inspect.Parameter.empty
        if optional and draw(st.booleans()):
            continue  # left out; later arguments go by keyword
        value = draw(argument(parameter.name))
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY or kwargs or optional:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    return args, kwargs


def assert_only_store_errors(call: Callable[[], Any], name: str, *arguments: Any) -> None:
    try:
        call()
    except TaskStoreError as exc:
        str(exc)  # the message itself must build
    except CallersOwnError:
        pass
    except Exception as exc:
        shown = ", ".join(_shown(a) for a in arguments)
        raise AssertionError(f"{name}({shown}) raised {type(exc).__name__}: {exc!r:.300}") from exc


def _shown(value: Any) -> str:
    try:
        return repr(value)[:200]
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


@pytest.fixture
def seeded(store: TaskStore) -> TaskStore:
    SEED_TOKENS["t"] = store.changes().token
    store.save(
        TaskInfo(SEEDED_ID, "originq:WK_C180", TaskStatus.SUCCESS, result={"00": 3}),
        [TaskShard(SEEDED_ID, 0, "job-0", "originq:WK_C180", status=TaskStatus.SUCCESS)],
    )
    return store


FUZZ_EXAMPLES = int(os.environ.get("UNIQC_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", public_methods())
def test_public_method_raises_only_store_errors(seeded: TaskStore, name: str) -> None:
    if name in NOT_FUZZED:
        pytest.skip(NOT_FUZZED[name])
    method = getattr(seeded, name)

    @FUZZ
    @given(call_arguments(method))
    def run(drawn: tuple[list[Any], dict[str, Any]]) -> None:
        args, kwargs = drawn

        def call() -> None:
            result = method(*materialize(args), **materialize(kwargs))
            if name in ENDLESS:
                result.close()
            elif isinstance(result, Iterator):
                for _ in result:  # a stream's errors come out while it is read
                    pass

        assert_only_store_errors(call, f"{name}(*{args!r:.200}, **{kwargs!r:.200})")

    run()


_DRAWABLE = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)


def test_every_public_method_is_fuzzed() -> None:
    """Each public method is fuzzed (one parametrized case each, found by introspection)
    unless NOT_FUZZED lists it with a reason, and every parameter it has is of a kind
    ``call_arguments`` can fill: ``**criteria: Unpack[FilterArgs]`` is filled from the
    filter's fields; any other ``*args`` or ``**kwargs`` fails here until the fuzz
    learns to fill it."""
    methods = public_methods()
    assert {"save", "get", "list", "list_page", "update_shard", "from_url"} <= set(methods)
    assert set(NOT_FUZZED) <= set(methods), "NOT_FUZZED names a method that no longer exists"
    for name in methods:
        if name in NOT_FUZZED:
            continue
        for parameter in inspect.signature(getattr(TaskStore, name)).parameters.values():
            fillable = parameter.kind in _DRAWABLE or (
                parameter.kind is inspect.Parameter.VAR_KEYWORD
                and parameter.annotation == CRITERIA_ANNOTATION
            )
            assert fillable, f"{name}({parameter}) cannot be fuzzed"
    assert set(FILTER_KEYS) == {f.name for f in fields(TaskFilter)}, "FilterArgs != TaskFilter"
    assert set(FILTER_PLAUSIBLE) <= set(FILTER_KEYS), "FILTER_PLAUSIBLE names a gone field"
    for name in CONSTRUCTORS:
        assert callable(getattr(TaskStore, name))


@FUZZ
@given(data=st.data())
def test_constructors_raise_only_store_errors(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # a relative cache_dir lands here
    which = data.draw(st.sampled_from(["cache_dir", "url", "schema", "engine", "create"]))
    value = materialize(data.draw(HOSTILE))
    if isinstance(value, str) and "://" in value:
        value = "sqlite:///" + value.split("://", 1)[1]  # never a network address
    kwargs = {which: value}
    if which in ("schema", "create"):
        kwargs["cache_dir"] = "store"
    elif which == "cache_dir" and data.draw(st.booleans()):
        kwargs["create"] = False  # read-only opens look at the path first (issue 17.8)

    def construct() -> None:
        TaskStore(**kwargs).close()

    assert_only_store_errors(construct, "TaskStore", kwargs)
    assert_only_store_errors(lambda: TaskStore.from_url(value).close(), "from_url", value)


def test_known_raw_exceptions_are_now_store_errors(seeded: TaskStore, tmp_path: Path) -> None:
    """The cases issue 8 listed, each once, on every database."""
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("surrogate id", lambda: seeded.get("\ud800")),
        ("surrogate filter", lambda: seeded.list(backend="\udcff")),
        ("int status", lambda: seeded.list(status=5)),  # type: ignore[arg-type]
        ("int cursor", lambda: seeded.list_page(after=123)),  # type: ignore[arg-type]
        ("huge result", lambda: seeded.save(TaskInfo("uqt_" + "c" * 32, "x", result=10**5000))),
        ("NUL cache_dir", lambda: TaskStore(tmp_path / "a\x00b")),
        ("float id", lambda: seeded.get(7.0)),  # type: ignore[arg-type]
        ("overlong name as URL", lambda: TaskStore.from_url("x" * 300)),
    ]
    for label, call in cases:
        with pytest.raises(TaskStoreError) as caught:
            call()
        assert str(caught.value), label


def test_issue_17_raw_exceptions_are_now_store_errors(seeded: TaskStore, tmp_path: Path) -> None:
    """The cases issue 17.8 listed outside import, each once, on every database."""
    huge = "uqt_" + "d" * 32
    seeded.save(
        TaskInfo(huge, "dummy"),
        [TaskShard(huge, 0, "job", "dummy", circuit_count=2**31 - 1, status=TaskStatus.SUCCESS)],
    )
    too_long = tmp_path / ("x" * 300)
    cases: list[tuple[str, Callable[[], Any], type[TaskStoreError]]] = [
        ("long path, read-only", lambda: TaskStore(too_long, create=False), StoreLocationError),
        ("long path", lambda: TaskStore(too_long), StoreLocationError),
        (
            "long URL path",
            lambda: TaskStore.from_url(f"sqlite:///{too_long}/t"),
            StoreLocationError,
        ),
        ("2**31-1 circuits", lambda: seeded.finalize(huge), ShardLayoutError),
        (
            "charset latin1",
            lambda: TaskStore.from_url(_MYSQL + "?charset=latin1"),
            InvalidInputError,
        ),
        ("charset utf8", lambda: TaskStore.from_url(_MYSQL + "?charset=utf8"), InvalidInputError),
    ]
    for label, call, error in cases:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value), label
    assert all(len(p.name) < 255 for p in tmp_path.iterdir())  # nothing made there


_MYSQL = "mysql+pymysql://nobody@127.0.0.1:1/nowhere"  # refused before any connection


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


QUERY_API_CASES: dict[str, Callable[[Any], Any]] = {  # Any: the calls are ill-typed on purpose
    "remove_tags keys None": lambda s: s.remove_tags(SEEDED_ID, None),
    "remove_tags keys int": lambda s: s.remove_tags(SEEDED_ID, 5),
    "remove_tags keys mapping": lambda s: s.remove_tags(SEEDED_ID, {"k": "v"}),
    "remove_tags surrogate key": lambda s: s.remove_tags(SEEDED_ID, ["\ud800"]),
    "set_tags None": lambda s: s.set_tags(SEEDED_ID, None),
    "set_tags int key": lambda s: s.set_tags(SEEDED_ID, {1: "a"}),
    "set_tags None value": lambda s: s.set_tags(SEEDED_ID, {"k": None}),
    "set_tags id int": lambda s: s.set_tags(7, {"k": "v"}),
    "update_metadata remove None": lambda s: s.update_metadata(SEEDED_ID, {}, None),
    "update_metadata remove int": lambda s: s.update_metadata(SEEDED_ID, {}, 5),
    "update_metadata remove str": lambda s: s.update_metadata(SEEDED_ID, {}, "a"),
    "update_metadata int key": lambda s: s.update_metadata(SEEDED_ID, {1: 2}),
    "update_metadata unstorable": lambda s: s.update_metadata(SEEDED_ID, {"a": object()}),
    "finalize None": lambda s: s.finalize(None),
    "archive_many None": lambda s: s.archive_many(None),
    "archive_many one string": lambda s: s.archive_many(SEEDED_ID),
    "archive_many ints": lambda s: s.archive_many([1, 2]),
    "archive_many surrogate": lambda s: s.archive_many(["\ud800"]),
    "archive_many 10**5000": lambda s: s.archive_many([10**5000]),
    "archive_many generator": lambda s: s.archive_many(i for i in [SEEDED_ID, None]),
    "restore_many bytes": lambda s: s.restore_many(b"ab"),
    "delete_many archived str": lambda s: s.delete_many([SEEDED_ID], archived="yes"),
    "age negative": lambda s: s.archive_older_than(-1),
    "age NaN": lambda s: s.archive_older_than(math.nan),
    "age inf": lambda s: s.archive_older_than(math.inf),
    "age bool": lambda s: s.archive_older_than(True),
    "age negative timedelta": lambda s: s.archive_older_than(timedelta(microseconds=-1)),
    "statuses bool": lambda s: s.archive_older_than(0, statuses=True),
    "statuses mapping": lambda s: s.archive_older_than(0, statuses={"success": 1}),
    "by unknown": lambda s: s.archive_older_than(0, by="archived_at"),
    "older_than -inf": lambda s: s.purge_archived(older_than=-math.inf),
    "dry_run str": lambda s: s.purge_archived(older_than=0, dry_run="no"),
    "batch_size 0": lambda s: s.iter_tasks(batch_size=0),
    "batch_size 2**63": lambda s: s.iter_tasks(batch_size=2**63),
    "batch_size float": lambda s: s.iter_tasks(batch_size=2.0),
    "include_shards str": lambda s: s.iter_tasks(include_shards="yes"),
    "count_by unknown": lambda s: s.count_by("name"),
    "count_by list": lambda s: s.count_by(["status"]),
    "summaries offset": lambda s: s.summaries(offset=-1),
    "summaries order_by": lambda s: s.summaries(order_by="task_id"),
    "cursor garbage": lambda s: s.list_page(cursor="garbage!"),
    "cursor base64 garbage": lambda s: s.list_page(cursor=_b64(b"garbage")),
    "cursor base64 deep": lambda s: s.list_page(cursor=_b64(b"[" * 100_000)),
    "cursor base64 big int": lambda s: s.list_page(cursor=_b64(b"1" * 5000)),
    "cursor other sort": lambda s: s.list_page(cursor=OTHER_SORT_CURSOR),
    "cursor surrogate": lambda s: s.list_page(cursor="\ud800"),
    "list_page order_by": lambda s: s.list_page(order_by="name"),
    "list_page limit 2**63": lambda s: s.list_page(limit=2**63),
    "list_page limit 10**5000": lambda s: s.list_page(limit=10**5000),
    "list_page include_results": lambda s: s.list_page(include_results="no"),
    "after datetime": lambda s: s.list_page(after=(datetime(2026, 1, 1, tzinfo=UTC), SEEDED_ID)),
    "after surrogate": lambda s: s.list_page(after=("2026-01-01T00:00:00+00:00", "\ud800")),
    "after 10**5000": lambda s: s.list_page(after=(10**5000, SEEDED_ID)),
    "after ints": lambda s: s.list_page(after=(1, 2)),
    "year 0": lambda s: s.count(submitted_after="0000-01-01T00:00:00+00:00"),
    "year 10000": lambda s: s.count(submitted_before="10000-01-01T00:00:00+00:00"),
    "time NaN": lambda s: s.count(updated_after=math.nan),
    "tags not a mapping": lambda s: s.count(tags=["k"]),
    "tags int key": lambda s: s.count(tags={1: "v"}),
    "tags int value": lambda s: s.count(tags={"k": 1}),
    "status mapping": lambda s: s.count(status={"success": 1}),
    "status bytes": lambda s: s.count(status=b"success"),
    "search surrogate": lambda s: s.count(search="\ud800"),
    "search int": lambda s: s.count(search=5),
    "unknown keyword": lambda s: s.list(statuses="success"),
    "filter not a TaskFilter": lambda s: s.count({"status": "success"}),
    "filter with criteria": lambda s: s.count({"x": 1}, status="success"),
}


@pytest.mark.parametrize("case", QUERY_API_CASES)
def test_query_api_refuses_bad_input_with_store_errors(seeded: TaskStore, case: str) -> None:
    """Each kind of bad value the query API takes, once, on every database: an
    :class:`InvalidInputError` when the method is called (also ``iter_tasks``, before
    its first task is read), and nothing written."""
    before = seeded.get(SEEDED_ID)
    with pytest.raises(InvalidInputError) as caught:
        QUERY_API_CASES[case](seeded)
    assert str(caught.value)
    assert seeded.get(SEEDED_ID) == before, "bad input changed the store"


IMPORT_LINES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1, 300_000)),
    st.builds(lambda n: b'{"task": ' * n + b"1" + b"}" * n, st.integers(1, 50_000)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ).map(lambda value: json.dumps({"task": value}).encode()),
)


@FUZZ
@given(
    header=st.sampled_from([b'{"uniqc_export": 1}', b'{"uniqc_export": 0}', b"\xff", b""]),
    lines=st.lists(IMPORT_LINES, max_size=4),
    as_text=st.booleans(),
)
def test_import_of_any_bytes_raises_only_store_errors(
    header: bytes, lines: list[bytes], as_text: bool
) -> None:
    """``exchange.import_tasks`` (issue 17 item 8): whatever the file holds (bytes that
    are not UTF-8, nesting 300,000 deep, any JSON), only a TaskStoreError leaves it."""
    data = b"\n".join([header, *lines]) + b"\n"
    stream: Any = io.BytesIO(data)
    if as_text:
        stream = io.TextIOWrapper(stream, encoding="utf-8")
    with TaskStore.in_memory() as store:
        assert_only_store_errors(lambda: import_tasks(store, stream), "import_tasks", data[:200])
