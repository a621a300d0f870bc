"""Cutting a batch into shards and putting per-circuit results back in submission order.

Pure rules over real TaskShard objects; no database.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from uniqc_taskstore import (
    InvalidInputError,
    ShardLayoutError,
    ShardPlan,
    TaskShard,
    assemble_results,
    plan_shards,
)

TASK_ID = "uqt_" + "ab" * 16


def circuit_result(position: int) -> dict[str, Any]:
    return {"circuit": position, "counts": {"00": position, "11": 1000 - position}}


def shard(
    index: int, offset: int, count: int, result: Any = None, *, job: str | None = None
) -> TaskShard:
    return TaskShard(
        TASK_ID,
        index,
        job or f"job-{index}",
        "dummy",
        circuit_count=count,
        sub_index_offset=offset,
        result=result,
    )


def shards_with_results(
    plans: list[ShardPlan], results: list[Any], *, wrap_single: bool = False
) -> list[TaskShard]:
    """Shards of ``plans`` holding ``results``: a list for a batch, the bare result (or a
    one-element list when ``wrap_single``) for a one-circuit shard."""
    made = []
    for plan in plans:
        part = results[plan.sub_index_offset : plan.sub_index_offset + plan.circuit_count]
        value: Any = part if plan.circuit_count > 1 or wrap_single else part[0]
        if plan.circuit_count == 1:
            event("one-circuit shard, list result" if wrap_single else "one-circuit shard, bare")
        else:
            event("batch shard")
        made.append(shard(plan.shard_index, plan.sub_index_offset, plan.circuit_count, value))
    return made


def end(plan: ShardPlan) -> int:
    return plan.sub_index_offset + plan.circuit_count


# -- plan_shards --------------------------------------------------------------------------


@given(st.integers(0, 2000), st.integers(1, 300))
def test_plan_puts_every_circuit_in_exactly_one_shard_in_order(n: int, max_size: int) -> None:
    plans = plan_shards(n, max_size)
    event("empty batch" if n == 0 else "last shard partly full" if n % max_size else "all full")
    assert len(plans) == math.ceil(n / max_size)
    assert [p.shard_index for p in plans] == list(range(len(plans)))
    covered = [
        c for p in plans for c in range(p.sub_index_offset, p.sub_index_offset + p.circuit_count)
    ]
    assert covered == list(range(n))
    position = 0
    for plan in plans:
        assert isinstance(plan, ShardPlan)
        assert plan.sub_index_offset == position
        assert 1 <= plan.circuit_count <= max_size
        position += plan.circuit_count
    assert position == n
    assert all(p.circuit_count == max_size for p in plans[:-1])


def test_empty_batch_has_no_shards() -> None:
    assert plan_shards(0, 5) == []


def test_plan_of_seven_by_three() -> None:
    assert plan_shards(7, 3) == [ShardPlan(0, 0, 3), ShardPlan(1, 3, 3), ShardPlan(2, 6, 1)]


def test_batch_within_limit_is_one_shard() -> None:
    assert plan_shards(5, 5) == [ShardPlan(0, 0, 5)]
    assert plan_shards(1, 300) == [ShardPlan(0, 0, 1)]


@pytest.mark.parametrize(
    ("n", "max_size", "field"),
    [
        (-1, 5, "n_circuits"),
        (5, 0, "max_native_batch_size"),
        (5, -3, "max_native_batch_size"),
        (True, 5, "n_circuits"),
        (5, True, "max_native_batch_size"),
        (False, 5, "n_circuits"),
        (5.0, 5, "n_circuits"),
        (5, 2.0, "max_native_batch_size"),
        ("5", 5, "n_circuits"),
        (None, 5, "n_circuits"),
    ],
)
def test_bad_plan_arguments_are_invalid_input(n: Any, max_size: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        plan_shards(n, max_size)
    assert caught.value.field == field


# -- assemble_results ---------------------------------------------------------------------


@given(
    st.integers(1, 60),
    st.integers(1, 10),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_assembled_results_come_back_in_submission_order(
    n: int, max_size: int, wrap_single: bool, rng: random.Random
) -> None:
    expected = [circuit_result(i) for i in range(n)]
    shards = shards_with_results(plan_shards(n, max_size), expected, wrap_single=wrap_single)
    rng.shuffle(shards)
    assert assemble_results(shards) == expected


def test_no_shards_assemble_to_no_results() -> None:
    assert assemble_results([]) == []


def test_one_circuit_shard_with_dict_result_gives_that_dict() -> None:
    assert assemble_results([shard(0, 0, 1, {"00": 7})]) == [{"00": 7}]


def test_one_circuit_shard_with_one_element_list_is_unwrapped() -> None:
    assert assemble_results([shard(0, 0, 1, [{"00": 7}])]) == [{"00": 7}]


def test_mixed_single_and_batch_shards_assemble_in_order() -> None:
    shards = [
        shard(2, 3, 1, {"c": 3}),
        shard(0, 0, 2, [{"c": 0}, {"c": 1}]),
        shard(1, 2, 1, [{"c": 2}]),
    ]
    assert assemble_results(shards) == [{"c": 0}, {"c": 1}, {"c": 2}, {"c": 3}]


def test_offsets_not_indexes_decide_order() -> None:
    shards = [shard(0, 2, 1, {"c": 2}), shard(1, 0, 2, [{"c": 0}, {"c": 1}])]
    assert assemble_results(shards) == [{"c": 0}, {"c": 1}, {"c": 2}]


@given(st.integers(2, 40), st.integers(1, 6), st.data())
def test_removing_an_inner_shard_is_a_gap(n: int, max_size: int, data: st.DataObject) -> None:
    plans = plan_shards(n, max_size)
    if len(plans) < 2:
        event("one shard planned: re-planned one circuit per shard")
        plans = plan_shards(n, 1)
    shards = shards_with_results(plans, [circuit_result(i) for i in range(n)])
    removed = data.draw(st.integers(0, len(shards) - 2))
    del shards[removed]
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results(shards)
    assert caught.value.field == "sub_index_offset"


@given(st.integers(2, 40), st.integers(2, 6), st.data())
def test_shifting_a_shard_back_is_an_overlap(n: int, max_size: int, data: st.DataObject) -> None:
    plans = plan_shards(n, max_size)
    if len(plans) < 2:
        event("one shard planned: re-planned one circuit per shard")
        plans = plan_shards(n, 1)
    shards = shards_with_results(plans, [circuit_result(i) for i in range(n)])
    moved = shards[data.draw(st.integers(1, len(shards) - 1))]
    moved.sub_index_offset -= 1
    with pytest.raises(ShardLayoutError):
        assemble_results(shards)


def test_gap_between_shards_is_a_layout_error() -> None:
    shards = [shard(0, 0, 2, [{}, {}]), shard(1, 3, 1, {})]
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results(shards)
    assert caught.value.field == "sub_index_offset"
    assert caught.value.value == 3


def test_first_shard_not_at_zero_is_a_gap() -> None:
    with pytest.raises(ShardLayoutError):
        assemble_results([shard(0, 1, 1, {})])


def test_overlapping_shards_are_a_layout_error() -> None:
    shards = [shard(0, 0, 3, [{}, {}, {}]), shard(1, 2, 2, [{}, {}])]
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results(shards)
    assert caught.value.field == "sub_index_offset"


def test_two_shards_at_same_offset_are_a_layout_error() -> None:
    with pytest.raises(ShardLayoutError):
        assemble_results([shard(0, 0, 1, {"a": 1}), shard(1, 0, 1, {"b": 1})])


def test_duplicated_shard_index_is_a_layout_error() -> None:
    shards = [shard(0, 0, 1, {}), shard(0, 1, 1, {}, job="other-job")]
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results(shards)
    assert caught.value.field == "shard_index"
    assert caught.value.value == 0


@pytest.mark.parametrize(
    ("count", "result"),
    [
        (3, [{}, {}]),
        (3, [{}, {}, {}, {}]),
        (2, []),
        (2, {"00": 1}),
        (1, [{}, {}]),
        (1, []),
    ],
)
def test_result_length_must_match_circuit_count(count: int, result: Any) -> None:
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results([shard(0, 0, count, result)])
    assert caught.value.field == "result"


def test_missing_result_is_a_layout_error() -> None:
    shards = [shard(0, 0, 2, [{"c": 0}, {"c": 1}]), shard(1, 2, 2, None)]
    with pytest.raises(ShardLayoutError) as caught:
        assemble_results(shards)
    assert caught.value.field == "result"


def test_allow_missing_puts_none_for_each_missing_circuit() -> None:
    shards = [shard(1, 2, 2, None), shard(0, 0, 2, [{"c": 0}, {"c": 1}]), shard(2, 4, 1, None)]
    assert assemble_results(shards, allow_missing=True) == [{"c": 0}, {"c": 1}, None, None, None]


def test_allow_missing_does_not_excuse_a_gap() -> None:
    with pytest.raises(ShardLayoutError):
        assemble_results([shard(0, 0, 1, None), shard(1, 2, 1, None)], allow_missing=True)


def test_layout_error_is_invalid_input() -> None:
    assert issubclass(ShardLayoutError, InvalidInputError)
    assert issubclass(ShardLayoutError, ValueError)
