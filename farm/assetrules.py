"""Which project files travel to the agents, as farm.toml's ``[assets]`` and ``[output]`` say.

A project file may be inside the project and yet never reach the agents: one that ``[assets]
exclude`` leaves out, that no ``[assets] include`` pattern matches, in a folder or with a name
starting with ``.``, or in the output folder. `farm.project.list_assets` walks a project by
these rules; `AssetRules.left_out` says of one path whether and why it is left out, so a load
refuses a setting naming such a file (`farm.settings.SettingsReader.asset`, and media types
for the files their scenes or styles read) instead of a job failing on an agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a POSIX glob where ``**`` spans folders and ``*`` does not."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(glob_regex(p).match(path) for p in patterns)


@dataclass(frozen=True)
class AssetRules:
    """A project's ``[assets]`` include and exclude patterns and its output folder (relative)."""

    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    output: str = "output"

    def left_out(self, rel: str) -> tuple[str, str] | None:
        """(kind, why) if the project file at ``rel`` (a relative POSIX path) is not sent to the
        agents; None if it is. ``why`` is a clause about "it" that names the pattern."""
        parts = rel.split("/")
        hidden = next((p for p in parts if p.startswith(".")), None)
        if hidden is not None:
            return "hidden", f"farm never sends it to the agents: {hidden!r} starts with '.'"
        # a folder is skipped whole when "<folder>/x" matches (as list_assets prunes the walk)
        candidates = [*("/".join(parts[:i]) + "/x" for i in range(1, len(parts))), rel]
        for pattern in self.exclude:
            if any(matches(c, (pattern,)) for c in candidates):
                return "exclude", (f"[assets] exclude leaves it out of the files sent to the agents "
                                   f"(pattern {pattern!r})")
        if any(matches(c, (f"{self.output}/**",)) for c in candidates):
            return "output", f"it is in the output folder {self.output}/, which farm never sends"
        if not matches(rel, self.include):
            listed = ", ".join(repr(p) for p in self.include)
            return "include", f"no [assets] include pattern matches it ({listed}), so the agents never get it"
        return None
