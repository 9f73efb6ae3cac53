"""The external files a scene reads: found at load for a ``.blend``, checked on the agent for all.

A ``.blend`` names the files it reads (images, linked libraries, sounds, fonts, movie clips,
caches, volumes, IES lights, ...). Only the project folder travels to the agents, so at load
every such file must exist, be stored as a path relative to the ``.blend`` (``//tex/a.png``,
which resolves on every agent), and lie inside the project. Anything else is refused by name.

Load-time tracing uses Blender Asset Tracer (what Flamenco uses): it reads the ``.blend``
itself, follows linked libraries, needs no Blender on the submitting machine or the
controller, runs no code from the file, and takes milliseconds. A scene *script* names most
files only by running (`scriptfiles` checks what its text spells out), so every scene is also
checked where it runs: on the agent, once Blender has built or loaded it (`blender_setup.py`
checks Blender's own list, ``bpy.utils.blend_paths``, and prints `MISSING_MARKER` lines that
`missing_from_log` reads back).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from farm.assetrules import AssetRules
from farm_frames.assetrules import HINTS as RULE_HINTS

#: what blender_setup.py prints, one line per file it refuses: the marker, then JSON
MISSING_MARKER = "farm: external file refused: "
#: problems named in one error; the rest are counted
MAX_NAMED = 8

#: Blender's two-letter data-block codes, as users know them
_KINDS = {
    b"IM": "image", b"LI": "linked library", b"SO": "sound", b"VF": "font", b"MC": "movie clip",
    b"CF": "cache file", b"VO": "volume", b"ME": "mesh", b"OB": "object", b"SC": "scene",
    b"LA": "light",
}
#: BAT keeps opened files in one module-level cache: one trace at a time per process
_TRACE_LOCK = threading.Lock()


class SceneFileError(Exception):
    """A ``.blend`` that cannot be read, or that reads files the agents will not have."""


@dataclass(frozen=True)
class Reference:
    """One file a data-block reads: ``image 'blue.png'`` -> ``//../shared/blue.png``."""

    owner: str  # "image 'blue.png'"
    stored: str  # the path as the .blend stores it
    resolved: Path  # absolute, on this machine
    sequence: bool  # an image sequence, UDIM tiles or a cache folder: a pattern or first file


def trace_blend(blend: Path) -> list[Reference]:
    """Every external file ``blend`` and the libraries it links read (packed files excluded).

    Raises `SceneFileError` if the file is not a ``.blend`` BAT can read.
    """
    from blender_asset_tracer import blendfile, trace
    from blender_asset_tracer.blendfile.exceptions import BlendFileError

    refs: list[Reference] = []
    with _TRACE_LOCK, _quiet_bat():
        try:
            for usage in trace.deps(blend):
                name = usage.block_name
                kind = _KINDS.get(name[:2], name[:2].decode("ascii", "replace"))
                owner = f"{kind} {name[2:].decode('utf-8', 'replace')!r}"
                holder = Path(usage.block.bfile.filepath)
                if holder != blend:  # a linked library's own reference, relative to that library
                    owner += f" in {os.path.relpath(holder, blend.parent)}"
                refs.append(Reference(
                    owner=owner,
                    stored=str(usage.asset_path),
                    resolved=Path(os.path.abspath(usage.__fspath__())),
                    sequence=bool(usage.is_sequence),
                ))
        except Exception as exc:  # any fault of a third-party parser on a user's file
            _close_half_open(exc.__traceback__, blendfile.BlendFile)
            reason = exc if isinstance(exc, (BlendFileError, OSError)) else f"{type(exc).__name__}: {exc}"
            raise SceneFileError(f"cannot read {blend.name} as a .blend file: {reason}") from None
        finally:
            blendfile.close_all_cached()
    return refs


def _close_half_open(tb: TracebackType | None, kind: type) -> None:
    """BAT's BlendFile leaves its file open when its constructor fails (a damaged file): close it."""
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        fileobj = getattr(obj, "fileobj", None)
        if isinstance(obj, kind) and fileobj is not None:
            fileobj.close()
        tb = tb.tb_next


#: what to do about each kind of problem, said once after the list
HINTS = {
    "absolute": "make paths relative (File > External Data > Make Paths Relative) with the files "
    "inside the project folder",
    "outside": "move the files into the project folder (only it travels to the agents) and relink "
    "them, or pack them into the .blend (File > External Data > Pack Resources)",
    "missing": "restore the files, or relink them (File > External Data > Find Missing Files)",
    "cache": "bake simulations into a cache folder inside the project (the modifier's Cache > "
    "Directory, e.g. //cache_fluid): a farm renders chunks of frames in separate processes, so an "
    "unbaked simulation would not match across them",
}


