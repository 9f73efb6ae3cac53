"""Which project files travel to the agents, as farm.toml's ``[assets]`` and ``[output]`` say.

A scene may read a file that is inside the project and yet never reaches the agents: one that
``[assets] exclude`` leaves out, that no ``[assets] include`` pattern matches, in a folder or
with a name starting with ``.``, or in the output folder. The checks at load (`scenefiles`,
`scriptfiles`) refuse those by name, with the pattern, instead of letting the job fail on the
agent. The rules are `farm.assetrules`'s; these are the scene's hints.
"""

from __future__ import annotations

#: what to do about each reason a project file does not travel, said once after the list
HINTS = {
    "exclude": "remove the pattern from [assets] exclude in farm.toml, or the reference from the scene",
    "include": "add the files to [assets] include in farm.toml, or remove the reference from the scene",
    "hidden": "rename the files or folders so that no name starts with '.' (farm never sends those), "
    "or remove the reference from the scene",
    "output": "move the files out of the output folder (farm never sends it to the agents), or remove "
    "the reference from the scene",
}
