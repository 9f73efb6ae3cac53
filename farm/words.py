"""Words for counts in messages people read."""

from __future__ import annotations

from collections.abc import Iterable


def counted(count: int | float, noun: str, plural: str | None = None) -> str:
    """``counted(1, "job")`` -> "1 job"; ``counted(3, "job")`` -> "3 jobs" (`plural`: an irregular one)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def capabilities_shown(caps: Iterable[str]) -> str:
    """An agent's capabilities as the agent's "connected" line and `farm status` both say them:
    ``[audio, blender, frames]`` (media types it renders, their renderers, its --tag values)."""
    return f"[{', '.join(sorted(caps))}]"