def check_blend(root: Path, scene: str, rules: AssetRules | None = None) -> str | None:
    """Why the files the ``.blend`` at ``root/scene`` reads would not all reach the agents,
    naming each (data-block, path as stored, where it resolves; the pattern of ``rules`` that
    leaves a project file out) and what to do; None if they would.

    Raises `SceneFileError` if the file cannot be read as a ``.blend``.
    """
    problems: dict[str, str] = {}
    for ref in trace_blend(root / scene):
        found = reference_problem(ref, root, rules)
        if found:
            kind, why = found
            if ref.sequence and ref.owner.startswith(("object", "mesh")) and kind not in RULE_HINTS:
                kind = "cache"  # a modifier's or particle system's cache folder
            problems[f"{ref.owner} reads {ref.stored!r}, {why}"] = kind
    if not problems:
        return None
    listed = summarise(sorted(problems))
    return f"{scene} reads files the agents will not have: {listed}. To fix: {hints(problems.values())}"


def hints(kinds: Iterable[str]) -> str:
    """What to do about these kinds of problem, each said once."""
    found = set(kinds)
    return "; ".join(hint for kind, hint in {**HINTS, **RULE_HINTS}.items() if kind in found)


def reference_problem(ref: Reference, root: Path, rules: AssetRules | None = None) -> tuple[str, str] | None:
    """(kind, why) if one reference cannot travel with the project, else None."""
    # Outside before missing, so a project cannot probe which files exist on the controller.
    if not ref.stored.startswith("//"):
        return "absolute", "an absolute path, which will not exist on the agents"
    if not inside(ref.resolved, root, follow=False):
        return "outside", f"which is outside the project folder ({ref.resolved})"
    rel = project_path(ref.resolved, root)
    # Left out before missing: on a controller's copy of an upload the file is not there at all.
    dropped = rules.left_out(rel) if rules else None
    if dropped:
        return dropped[0], f"which is {rel} in the project, but {dropped[1]}"
    files = list(_expand(ref))
    if not files:
        return "missing", f"which does not exist ({rel} in the project)"
    outside = [f for f in files if not inside(f, root)]
    if outside:
        return "outside", f"which leads outside the project folder through a symlink ({outside[0]})"
    if rules is not None and ref.sequence:  # a pattern may leave out some files of a sequence
        for member in (project_path(f, root) for f in files):
            dropped = rules.left_out(member)
            if dropped:
                return dropped[0], f"which includes {member}, but {dropped[1]}"
    return None


def project_path(path: Path, root: Path) -> str:
    """``path`` (inside ``root`` as written) relative to the project: ``tex/blue.png``."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def inside(path: Path, root: Path, *, follow: bool = True) -> bool:
    """Whether ``path`` lies in ``root``: with symlinks resolved, or (``follow=False``) as written."""
    resolve = os.path.realpath if follow else os.path.abspath
    real, base = resolve(path), resolve(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def summarise(problems: list[str]) -> str:
    named = problems[:MAX_NAMED]
    more = len(problems) - len(named)
    return "; ".join(named) + (f"; and {more} more" if more else "")


def missing_from_log(lines: Iterable[str]) -> list[str]:
    """The files blender_setup.py refused on the agent, as it described them."""
    found = []
    for line in lines:
        if line.startswith(MISSING_MARKER):
            try:
                found.append(str(json.loads(line[len(MISSING_MARKER):])))
            except ValueError:
                found.append(line[len(MISSING_MARKER):])
    return found


def _expand(ref: Reference) -> Iterator[Path]:
    """The files behind a reference: one file, or the members of a sequence."""
    if not ref.sequence:
        if ref.resolved.exists():
            yield ref.resolved
        return
    from blender_asset_tracer.trace import file_sequence

    try:
        yield from file_sequence.expand_sequence(ref.resolved)
    except file_sequence.DoesNotExist:
        return


@contextmanager
def _quiet_bat() -> Iterator[None]:
    """BAT logs a warning for each missing file; we report them ourselves, once, by name."""
    bat_log = logging.getLogger("blender_asset_tracer")  # its modules' loggers inherit the level
    level = bat_log.level
    bat_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bat_log.setLevel(level)
