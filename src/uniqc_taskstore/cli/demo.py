"""``demo``: submit a batch through the dummy adapter and poll it to the end."""

from __future__ import annotations

import click

from ..demo import DummyAdapter
from . import output
from .options import common_options, open_store


@click.command("demo")
@click.option(
    "--circuits",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Circuits in the batch.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="The adapter's max_native_batch_size: circuits per platform job.",
)
@common_options
def demo_command(circuits: int, max_batch: int) -> None:
    """Submit a batch through a dummy adapter, poll it to the end, print what the store holds.

    Creates the store if there is none.
    """
    batch = [f"OPENQASM 2.0; // demo circuit {n}" for n in range(circuits)]
    with open_store(create=True) as store:
        adapter = DummyAdapter(store, max_native_batch_size=max_batch)
        task_id = adapter.submit(batch, shots=1000)
        polls = 1
        while not adapter.poll(task_id).is_terminal:
            polls += 1
        task = store.get(task_id)
        assert task is not None
        shards = store.get_shards(task_id)
        results = adapter.results(task_id)
        recent = store.list(limit=10, include_results=False)
        location = store.location
    if output.wants_json():
        output.emit(
            {"task": task.to_dict(), "shards": [s.to_dict() for s in shards], "results": results}
        )
        return
    output.line(f"Store: {location}")
    output.line(
        f"Submitted {circuits} circuits as task {task_id} on {task.backend}, "
        f"cut into {len(shards)} platform jobs of at most {max_batch}; "
        f"finished after {polls} polls.\n"
    )
    output.tasks_table(recent, output.task_columns(recent))
    output.line()
    output.shards_table(shards)
    output.line("\nPer-circuit results in submission order:")
    for index, (circuit, counts) in enumerate(zip(batch, results, strict=True)):
        output.line(f"  [{index}] {circuit}  ->  {counts}")
