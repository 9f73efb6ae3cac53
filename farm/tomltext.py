"""Parse a user's TOML text into plain data, refusing what would crash a reader further on.

`tomllib` recurses once per nested array or inline table, so ``x = [[[[...]]]]`` a few hundred
deep raises `RecursionError` (a traceback, not an answer); data a few dozen deep parses but breaks
msgpack (512 levels), deep copies and recursive checks later. Both are refused here, where the
file's name and the line are known.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from farm.errors import ProjectError

MAX_DEPTH = 32  # nested tables and arrays below the top level; settings need a handful


def parse_toml(text: str, file: Path | str) -> dict[str, Any]:
    """The TOML document `text` (read from `file`) as dicts and lists, at most MAX_DEPTH deep.

    Raises `ProjectError` naming `file` (and the line where known) for invalid TOML or nesting
    deeper than MAX_DEPTH.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise ProjectError(f"invalid TOML: {exc}", file=file, line=int(found.group(1)) if found else None) from None
    except RecursionError:
        raise _too_deep(text, file, None) from None
    path = too_deep_path(data)
    if path is not None:
        raise _too_deep(text, file, path)
    return data


def too_deep_path(data: Any, limit: int = MAX_DEPTH) -> list[str] | None:
    """The path (keys, and ``[i]`` for list items) to the first value nested more than ``limit``
    dicts, lists or tuples deep, or None. Iterative: any depth is walked without recursion."""
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    while stack:
        item, path = stack.pop()
        if len(path) > limit:
            return path
        if isinstance(item, dict):
            stack.extend((v, [*path, str(k)]) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, [*path, f"[{i}]"]) for i, v in enumerate(item))
    return None


def path_key(path: list[str]) -> str | None:
    """A `too_deep_path` as a short key for an error: its first three names (list items left out)."""
    names = [p for p in path if not p.startswith("[")]
    return ".".join(names[:3]) + (" ..." if len(names) > 3 else "") if names else None


def _too_deep(text: str, file: Path | str, path: list[str] | None) -> ProjectError:
    key = path_key(path) if path else None
    return ProjectError(f"tables and arrays nest more than {MAX_DEPTH} levels deep (the limit)",
                        file=file, key=key, line=_deep_line(text))


def _deep_line(text: str) -> int | None:
    """The first line where brackets open more than MAX_DEPTH deep (counting roughly, strings aside)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for char in line.split("#", 1)[0]:
            depth += char in "[{"
            depth -= char in "]}"
            if depth > MAX_DEPTH:
                return number
    return None
