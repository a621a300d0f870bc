"""Cutting a batch of circuits into platform jobs and putting their results back.

Pure rules, no database: ``sub_index_offset`` and ``circuit_count`` are the only
truth for where a shard's circuits sit in the user's original batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from .errors import InvalidInputError, ShardLayoutError


class ShardPlan(NamedTuple):
    """Where one shard sits in the batch: circuits ``[offset, offset + circuit_count)``."""

    shard_index: int
    sub_index_offset: int
    circuit_count: int


class _ShardLike(Protocol):
    @property
    def shard_index(self) -> int: ...
    @property
    def sub_index_offset(self) -> int: ...
    @property
    def circuit_count(self) -> int: ...


class _ShardWithResult(_ShardLike, Protocol):
    @property
    def result(self) -> Any: ...


def plan_shards(n_circuits: int, max_native_batch_size: int) -> list[ShardPlan]:
    """Cut ``n_circuits`` into consecutive shards of at most ``max_native_batch_size``.

    Every circuit lands in exactly one shard, in submission order; only the last
    shard may be smaller. An empty batch has no shards.
    """
    for name, value, minimum in (
        ("n_circuits", n_circuits, 0),
        ("max_native_batch_size", max_native_batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInputError(name, value, f"must be an integer >= {minimum}")
    return [
        ShardPlan(index, offset, min(max_native_batch_size, n_circuits - offset))
        for index, offset in enumerate(range(0, n_circuits, max_native_batch_size))
    ]


def check_layout(shards: Iterable[_ShardLike]) -> None:
    """Raise :class:`ShardLayoutError` if two shards share an index or a circuit.

    Gaps are allowed here: shards of a batch may be saved one at a time.
    """
    ordered = sorted(shards, key=lambda s: (s.sub_index_offset, s.shard_index))
    indexes: set[int] = set()
    previous: _ShardLike | None = None
    for shard in ordered:
        if shard.shard_index in indexes:
            raise ShardLayoutError(
                "shard_index", shard.shard_index, "two shards of the task have this index"
            )
        indexes.add(shard.shard_index)
        if previous is not None and shard.sub_index_offset < _end(previous):
            raise ShardLayoutError(
                "sub_index_offset",
                shard.sub_index_offset,
                f"shard {shard.shard_index} overlaps shard {previous.shard_index}, "
                f"which covers circuits {previous.sub_index_offset}..{_end(previous) - 1}",
            )
        previous = shard


MAX_ASSEMBLED_CIRCUITS = 10_000_000
"""Most circuits :func:`assemble_results` puts in one list: a shard may say it holds up
to 2**31 - 1, and a list of that many results (even ``None``) does not fit in memory,
nor its JSON in a database field."""


def assemble_results(
    shards: Iterable[_ShardWithResult], *, allow_missing: bool = False
) -> list[Any]:
    """Per-circuit results of a task in submission order.

    A one-circuit shard contributes its ``result`` (a one-element list is
    unwrapped); a native batch contributes its list, which must hold exactly
    ``circuit_count`` entries. The shards must cover circuits ``0..n-1`` with no
    gap and no overlap. A shard with no result raises, or gives ``None`` for each
    of its circuits when ``allow_missing`` is true. Shards covering more than
    :data:`MAX_ASSEMBLED_CIRCUITS` circuits raise :class:`ShardLayoutError` before
    anything is built.
    """
    ordered = sorted(shards, key=lambda s: (s.sub_index_offset, s.shard_index))
    check_layout(ordered)
    total = max((_end(shard) for shard in ordered), default=0)
    if total > MAX_ASSEMBLED_CIRCUITS:
        raise ShardLayoutError(
            "circuit_count",
            total,
            f"the task's shards cover {total:,} circuits, more than the "
            f"{MAX_ASSEMBLED_CIRCUITS:,} whose results can be put in one list; read the "
            "shards' results one by one (get_shards)",
        )
    results: list[Any] = []
    for shard in ordered:
        if shard.sub_index_offset != len(results):
            raise ShardLayoutError(
                "sub_index_offset",
                shard.sub_index_offset,
                f"shard {shard.shard_index} starts at circuit {shard.sub_index_offset}, "
                f"but circuits {len(results)}..{shard.sub_index_offset - 1} are in no shard",
            )
        results.extend(_circuit_results(shard, allow_missing))
    return results


def _circuit_results(shard: _ShardWithResult, allow_missing: bool) -> Sequence[Any]:
    result = shard.result
    if result is None:
        if allow_missing:
            return [None] * shard.circuit_count
        raise ShardLayoutError("result", None, f"shard {shard.shard_index} has no result yet")
    if shard.circuit_count == 1:
        if isinstance(result, list):
            if len(result) != 1:
                raise ShardLayoutError(
                    "result",
                    result,
                    f"shard {shard.shard_index} covers 1 circuit but its result lists "
                    f"{len(result)}",
                )
            return result
        return [result]
    if not isinstance(result, list) or len(result) != shard.circuit_count:
        found = f"{len(result)} results" if isinstance(result, list) else "a single result"
        raise ShardLayoutError(
            "result",
            result,
            f"shard {shard.shard_index} covers {shard.circuit_count} circuits but holds {found}",
        )
    return result


def _end(shard: _ShardLike) -> int:
    return shard.sub_index_offset + shard.circuit_count
