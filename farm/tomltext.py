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
        line = int(found.group(1)) if found else None
        if str(exc).startswith("Unclosed array"):  # tomllib points at what came next, maybe lines below
            opened = unclosed_array(text, line)
            if opened is not None:
                key, line = opened
                raise ProjectError("invalid TOML: the array that opens on this line is never closed with ']' "
                                   f"(tomllib: {exc})", file=file, key=key, line=line) from None
        raise ProjectError(f"invalid TOML: {exc}", file=file, line=line) from None
    except RecursionError:
        raise _too_deep(text, file, None) from None
    path = too_deep_path(data)
    if path is not None:
        raise _too_deep(text, file, path)
    return data


_STRING = re.compile(r'"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'', re.S)


def unclosed_array(text: str, before_line: int | None) -> tuple[str | None, int] | None:
    """Where the innermost array still open before line ``before_line`` (None: the end) opened, as
    (its key, ``[table] key`` or ``key``; its line), or None if no array is open there.

    `tomllib` reports an unclosed array where it met what came next, after blank lines and comments:
    a line or more past the array the user left open.
    """
    lines = text.splitlines()
    end = len(text) if before_line is None else sum(len(x) + 1 for x in lines[:before_line - 1])
    table, key, opened = None, None, []  # opened: the line of each array open at this point
    pos, number, line_start = 0, 1, True
    while pos < min(end, len(text)):
        char = text[pos]
        if char == "\n":
            number, line_start, pos = number + 1, True, pos + 1
            continue
        if char in " \t\r":
            pos += 1
            continue
        if char == "#":
            pos = text.find("\n", pos) if "\n" in text[pos:] else len(text)
            continue
        string = _STRING.match(text, pos) if char in "\"'" else None
        if string:
            number += string.group().count("\n")
            pos, line_start = string.end(), False
            continue
        if line_start and not opened:
            if char == "[":  # a table header, [name] or [[name]]
                close = text.find("]", pos)
                table = text[pos:close + 1].strip("[] ") if close > 0 else table
                pos = text.find("\n", pos) if "\n" in text[pos:] else len(text)
                continue
            equals = text.find("=", pos)
            if equals > 0 and "\n" not in text[pos:equals]:
                key = text[pos:equals].strip()
                pos, line_start = equals + 1, False
                continue
        line_start = False
        if char == "[":
            opened.append(number)
        elif char == "]" and opened:
            opened.pop()
        pos += 1
    if not opened:
        return None
    return (f"[{table}] {key}" if table and key else key), opened[-1]


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
