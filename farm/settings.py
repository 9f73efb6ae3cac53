"""Typed, located reading of a `farm.toml` table.

Media types read their own table through a `SettingsReader`, so every bad value
is reported the same way: the file, the line, ``[table] key`` and what was expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from farm.assetrules import AssetRules
from farm.errors import ProjectError
from farm.paths import UnsafePath, safe_relpath

#: a project's state folder (journal, caches, records), beside its farm.toml
STATE_DIR = ".farm"
#: what to do about a setting's file that never reaches the agents (`AssetRules.left_out`'s kinds)
_HINTS = {
    "exclude": "remove the pattern from [assets] exclude in farm.toml or move the file",
    "include": "add it to [assets] include in farm.toml",
    "hidden": "rename it so that no name in its path starts with '.'",
    "output": "move it out of the output folder",
}

_MISSING = object()


def line_of(text: str, table: str, key: str | None = None) -> int | None:
    """The 1-based line of ``key`` inside ``[table]`` (or of the table header)."""
    current = None
    header = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")
    for number, raw in enumerate(text.splitlines(), start=1):
        found = header.match(raw)
        if found:
            current = found.group(1).strip()
            if key is None and current == table:
                return number
            continue
        if key is not None and current == table:
            m = assign.match(raw)
            if m and m.group(1).strip("\"'") == key:
                return number
    return None


class SettingsReader:
    """Reads one table of a project file, remembering which keys were used."""

    def __init__(self, values: dict[str, Any], *, table: str, file: Path, text: str, root: Path,
                 renderer_checks: bool = True, facts: dict[str, Any] | None = None):
        self.values = dict(values)
        #: False where the renderer may be missing and is not used (the controller): a media type
        #: then skips the checks that need its renderer (loading a style, probing a file) and keeps
        #: those that make the settings safe (names, paths, ranges); they run where it renders.
        #: What only the renderer can tell it comes instead from ``facts``.
        self.renderer_checks = renderer_checks
        #: with ``renderer_checks`` False: what the submitter's renderer found (its media type's
        #: `renderer_facts`), sent with the submit. Untrusted: read it through `facts_reader`.
        self.facts = dict(facts or {})
        self.table = table
        self.file = file
        self.text = text
        self.root = root
        #: the project's output folder (relative) and ``[assets]`` patterns, as `load_project` read
        #: them (None where no project is read): `asset` refuses paths in the output folder (farm
        #: writes and removes files there and never sends it to the agents), and a media type can
        #: tell which files reach the agents (`farm.project.list_assets`'s rules)
        self.output: str | None = None
        self.include: tuple[str, ...] | None = None
        self.exclude: tuple[str, ...] = ()
        #: the bytes of outputs one job may return (``[jobs] max_output_mib``), for a media type that
        #: can tell at load that its jobs would return more; None where no project is read
        self.max_output: int | None = None
        self._used: set[str] = set()

    def facts_reader(self) -> SettingsReader:
        """The submitted renderer facts as a table of their own, read and checked like one
        (types, bounds, `finish` for unknown keys); errors name ``[<table>.facts] key``.

        A remote submitter may send anything: check every fact before the settings use it.
        """
        return SettingsReader(self.facts, table=f"{self.table}.facts", file=self.file, text="",
                              root=self.root)

    def error(self, key: str | None, message: str) -> ProjectError:
        line = line_of(self.text, self.table, key) or line_of(self.text, self.table)
        where = f"[{self.table}] {key}" if key else f"[{self.table}]"
        return ProjectError(message, file=self.file, key=where, line=line)

    def _get(self, key: str, default: Any) -> Any:
        self._used.add(key)
        if key in self.values:
            return self.values[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def get(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default)

    def str(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        integer: bool = False,
        min: float | None = None,
        max: float | None = None,
    ) -> Any:
        """A number (an integer with ``integer``) within ``min`` and ``max``; `ProjectError` naming
        the file, line and key otherwise. TOML's ``nan`` and ``inf`` are refused for every key: no
        setting means them, and nan slips past any bound (every comparison with it is false)."""
        value = self._get(key, default)
        if value is default:
            return value
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.error(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if min is not None and value < min:
            raise self.error(key, f"must be at least {min}, got {value!r}")
        if max is not None and value > max:
            raise self.error(key, f"must be at most {max}, got {value!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING, **limits: float) -> Any:
        return self.number(key, default, integer=True, **limits)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and value not in choices:
            raise self.error(key, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return value

    def table_value(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        return value

    def asset(self, key: str, default: Any = _MISSING, *, suffixes: Sequence[str] = ()) -> Any:
        """A path to a file inside the project: relative, inside the root, existing.

        Returns the normalised relative POSIX path (a string, so it travels in messages).
        """
        value = self.str(key, default)
        if value is default:
            return value
        try:
            rel = safe_relpath(value)
        except UnsafePath as exc:
            raise self.error(key, str(exc)) from None
        for folder, what in ((self.output, "the output folder"), (STATE_DIR, "farm's state folder")):
            if folder is not None and (rel == folder or rel.startswith(folder + "/")):
                raise self.error(key, f"{value!r} is in {what} {folder + '/'!r}, which farm writes into and "
                                      "does not send to the agents: move the file out of it")
        rules = self.asset_rules()
        dropped = rules.left_out(rel) if rules is not None else None
        if dropped is not None:
            raise self.error(key, f"{value!r}: {dropped[1]}; {_HINTS[dropped[0]]}")
        full = self.root / rel
        if not full.is_file():
            raise self.error(key, f"file {value!r} does not exist in the project ({self.root})")
        if suffixes and full.suffix.lower() not in suffixes:
            raise self.error(key, f"expected a file ending in {' or '.join(suffixes)}, got {value!r}")
        return rel

    def asset_rules(self) -> AssetRules | None:
        """Which files of the project reach the agents (``[assets]``, the output folder, with
        ``--output`` applied), as `load_project` and `Project.reconfigure` give them; None for a
        reader of no project."""
        if self.include is None:
            return None
        return AssetRules(self.include, self.exclude, self.output or "output")

    def finish(self) -> None:
        """Fail on keys nobody read: most often a typo."""
        unknown = sorted(set(self.values) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise self.error(unknown[0], f"unknown key (known keys: {known})")
