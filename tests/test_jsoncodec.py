"""JSON encoding of results and metadata: faithful round trips, strict standard JSON out,
numpy values as their ``tolist()``, and a precise refusal for anything else."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniqc_taskstore import (
    InvalidInputError,
    TaskInfo,
    TaskShard,
    TaskStore,
    TaskStoreError,
    UnserializableValueError,
    generate_uniqc_task_id,
)
from uniqc_taskstore.jsoncodec import decode_json, encode_json

TAG = "$uniqc"


def same(expected: Any, actual: Any) -> bool:
    """``actual`` is what ``expected`` should decode to: equal with NaN equal to NaN, the
    same scalar types, tuple values as lists, dict keys in the same order and types."""
    if isinstance(expected, tuple):
        expected = list(expected)
    if isinstance(expected, float):
        if type(actual) is not float:
            return False
        return (math.isnan(expected) and math.isnan(actual)) or expected == actual
    if isinstance(expected, complex):
        return type(actual) is complex and (
            same(expected.real, actual.real) and same(expected.imag, actual.imag)
        )
    if isinstance(expected, list):
        return (
            type(actual) is list
            and len(expected) == len(actual)
            and all(same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, dict):
        if type(actual) is not dict or len(expected) != len(actual):
            return False
        return all(
            same_key(ek, ak) and same(ev, av)
            for (ek, ev), (ak, av) in zip(expected.items(), actual.items(), strict=True)
        )
    return type(actual) is type(expected) and actual == expected


def same_key(expected: Any, actual: Any) -> bool:
    if isinstance(expected, tuple):
        return (
            type(actual) is tuple
            and len(expected) == len(actual)
            and all(same_key(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(actual) is type(expected) and actual == expected


def refuse_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name} in output")


def strict_loads(text: str) -> Any:
    return json.loads(text, parse_constant=refuse_constant)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0])
    | st.complex_numbers()
    | st.text()
)
key_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text(max_size=8)
)
hashable_keys = st.recursive(
    key_scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6
)
tag_like_keys = st.sampled_from([TAG, "value", "items", "real", "imag", "float", "map"])


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(hashable_keys, children, max_size=4)
        | st.dictionaries(tag_like_keys | st.text(max_size=3), children, min_size=1, max_size=4)
        | st.fixed_dictionaries({TAG: st.sampled_from(["float", "complex", "map", "tuple"])})
        | st.fixed_dictionaries({TAG: st.just("float"), "value": st.just("nan")})
        | st.fixed_dictionaries({TAG: st.just("map"), "items": st.lists(children, max_size=2)})
    )


json_like = st.recursive(scalars, containers, max_leaves=25)
plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text().filter(lambda k: k != TAG), children, max_size=4)
    ),
    max_leaves=25,
)


# -- round trips --------------------------------------------------------------------------


@given(json_like)
def test_json_like_values_round_trip(value: Any) -> None:
    assert same(value, decode_json(encode_json(value)))


@given(json_like)
def test_output_is_strict_standard_json(value: Any) -> None:
    strict_loads(encode_json(value))


@given(plain_json)
def test_plain_json_values_are_written_as_plain_json(value: Any) -> None:
    text = encode_json(value)
    assert strict_loads(text) == value
    assert same(value, decode_json(text))


@given(st.floats() | st.sampled_from([math.nan, math.inf, -math.inf]))
def test_every_float_round_trips_exactly(number: float) -> None:
    back = decode_json(encode_json(number))
    assert same(number, back)
    assert math.copysign(1.0, back) == math.copysign(1.0, number) or math.isnan(number)


def test_special_floats_are_not_written_as_literals() -> None:
    text = encode_json({"a": math.nan, "b": [math.inf, -math.inf]})
    assert "NaN" not in text
    assert "Infinity" not in text
    strict_loads(text)


def test_integer_keyed_counts_come_back_with_integer_keys() -> None:
    counts = {0: 512, 1: 488}
    assert same(counts, decode_json(encode_json(counts)))


@pytest.mark.parametrize(
    "value",
    [
        {TAG: "float", "value": "nan"},
        {TAG: "complex", "real": 1, "imag": 2},
        {TAG: "map", "items": [[1, 2]]},
        {TAG: "tuple", "items": [1]},
        {TAG: "unknown"},
        [{TAG: {TAG: "float", "value": "inf"}}],
    ],
    ids=repr,
)
def test_dict_using_the_tag_key_itself_round_trips(value: Any) -> None:
    assert same(value, decode_json(encode_json(value)))


@pytest.mark.parametrize("number", [2**64, -(2**64) - 1, 10**40], ids=str)
def test_big_integers_round_trip(number: int) -> None:
    assert same(number, decode_json(encode_json(number)))


def test_unicode_text_round_trips() -> None:
    value = {"ключ": "值 \u0000 \U0001f600 \u2028", "\ud7ff": "\\"}
    assert same(value, decode_json(encode_json(value)))


@pytest.mark.parametrize(
    "value",
    ["\ud800", {"k": "a\udfffb"}, {"\ud83d": 1}, {0: ["\udc00"]}, {("\ud800",): 1}],
    ids=ascii,
)
def test_lone_surrogate_is_written_as_ascii_escape_and_round_trips(value: Any) -> None:
    """A str may hold an unpaired surrogate, which UTF-8 cannot carry: the codec writes
    it as a JSON escape (``\\ud800``), so the text is valid UTF-8 and reads back equal."""
    text = encode_json(value)
    text.encode("utf-8")
    assert same(value, decode_json(text))


def test_tuple_values_become_lists_and_tuple_keys_stay_tuples() -> None:
    value = {(0, 1): (2, 3), ("a", (None, 1.5)): [(4,)]}
    assert decode_json(encode_json(value)) == {(0, 1): [2, 3], ("a", (None, 1.5)): [[4]]}


def test_legacy_text_with_nan_literals_decodes() -> None:
    decoded = decode_json('{"a": NaN, "b": [Infinity, -Infinity], "c": 1.5}')
    assert same({"a": math.nan, "b": [math.inf, -math.inf], "c": 1.5}, decoded)


def test_decode_accepts_bytes() -> None:
    assert decode_json(b'{"x": [1, 2.5, null]}') == {"x": [1, 2.5, None]}


# -- numpy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(1.5), 1.5),
        (np.float64(-0.1), -0.1),
        (np.float32(0.25), 0.25),
        (np.int64(7), 7),
        (np.int64(-(2**62)), -(2**62)),
        (np.int32(3), 3),
        (np.uint8(255), 255),
        (np.bool_(True), True),
        (np.bool_(False), False),
        (np.complex128(1.5 - 2j), 1.5 - 2j),
    ],
    ids=repr,
)
def test_numpy_scalar_comes_back_as_equal_python_number(value: Any, expected: Any) -> None:
    back = decode_json(encode_json(value))
    assert type(back) is type(expected)
    assert back == expected


def test_numpy_nan_scalar_comes_back_as_nan() -> None:
    back = decode_json(encode_json(np.float64("nan")))
    assert type(back) is float
    assert math.isnan(back)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(5),
        np.arange(6).reshape(2, 3),
        np.array([0.5, np.nan, np.inf, -np.inf]),
        np.array([[1.0, np.nan], [np.nan, 2.0]]),
        np.array([1 + 2j, np.nan - 1j, 0j]),
        np.array([[1 + 1j], [2 - 2j]], dtype=np.complex64),
        np.array([True, False]),
        np.zeros((0,)),
        np.zeros((2, 0)),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_numpy_array_comes_back_as_tolist(array: Any) -> None:
    text = encode_json(array)
    strict_loads(text)
    assert same(array.tolist(), decode_json(text))


def test_numpy_values_nested_in_containers_and_keys() -> None:
    value = {
        np.int64(3): np.float64(0.5),
        "counts": [np.int32(1), np.arange(2)],
        "flags": (np.bool_(True),),
    }
    expected = {3: 0.5, "counts": [1, [0, 1]], "flags": [True]}
    assert same(expected, decode_json(encode_json(value)))


# -- refusals -----------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "path_part"),
    [
        ({"counts": object()}, "['counts']"),
        ([1, 2, 3, {1, 2}], "[3]"),
        ({"counts": {"00": b"raw"}}, "['counts']['00']"),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "['when']"),
        ({"amount": [Decimal("1.5")]}, "['amount'][0]"),
        ({"counts": {Opaque(): 1}}, "['counts']"),
        ({"s": frozenset({1})}, "['s']"),
        ([[0, [bytearray(b"x")]]], "[0][1][0]"),
        ({1: {"x": Opaque()}}, "[1]['x']"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_unstorable_value_is_refused_naming_its_path(value: Any, path_part: str) -> None:
    with pytest.raises(UnserializableValueError) as caught:
        encode_json(value)
    error = caught.value
    assert path_part in error.field
    assert isinstance(error, TypeError)
    assert isinstance(error, InvalidInputError)
    assert isinstance(error, TaskStoreError)


@pytest.mark.parametrize(
    "bad", [object(), {1, 2}, b"bytes", datetime(2026, 1, 1), Decimal("2"), Opaque()], ids=repr
)
def test_top_level_unstorable_value_is_refused_with_the_value(bad: Any) -> None:
    with pytest.raises(UnserializableValueError) as caught:
        encode_json(bad, "result")
    assert caught.value.value is bad
    assert caught.value.field.startswith("result")


def test_unstorable_dict_key_is_refused() -> None:
    key = object()
    with pytest.raises(UnserializableValueError) as caught:
        encode_json({"counts": {key: 1}})
    assert caught.value.value is key
    assert "['counts']" in caught.value.field


# -- through the store --------------------------------------------------------------------

NUMERIC_RESULT: dict[Any, Any] = {
    0: np.int64(3),
    "amp": complex(0.5, -0.5),
    "nan": float("nan"),
    "arr": np.arange(3),
}
NUMERIC_RESULT_BACK: dict[Any, Any] = {0: 3, "amp": 0.5 - 0.5j, "nan": math.nan, "arr": [0, 1, 2]}


def test_numeric_result_round_trips_through_store(store: TaskStore) -> None:
    task = TaskInfo(
        generate_uniqc_task_id(),
        "dummy",
        result=NUMERIC_RESULT,
        metadata={"inf": math.inf, "key": {1.5: np.float64(2.5)}},
    )
    shard = TaskShard(task.task_id, 0, "job-0", "dummy", result=[NUMERIC_RESULT], circuit_count=1)
    store.save(task, [shard])
    stored = store.get(task.task_id)
    assert stored is not None
    assert same(NUMERIC_RESULT_BACK, stored.result)
    assert same({"inf": math.inf, "key": {1.5: 2.5}}, stored.metadata)
    [stored_shard] = store.get_shards(task.task_id)
    assert same([NUMERIC_RESULT_BACK], stored_shard.result)


def test_unserializable_result_is_refused_and_nothing_saved(store: TaskStore) -> None:
    store.save(TaskInfo(generate_uniqc_task_id(), "dummy", result={"ok": 1}))
    task = TaskInfo(generate_uniqc_task_id(), "dummy", result={"counts": {"00": object()}})
    with pytest.raises(UnserializableValueError) as caught:
        store.save(task)
    assert "['counts']" in caught.value.field
    assert store.get(task.task_id) is None
    assert store.count() == 1


def test_lone_surrogate_in_result_is_stored_and_read_back(store: TaskStore) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", result={"s": "x\ud800"})
    store.save(task)
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.result == {"s": "x\ud800"}


def test_unserializable_shard_result_saves_neither_task_nor_shards(store: TaskStore) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "dummy", result={"ok": 1})
    shards = [
        TaskShard(task.task_id, 0, "job-0", "dummy", result={"00": 1}),
        TaskShard(task.task_id, 1, "job-1", "dummy", sub_index_offset=1, result={"00": {1, 2}}),
    ]
    with pytest.raises(UnserializableValueError):
        store.save(task, shards)
    assert store.get(task.task_id) is None
    assert store.get_shards(task.task_id) == []
    assert store.count() == 0


def _loads_outcome(read: Any, text: str) -> tuple[str, Any]:
    try:
        return ("ok", read(text))
    except ValueError as exc:  # JSONDecodeError
        return ("error", type(exc))
    except RecursionError:
        return ("error", RecursionError)


_JSONISH = st.one_of(
    st.text(),
    st.text(alphabet=' \t\n\r{}[]":,0123456789.eE+-truefalsnNaIiy\\u$uniqc\ufeff'),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    ).map(json.dumps),
).flatmap(
    lambda text: st.sampled_from(
        [text, " " + text, text + " ", text + "x", "\ufeff" + text, text + "\n"]
    )
)


@given(_JSONISH)
def test_decode_json_reads_any_text_as_json_loads_with_the_tag_hook_does(text: str) -> None:
    """The scanner shortcut for texts as the store writes them changes no answer: any
    text (whitespace around it, trailing junk, a BOM, NaN, a bare value) reads as
    ``json.loads`` with the tag hook reads it, or fails as it fails."""
    from uniqc_taskstore.jsoncodec import _decode_tagged

    expected = _loads_outcome(lambda t: json.loads(t, object_hook=_decode_tagged), text)
    actual = _loads_outcome(decode_json, text)
    if expected[0] == "ok" and actual[0] == "ok":
        assert same(expected[1], actual[1])
    else:
        assert actual == expected
