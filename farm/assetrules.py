"""Which project files travel to the agents, as farm.toml's ``[assets]`` and ``[output]`` say.

A project file may be inside the project and yet never reach the agents: one that ``[assets]
exclude`` leaves out, that no ``[assets] include`` pattern matches, in a folder or with a name
starting with ``.``, or in the output folder. `farm.project.list_assets` walks a project by
these rules; `AssetRules.left_out` says of one path whether and why it is left out, so a load
refuses a setting naming such a file (`farm.settings.SettingsReader.asset`, and media types
for the files their scenes or styles read) instead of a job failing on an agent.

Patterns follow .gitignore's rules (the `pathspec` library reads them): one without a ``/``
(a trailing one aside) matches a name at any depth, one with a ``/`` is anchored to the project
root, a trailing ``/`` matches only folders, ``*`` stops at ``/`` and ``**`` spans folders. A
pattern that matches a folder matches everything under it, for include as for exclude: a file
is included when an include pattern matches it or a folder above it, and left out when an
exclude pattern does. ``!`` negation is not supported (write ``\\!`` for a name starting with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pathspec import GitIgnoreSpec


class BadPattern(ValueError):
    """An ``[assets]`` pattern that .gitignore's rules cannot read, or that would match nothing;
    its message names the pattern and says why."""


def check_pattern(pattern: str) -> None:
    """Raise `BadPattern` if ``pattern`` is not one `AssetRules` can apply."""
    if pattern.startswith("!"):
        raise BadPattern(f"{pattern!r}: '!' negation is not supported "
                         "(write '\\!' for a name starting with '!')")
    if pattern.startswith("#"):
        raise BadPattern(f"{pattern!r} is a comment in .gitignore's rules and matches nothing "
                         "(write '\\#' for a name starting with '#')")
    if pattern != pattern.rstrip():
        raise BadPattern(f"{pattern!r} ends in white space, which .gitignore's rules drop: remove it")
    try:
        compiled = GitIgnoreSpec.from_lines([pattern]).patterns
    except (ValueError, re.error) as exc:  # pathspec's own error, or its regex's
        raise BadPattern(f"{pattern!r} is not a valid pattern ({exc})") from None
    if not compiled or compiled[0].include is None:  # "", "/", an unclosed "[": read as nothing
        raise BadPattern(f"{pattern!r} matches nothing under .gitignore's rules")


@lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> GitIgnoreSpec:
    for pattern in patterns:
        check_pattern(pattern)
    return GitIgnoreSpec.from_lines(patterns)


def first_match(patterns: tuple[str, ...], path: str) -> str | None:
    """The pattern of ``patterns`` that matches ``path`` (a relative POSIX path, ending in ``/``
    for a folder), or None. Raises `BadPattern` for a pattern `check_pattern` refuses."""
    found = _spec(tuple(patterns)).check_file(path)
    return patterns[found.index] if found.include and found.index is not None else None


@dataclass(frozen=True)
class AssetRules:
    """A project's ``[assets]`` include and exclude patterns and its output folder (relative).

    Methods raise `BadPattern` for a pattern `check_pattern` refuses (a load refuses it first)."""

    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    output: str = "output"

    def folder_left_out(self, folder: str) -> bool:
        """Whether the folder at ``folder`` (relative, POSIX, no trailing ``/``) is skipped whole:
        a hidden name, an exclude pattern matching it, or the output folder. Everything under it is
        then `left_out` too (it checks the folders above a file the same way)."""
        return (folder.rsplit("/", 1)[-1].startswith(".") or folder == self.output
                or first_match(self.exclude, folder + "/") is not None)

    def left_out(self, rel: str) -> tuple[str, str] | None:
        """(kind, why) if the project file at ``rel`` (a relative POSIX path) is not sent to the
        agents; None if it is. ``kind`` is ``hidden``, ``exclude``, ``output`` or ``include``;
        ``why`` is a clause about "it" that names the pattern."""
        parts = rel.split("/")
        hidden = next((p for p in parts if p.startswith(".")), None)
        if hidden is not None:
            return "hidden", f"farm never sends it to the agents: {hidden!r} starts with '.'"
        # the file itself, then each folder above it, as list_assets prunes its walk
        candidates = [rel, *("/".join(parts[:i]) + "/" for i in range(1, len(parts)))]
        pattern = next((p for c in candidates if (p := first_match(self.exclude, c)) is not None), None)
        if pattern is not None:
            return "exclude", (f"[assets] exclude leaves it out of the files sent to the agents "
                               f"(pattern {pattern!r})")
        if rel.startswith(self.output + "/"):
            return "output", f"it is in the output folder {self.output}/, which farm never sends"
        if not any(first_match(self.include, c) is not None for c in candidates):
            listed = ", ".join(repr(p) for p in self.include)
            return "include", f"no [assets] include pattern matches it ({listed}), so the agents never get it"
        return None
