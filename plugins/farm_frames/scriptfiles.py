"""The file paths a scene script spells out, checked at load without running it.

A script names most of its files only by running (and it runs only on the agents, where
`blender_setup.py` checks every file Blender read). What can be seen by reading it is caught
here, before anything renders: a path written as a literal in a call that makes Blender read
a file (``bpy.data.images.load("/home/me/wood.png")``, ``bpy.ops.wm.append(filepath=...)``).
"""

from __future__ import annotations

import ast
import posixpath
from pathlib import Path

from farm_frames.scenefiles import summarise

#: keyword arguments that name a file in Blender's loaders and operators
_PATH_KEYWORDS = ("filepath", "directory", "filename", "path")
#: bpy.ops operators (their last name) that read a file
_READING_OPS = ("open", "append", "link")
#: the advice for a script: paths built from the script's own folder travel with it
_HOW = (
    "keep the files in the project folder (only it travels to the agents) and build their paths "
    "from the script's folder, e.g. os.path.join(os.path.dirname(__file__), 'tex/wood.png')"
)


def check_script(root: Path, scene: str) -> str | None:
    """Why the scene script at ``root/scene`` would read files the agents will not have, or
    None. Names the line, the call and the path. A script Python cannot parse is refused too."""
    source = (root / scene).read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source, filename=scene)
    except SyntaxError as exc:
        return f"{scene}:{exc.lineno}: invalid Python: {exc.msg}"
    problems = []
    for line, call, path in literal_paths(tree):
        if path.startswith("//"):
            continue  # relative to a .blend the script opened: checked on the agent
        if Path(path).is_absolute():
            why = "an absolute path"
        elif posixpath.normpath(path).startswith("../"):  # not looked up: no probing the controller
            why = "a path out of the project folder"
        elif (root / Path(scene).parent / path).exists() or (root / path).exists():
            why = "relative to the current folder, which on an agent is the job's scratch folder"
        else:
            continue  # perhaps a file the script writes first; the agent checks it
        problems.append(f"{scene}:{line}: {call}() reads {path!r}, {why}")
    if not problems:
        return None
    return f"{scene} reads files the agents will not have: {summarise(problems)}. To fix: {_HOW}"


def literal_paths(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, call, path) for each string literal passed as a file to a Blender loader:
    ``bpy.data.<collection>.load(...)`` or a file-reading ``bpy.ops`` operator."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".") if name else []
        loader = parts[:2] == ["bpy", "data"] and parts[-1] == "load"
        operator = parts[:2] == ["bpy", "ops"] and len(parts) == 4 and parts[-1] in _READING_OPS
        if not (loader or operator):
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg in _PATH_KEYWORDS)]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value:
                found.append((node.lineno, name, arg.value))
    return sorted(found)


def _dotted(node: ast.expr) -> str | None:
    """``bpy.data.images.load`` for the expression that names it, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None
