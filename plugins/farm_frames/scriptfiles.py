"""The file paths a scene script spells out, checked at load without running it.

A script names most of its files only by running (and it runs only on the agents, where
`blender_setup.py` checks every file Blender read). What can be seen by reading it is caught
here, before anything renders: a path written as a literal in a call that makes Blender read
a file (``bpy.data.images.load("/home/me/wood.png")``, ``bpy.ops.wm.append(filepath=...)``),
and one built from the script's own folder out of literals
(``os.path.join(os.path.dirname(__file__), "tex", "wood.png")``) that leads out of the project
or that the project's ``[assets]`` rules leave out of what the agents get.
"""

from __future__ import annotations

import ast
import posixpath
from collections import Counter
from pathlib import Path

from farm.assetrules import AssetRules
from farm_frames.assetrules import HINTS as RULE_HINTS
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


def check_script(root: Path, scene: str, rules: AssetRules | None = None) -> str | None:
    """Why the scene script at ``root/scene`` would read files the agents will not have, or
    None. Names the line, the call and the path. A script Python cannot parse is refused too.

    Paths built from the script's own folder (``os.path.join(os.path.dirname(__file__), ...)``,
    ``Path(__file__).parent / ...``) are followed when their other parts are literals: one that
    leads out of the project, or that ``rules`` leave out of what is sent, is refused."""
    source = (root / scene).read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source, filename=scene)
    except SyntaxError as exc:
        return f"{scene}:{exc.lineno}: invalid Python: {exc.msg}"
    problems: dict[str, str] = {}
    beside = _ScriptPaths(tree, scene)
    for line, call, arg in file_arguments(tree):
        where = f"{scene}:{line}: {call}() reads"
        if isinstance(arg, ast.Constant):
            why = _literal_problem(root, scene, arg.value)
            if why:
                problems[f"{where} {arg.value!r}, {why}"] = "literal"
            continue
        rel = beside.value(arg)
        if rel is None or rel == ".":
            continue  # computed: the agent checks what Blender read
        if rel == ".." or rel.startswith("../"):  # not looked up: no probing the controller
            problems[f"{where} {rel} (from the script's folder), out of the project folder"] = "literal"
            continue
        dropped = rules.left_out(rel) if rules else None
        if dropped:
            problems[f"{where} {rel} in the project, but {dropped[1]}"] = dropped[0]
    if not problems:
        return None
    hints = [_HOW if kind == "literal" else RULE_HINTS[kind] for kind in dict.fromkeys(problems.values())]
    listed = summarise(list(problems))
    return f"{scene} reads files the agents will not have: {listed}. To fix: {'; '.join(hints)}"


def _literal_problem(root: Path, scene: str, path: str) -> str | None:
    """Why a path written as a literal will not be there on an agent, or None."""
    if path.startswith("//"):
        return None  # relative to a .blend the script opened: checked on the agent
    if Path(path).is_absolute():
        return "an absolute path"
    if posixpath.normpath(path).startswith("../"):  # not looked up: no probing the controller
        return "a path out of the project folder"
    if (root / Path(scene).parent / path).exists() or (root / path).exists():
        return "relative to the current folder, which on an agent is the job's scratch folder"
    return None  # perhaps a file the script writes first; the agent checks it


def file_arguments(tree: ast.AST) -> list[tuple[int, str, ast.expr]]:
    """(line, call, argument) for each argument that names a file in a call to a Blender loader:
    ``bpy.data.<collection>.load(...)`` or a file-reading ``bpy.ops`` operator."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".") if name else []
        loader = parts[:2] == ["bpy", "data"] and parts[-1] == "load"
        operator = parts[:2] == ["bpy", "ops"] and len(parts) == 4 and parts[-1] in _READING_OPS
        if name is None or not (loader or operator):
            continue
        for arg in [*node.args[:1], *(k.value for k in node.keywords if k.arg in _PATH_KEYWORDS)]:
            literal = isinstance(arg, ast.Constant)
            if not literal or (isinstance(arg.value, str) and arg.value):  # type: ignore[attr-defined]
                found.append((node.lineno, name, arg))
    return sorted(found, key=lambda f: (f[0], f[1]))


class _ScriptPaths:
    """Paths a script builds from its own folder, followed without running it: ``__file__``,
    ``os.path.dirname``, ``os.path.join`` with literals, ``Path(...).parent``, ``/ "literal"``,
    and module-level names bound once to such a path (``HERE = os.path.dirname(__file__)``).
    A value is the path relative to the project root (``tex/wood.png``; ``../x`` leads out)."""

    _SAME = {"os.path.abspath", "os.path.realpath", "os.path.normpath", "os.fspath", "str", "Path",
             "pathlib.Path", "PurePath", "pathlib.PurePath", "PosixPath", "pathlib.PosixPath"}

    def __init__(self, tree: ast.Module, scene: str) -> None:
        self.scene = scene
        bound = _bindings(tree)
        #: names bound once, at module level, by a plain assignment: their value is followed
        self.names = {node.targets[0].id: node.value for node in tree.body
                      if isinstance(node, ast.Assign) and len(node.targets) == 1
                      and isinstance(node.targets[0], ast.Name) and bound[node.targets[0].id] == 1}
        self.seen: set[str] = set()

    def value(self, node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return posixpath.normpath(self.scene)
            if node.id in self.seen or node.id not in self.names:
                return None
            self.seen.add(node.id)
            try:
                return self.value(self.names[node.id])
            finally:
                self.seen.discard(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self._dirname(self.value(node.value))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._join(self.value(node.left), [node.right])
        if not isinstance(node, ast.Call) or node.keywords:
            return None
        func = _dotted(node.func)
        args = node.args
        if func in self._SAME and len(args) == 1:
            return self.value(args[0])
        if func == "os.path.dirname" and len(args) == 1:
            return self._dirname(self.value(args[0]))
        if func == "os.path.join" and args:
            return self._join(self.value(args[0]), args[1:])
        if isinstance(node.func, ast.Attribute):  # methods of a Path
            method, base = node.func.attr, node.func.value
            if method in ("resolve", "absolute") and not args:
                return self.value(base)
            if method == "joinpath":
                return self._join(self.value(base), args)
            if method == "with_name" and len(args) == 1:
                return self._join(self._dirname(self.value(base)), args)
        return None

    @staticmethod
    def _dirname(path: str | None) -> str | None:
        return None if path is None else posixpath.normpath(posixpath.join(path, ".."))

    @staticmethod
    def _join(base: str | None, parts: list[ast.expr]) -> str | None:
        if base is None or not all(isinstance(p, ast.Constant) and isinstance(p.value, str) for p in parts):
            return None
        tail = [p.value for p in parts]  # type: ignore[attr-defined]
        if any(posixpath.isabs(t) for t in tail):
            return None  # an absolute part replaces the base: a literal path, checked as one
        return posixpath.normpath(posixpath.join(base, *tail))


def _bindings(tree: ast.AST) -> Counter[str]:
    """How many times each name is bound anywhere in the script (assigned, an argument, a
    function or class, an import, a loop or ``with`` target)."""
    bound: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound[node.id] += 1
        elif isinstance(node, ast.arg):
            bound[node.arg] += 1
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound[node.name] += 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound


def _dotted(node: ast.expr) -> str | None:
    """``bpy.data.images.load`` for the expression that names it, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None
