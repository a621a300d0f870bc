"""What ``search`` means, as one pure rule, and the folded text the store keeps for it.

``search=term`` matches a task when ``fold(term)`` is a substring of ``fold(text)`` for
its id, its backend, its name or the platform job id of one of its shards, where
:func:`fold` is Python's ``str.casefold`` (full Unicode case folding: ``"É"`` and ``"é"``
fold alike, ``"ß"`` and ``"SS"`` both to ``"ss"``, ``"İ"`` to ``"i̇"``). Nothing else is
ignored: accents, punctuation, symbols and emoji count as they are, and text is not
normalised (``"é"`` as one code point is not ``"e"`` followed by a combining accent).
``%``, ``_`` and ``\\`` are plain characters.

The databases' own ``lower()``, collations and ``LIKE`` each fold differently (ASCII
only, the locale's rules, accent-insensitive), so the store writes the folded text
beside the originals (the ``search_key`` columns, schema v11) and the databases look for
the folded term in it byte for byte (:func:`uniqc_taskstore.filters.holds`): SQLite,
PostgreSQL and MariaDB answer alike. Folding follows the Unicode version of the Python
that wrote the row.
"""

from __future__ import annotations

SEPARATOR = "A"
"""Between a task's folded fields in its key. Case folding turns every ``A`` into ``a``
and never produces one, so a folded term holds none: a match can never span two
fields."""


def fold(text: str) -> str:
    """``text`` as ``search`` compares it: ``str.casefold``."""
    return text.casefold()


def task_search_key(task_id: str, backend: str, name: str | None) -> str:
    """The folded id, backend and name of a task, joined by :data:`SEPARATOR`."""
    return SEPARATOR.join((fold(task_id), fold(backend), fold(name or "")))


def shard_search_key(platform_task_id: str) -> str:
    """The folded platform job id of a shard."""
    return fold(platform_task_id)


def matches(term: str, texts: list[str]) -> bool:
    """The rule itself, for tests and readers: whether ``search=term`` matches a task
    whose id, backend, name and platform job ids are ``texts``."""
    folded = fold(term)
    return any(folded in fold(text) for text in texts)
