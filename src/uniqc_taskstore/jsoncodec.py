"""JSON text for results and metadata, faithful for what numerical code hands us.

Plain JSON values are written as plain, standard JSON (no ``NaN`` literals), so
any JSON reader can read the columns. Values JSON has no form for are written as
small tagged objects ``{"$uniqc": kind, ...}`` and come back as they went in:

* NaN and infinities (``{"$uniqc": "float", "value": "nan"}``),
* complex numbers (``{"$uniqc": "complex", "real": .., "imag": ..}``),
* dicts with non-string keys, e.g. ``{0: 512, 1: 488}``
  (``{"$uniqc": "map", "items": [[key, value], ...]}``), and dicts that
  themselves use the ``"$uniqc"`` key.

numpy scalars and arrays are recognised without importing numpy: anything with
``dtype`` and ``tolist`` is stored as ``value.tolist()``, so a numpy scalar comes
back as the equal Python number and an array as nested lists. Tuples come back
as lists, as with :mod:`json`. Anything else is refused with
:class:`UnserializableValueError` naming where in the value it sits.

Limits, the same on every database, so that what is saved can always be read back:
lists and dicts nest at most :data:`MAX_DEPTH` deep, and integers have at most
:data:`MAX_INT_DIGITS` digits (Python reads no longer ones from text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .errors import UnserializableValueError

TAG = "$uniqc"
MAX_DEPTH = 100
"""Deepest nesting of lists and dicts in a stored result or metadata value."""
ENVELOPE_DEPTH = 5
"""Levels of lists and dicts an export or a CLI document puts around the stored values
it holds (``{"tasks": [{"shards": [{"result": ...}]}]}``), allowed on top of
:data:`MAX_DEPTH` when writing them out (:func:`to_jsonable`'s ``enclosing``)."""
MAX_INT_DIGITS = 4300
"""Most digits of a stored integer: Python's own limit for reading one from text."""
_INT_BOUND = 10**MAX_INT_DIGITS
_HashableKey = str | int | float | bool | None | tuple[Any, ...]


class JsonReady(NamedTuple):
    """A value already turned into plain JSON data by :func:`prepare_json`."""

    tree: Any


def prepare_json(value: Any, field: str) -> JsonReady | None:
    """``value`` checked and converted for storage; errors name ``field``."""
    return None if value is None else JsonReady(to_jsonable(value, field))


def encode_json(value: Any, field: str = "value") -> str:
    """Standard JSON text of ``value``; raises :class:`UnserializableValueError`."""
    return dump_jsonable(to_jsonable(value, field))


def dump_jsonable(tree: Any) -> str:
    """Standard JSON text of data made by :func:`to_jsonable`."""
    return json.dumps(
        # ensure_ascii: a lone surrogate (valid in a Python str, not in UTF-8) is written
        # as a \\u escape, which reads back as it was, instead of failing in the driver.
        tree,
        allow_nan=False,
        ensure_ascii=True,
        separators=(",", ":"),
    )


def decode_json(text: str | bytes) -> Any:
    """The value :func:`encode_json` was given; also reads legacy ``NaN`` literals."""
    if type(text) is str and not text.startswith("\ufeff"):
        # What json.loads does with this text, minus building a decoder per call, and,
        # for a text that is one value with no whitespace around it (as the store writes
        # them), minus the decoder's two whitespace matches: its scanner alone.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            return _DECODER.decode(text)  # no value at 0: raises what json.loads raises
        if end == len(text):
            return value
        return _DECODER.decode(text)
    return json.loads(text, object_hook=_decode_tagged)


def to_jsonable(value: Any, field: str = "value", *, enclosing: int = 0) -> Any:
    """``value`` as plain JSON data (tagged where JSON has no form for it).

    ``enclosing``: how many levels of lists and dicts ``value`` wraps around the stored
    values it holds (an export line, a CLI document), allowed on top of
    :data:`MAX_DEPTH`, so that whatever was saved can be written out inside them."""
    try:
        return _encode(value, field, -enclosing)
    except RecursionError:
        raise UnserializableValueError(
            field, value, "is nested too deeply or contains itself"
        ) from None


def from_jsonable(data: Any) -> Any:
    """Inverse of :func:`to_jsonable`, for drivers that hand back parsed JSON."""
    if isinstance(data, list):
        decoded = []
        for item in data:  # a loop, not a comprehension: one stack frame per level
            decoded.append(from_jsonable(item))
        return decoded
    if isinstance(data, dict):
        fields = {}
        for key, item in data.items():
            fields[key] = from_jsonable(item)
        return _decode_tagged(fields)
    return data


def _encode(value: Any, path: str, depth: int) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -_INT_BOUND < value < _INT_BOUND:
            raise UnserializableValueError(
                path, value, f"an integer of more than {MAX_INT_DIGITS} digits cannot be stored"
            )
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else _special_float(value)
    if isinstance(value, complex):
        return {
            TAG: "complex",
            "real": _encode(value.real, path, depth),
            "imag": _encode(value.imag, path, depth),
        }
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_DEPTH:
        raise UnserializableValueError(
            path, value, f"lists and dicts nest more than {MAX_DEPTH} deep"
        )
    if isinstance(value, Mapping):
        return _encode_mapping(value, path, depth + 1)
    if isinstance(value, (list, tuple)):
        return [_encode(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if hasattr(value, "dtype") and callable(getattr(value, "tolist", None)):
        return _encode(value.tolist(), path, depth)
    raise UnserializableValueError(
        path,
        value,
        f"a {type(value).__name__} cannot be stored as JSON; convert it to numbers, "
        "strings, lists or dicts first",
    )


def _encode_mapping(value: Mapping[Any, Any], path: str, depth: int) -> Any:
    if all(isinstance(key, str) for key in value) and TAG not in value:
        return {key: _encode(item, f"{path}[{key!r}]", depth) for key, item in value.items()}
    items = []
    for key, item in value.items():
        items.append([_encode_key(key, path, depth), _encode(item, f"{path}[{key!r}]", depth)])
    return {TAG: "map", "items": items}


def _encode_key(key: Any, path: str, depth: int) -> Any:
    if isinstance(key, tuple):
        if depth >= MAX_DEPTH:
            raise UnserializableValueError(
                f"{path} key", key, f"tuples nest more than {MAX_DEPTH} deep"
            )
        return {TAG: "tuple", "items": [_encode_key(part, path, depth + 1) for part in key]}
    if key is None or isinstance(key, (str, int, float, complex)):
        return _encode(key, path, depth)
    if hasattr(key, "dtype") and callable(getattr(key, "tolist", None)):
        return _encode_key(key.tolist(), path, depth)
    raise UnserializableValueError(
        f"{path} key", key, f"a {type(key).__name__} cannot be stored as a JSON key"
    )


def _special_float(value: float) -> dict[str, str]:
    text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return {TAG: "float", "value": text}


def _decode_tagged(obj: dict[str, Any]) -> Any:
    kind = obj.get(TAG)
    if kind is None:
        return obj
    if kind == "float" and len(obj) == 2:
        return float(obj["value"])
    if kind == "complex" and len(obj) == 3:
        return complex(obj["real"], obj["imag"])
    if kind == "map" and len(obj) == 2:
        return {_hashable(key): item for key, item in obj["items"]}
    if kind == "tuple" and len(obj) == 2:
        return tuple(obj["items"])
    return obj


def _hashable(key: Any) -> _HashableKey:
    if isinstance(key, list):
        return tuple(_hashable(part) for part in key)
    return key  # type: ignore[no-any-return]


_DECODER = json.JSONDecoder(object_hook=_decode_tagged)
"""The decoder :func:`decode_json` shares (as json.loads shares its default one)."""
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
"""Its scanner (what ``JSONDecoder.raw_decode`` calls; typeshed leaves it out)."""
