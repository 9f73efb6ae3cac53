"""Words for counts in messages people read."""

from __future__ import annotations


def counted(count: int | float, noun: str, plural: str | None = None) -> str:
    """``counted(1, "job")`` -> "1 job"; ``counted(3, "job")`` -> "3 jobs" (`plural`: an irregular one)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
