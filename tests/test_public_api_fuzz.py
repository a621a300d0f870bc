"""Only TaskStoreError subclasses leave the public API, whatever the arguments.

Every public method of ``TaskStore`` is found by introspection and called with
arguments drawn from hostile values (wrong types, lone surrogates, NUL, huge ints,
NaN, deep nesting, long strings) mixed with plausible ones, on every database. A
method added later is fuzzed automatically; ``test_every_public_method_is_fuzzed``
fails if one is left out.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, TaskStoreError

SEEDED_ID = "uqt_" + "a" * 32
NOT_FUZZED = {"close": "ends the store's use; called last by the fixture"}
CONSTRUCTORS = ("__init__", "from_url", "in_memory")


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
    """A fixed hostile value, drawn as this token so that Hypothesis can print the
    example (it cannot print a 5,000-digit int or a 5,000-deep list); the token is
    swapped for its value just before the call."""

    def __init__(self, label: str, value: Any) -> None:
        self.label = label
        self.value = value

    def __repr__(self) -> str:
        return f"<{self.label}>"


FIXED_HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**63,
    Hostile("10**5000", 10**5000),
    Hostile("-10**5000", -(10**5000)),
    math.nan,
    math.inf,
    -0.0,
    7.0,
    1 + 2j,
    "",
    " ",
    "a\x00b",
    "\ud800",
    "ok\udcff",
    "x" * 256,
    Hostile("'x' * 100_000", "x" * 100_000),
    b"bytes",
    b"\xff\xfe",
    bytearray(b"ab"),
    object(),
    [],
    [1, "a"],
    (SEEDED_ID, "x"),
    ("2026-01-01T00:00:00+00:00", "\ud800"),
    {"a": 1},
    {1, 2},
    Hostile("list nested 5000 deep", _nested(5000, 1)),
    Hostile("dict nested 2000 deep", _nested_dict(2000)),
    Hostile("list nested 101 deep", _nested(101, 1)),
    Hostile("[10**5000]", [10**5000]),
    TaskStatus.SUCCESS,
    "success",
    "SUCCESS",
    Path("/"),
    print,
]


def materialize(value: Any) -> Any:
    """``value`` with every :class:`Hostile` token replaced by what it stands for."""
    if isinstance(value, Hostile):
        return value.value
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
    st.dictionaries(_text, st.one_of(st.integers(), st.floats(), _text), max_size=3),
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


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "task": hostile_task(),
    "tasks_": st.lists(hostile_task(), max_size=3),
    "shard": hostile_shard(),
    "shards": st.one_of(st.lists(hostile_shard(), max_size=3), st.lists(HOSTILE, max_size=3)),
    "task_id": st.sampled_from([SEEDED_ID, "uqt_" + "b" * 32]),
    "uniqc_task_id": st.sampled_from([SEEDED_ID, "uqt_" + "b" * 32]),
    "platform_task_id": st.sampled_from(["job-0", "job-1"]),
    "status": st.sampled_from([*TaskStatus, ["success", "failed"]]),
    "backend": st.sampled_from(["originq", "originq:WK_C180"]),
    "limit": st.integers(0, 5),
    "offset": st.integers(0, 5),
    "shard_index": st.integers(0, 2),
    "on_corrupt": st.just(lambda error: None),
}


def argument(name: str) -> st.SearchStrategy[Any]:
    plausible = PLAUSIBLE.get(name)
    return HOSTILE if plausible is None else st.one_of(HOSTILE, plausible)


@st.composite
def call_arguments(
    draw: st.DrawFn, function: Callable[..., Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for every required parameter and some optional ones, each passed the
    way the signature allows (so the number of arguments is always right)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name in ("self", "cls"):
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
    store.save(
        TaskInfo(SEEDED_ID, "originq:WK_C180", TaskStatus.SUCCESS, result={"00": 3}),
        [TaskShard(SEEDED_ID, 0, "job-0", "originq:WK_C180", status=TaskStatus.SUCCESS)],
    )
    return store


FUZZ = settings(
    max_examples=25,
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
        assert_only_store_errors(
            lambda: method(*args, **kwargs), f"{name}(*{args!r:.200}, **{kwargs!r:.200})"
        )

    run()


_DRAWABLE = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)


def test_every_public_method_is_fuzzed() -> None:
    """Each public method is fuzzed (one parametrized case each, found by introspection)
    unless NOT_FUZZED lists it with a reason, and every parameter it has is of a kind
    ``call_arguments`` can fill: a method taking ``*args`` or ``**kwargs`` fails here
    until the fuzz learns to fill them."""
    methods = public_methods()
    assert {"save", "get", "list", "list_page", "update_shard", "from_url"} <= set(methods)
    assert set(NOT_FUZZED) <= set(methods), "NOT_FUZZED names a method that no longer exists"
    for name in methods:
        if name in NOT_FUZZED:
            continue
        for parameter in inspect.signature(getattr(TaskStore, name)).parameters.values():
            assert parameter.kind in _DRAWABLE, f"{name}({parameter}) cannot be fuzzed"
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
    ]
    for label, call in cases:
        with pytest.raises(TaskStoreError) as caught:
            call()
        assert str(caught.value), label
