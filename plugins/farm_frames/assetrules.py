"""Which project files travel to the agents, as farm.toml's ``[assets]`` and ``[output]`` say.

A scene may read a file that is inside the project and yet never reaches the agents: one that
``[assets] exclude`` leaves out, that no ``[assets] include`` pattern matches, in a folder or
with a name starting with ``.``, or in the output folder. The checks at load (`scenefiles`,
`scriptfiles`) refuse those by name, with the pattern, instead of letting the job fail on the
agent. The rules are `farm.project.list_assets`'s, with its pattern matching (`matches`).
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.project import matches
from farm.settings import SettingsReader

#: what to do about each reason a project file does not travel, said once after the list
HINTS = {
    "exclude": "remove the pattern from [assets] exclude in farm.toml, or the reference from the scene",
    "include": "add the files to [assets] include in farm.toml, or remove the reference from the scene",
    "hidden": "rename the files or folders so that no name starts with '.' (farm never sends those), "
    "or remove the reference from the scene",
    "output": "move the files out of the output folder (farm never sends it to the agents), or remove "
    "the reference from the scene",
}


@dataclass(frozen=True)
class AssetRules:
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    output: str = "output"

    @classmethod
    def read(cls, s: SettingsReader) -> AssetRules | None:
        """The rules of the project ``s`` reads (`load_project` and `Project.reconfigure` give
        them, with ``--output`` applied); None for a reader of no project."""
        if s.include is None:
            return None
        return cls(s.include, s.exclude, s.output or "output")

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
