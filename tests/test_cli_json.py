"""The CLI's ``--json`` is standard JSON (RFC 8259) for every value the store accepts:
values plain JSON cannot hold appear in the store's own tagged form, so nothing is lost
and every JSON reader (``json.loads`` without NaN literals, ``jq``, ``JSON.parse``)
accepts it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniqc_taskstore import TaskInfo, TaskShard, TaskStatus, TaskStore, generate_uniqc_task_id
from uniqc_taskstore.cli import main
from uniqc_taskstore.jsoncodec import TAG, from_jsonable, to_jsonable


def strict_json(text: str) -> Any:
    """Parse as RFC 8259 JSON: NaN / Infinity literals are an error."""

    def refuse(literal: str) -> Any:
        raise ValueError(f"non-standard JSON literal {literal}")

    return json.loads(text, parse_constant=refuse)


def location_args(store_location: dict[str, Any]) -> list[str]:
    """CLI options naming the location a ``store_location`` fixture describes."""
    if "cache_dir" in store_location:
        return ["--cache-dir", str(store_location["cache_dir"])]
    return ["--url", store_location["url"]]


def cli_json(capsys: pytest.CaptureFixture[str], where: dict[str, Any], *argv: str) -> Any:
    code = main([*argv, *location_args(where), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return strict_json(captured.out)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.complex_numbers()
    | st.text(max_size=10)
    | st.floats().map(np.float64)
    | st.integers(min_value=-(2**31), max_value=2**31 - 1).map(np.int32)
    | st.lists(st.floats(), max_size=4).map(np.array)
)
keys = (
    st.text(max_size=6)
    | st.integers(min_value=-1000, max_value=1000)
    | st.tuples(st.integers(0, 9), st.integers(0, 9))
    | st.just(TAG)
)
stored_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


def same(shown: Any, stored: Any) -> None:
    """The CLI printed exactly the store's tagged form of ``stored``, and it reads back."""
    assert shown == strict_json(json.dumps(to_jsonable(stored), allow_nan=False))
    assert repr(from_jsonable(shown)) == repr(stored)  # repr: NaN-safe equality


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(result=stored_values, metadata=stored_values)
def test_json_output_is_standard_json_holding_every_stored_value(
    capsys: pytest.CaptureFixture[str],
    store: TaskStore,
    store_location: dict[str, Any],
    result: Any,
    metadata: Any,
) -> None:
    task = TaskInfo(
        generate_uniqc_task_id(),
        "originq:WK_C180",
        status=TaskStatus.SUCCESS,
        result=result,
        metadata={"value": metadata},
    )
    shard = TaskShard(
        task.task_id, 0, "job", task.backend, status=TaskStatus.SUCCESS, result=result
    )
    store.save(task, [shard])
    stored = store.get(task.task_id)
    [stored_shard] = store.get_shards(task.task_id)
    assert stored is not None

    shown = cli_json(capsys, store_location, "show", task.task_id)
    same(shown["result"], stored.result)
    same(shown["metadata"], stored.metadata)
    [shown_shard] = cli_json(capsys, store_location, "shards", task.task_id)
    same(shown_shard["result"], stored_shard.result)
    listed = cli_json(capsys, store_location, "list", "--all")
    [summary] = [t for t in listed if t["task_id"] == task.task_id]
    same(summary["metadata"], stored.metadata)


AWKWARD = {
    "nan": math.nan,
    "infinities": [math.inf, -math.inf],
    "amplitude": complex(0.5, -0.5),
    "counts by int": {0: 512, 1: 488},
    "by tuple": {(0, 1): 3},
    "numpy": [np.float64(0.25), np.int64(7), np.array([[1.0, math.nan]])],
}


def test_nan_infinity_complex_and_odd_keys_come_out_tagged(
    capsys: pytest.CaptureFixture[str], store: TaskStore, store_location: dict[str, Any]
) -> None:
    task = TaskInfo(generate_uniqc_task_id(), "ibm:brisbane", result=AWKWARD)
    store.save(task)
    shown = cli_json(capsys, store_location, "show", task.task_id)
    assert shown["result"]["nan"] == {TAG: "float", "value": "nan"}
    assert shown["result"]["amplitude"] == {TAG: "complex", "real": 0.5, "imag": -0.5}
    assert shown["result"]["counts by int"] == {TAG: "map", "items": [[0, 512], [1, 488]]}
    assert shown["result"]["numpy"][:2] == [0.25, 7]
    back = from_jsonable(shown["result"])
    assert back["counts by int"] == {0: 512, 1: 488}
    assert back["by tuple"] == {(0, 1): 3}
    assert back["amplitude"] == complex(0.5, -0.5)
    assert math.isnan(back["nan"])


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        ("jq", ["jq", "-e", ".result.nan"]),
        ("node", ["node", "-e", "JSON.parse(require('fs').readFileSync(0, 'utf8'))"]),
    ],
)
def test_other_json_readers_accept_the_output(
    capsys: pytest.CaptureFixture[str],
    store: TaskStore,
    store_location: dict[str, Any],
    tool: str,
    argv: list[str],
) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    task = TaskInfo(generate_uniqc_task_id(), "ibm:brisbane", result=AWKWARD)
    store.save(task)
    code = main(["show", task.task_id, *location_args(store_location), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    parsed = subprocess.run(argv, input=out, capture_output=True, text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
