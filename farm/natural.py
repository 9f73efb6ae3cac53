"""Job keys in natural order: numbers in them compare as numbers, so ``5/0/8+4`` comes before
``5/0/16+4`` and ``frame-9`` before ``frame-10`` (`farm jobs`, the HTTP API's jobs pages)."""

from __future__ import annotations

import re

_PARTS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key for ``text``: its runs of digits as numbers, the rest as text (ties: by text)."""
    return tuple((0, int(p)) if i % 2 else (1, p) for i, p in enumerate(_PARTS.split(text))) + ((1, text),)


def natural_compare(a: str, b: str) -> int:
    """-1, 0 or 1: an SQLite collation (``ORDER BY key COLLATE natkey``), so pages cut by
    LIMIT and OFFSET follow the same order."""
    ka, kb = natural_key(a), natural_key(b)
    return (ka > kb) - (ka < kb)
