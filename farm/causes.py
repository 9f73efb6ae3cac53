"""The one walk along an exception's causes: what raised it, and what was being handled when it was."""

from __future__ import annotations

from collections.abc import Callable

CHAIN_LIMIT = 8  # a cause chain is short; bounded all the same (a chain may loop)


def cause(exc: BaseException, test: Callable[[BaseException], bool]) -> BaseException | None:
    """The first of ``exc`` and what led to it (``__cause__``, else ``__context__``, also under
    ``from None``: a plugin's wording does not hide a full disk) that passes ``test``, or None."""
    seen: BaseException | None = exc
    for _ in range(CHAIN_LIMIT):
        if seen is None:
            return None
        if test(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
