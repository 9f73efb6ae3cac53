"""Finding Blender on a render node and building its command line for one chunk."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from farm.paths import cache_dir
from farm.proc import child_dies_with_parent
from farm_frames.framerange import Runs, format_runs
from farm_frames.images import FORMATS
from farm_frames.scenefiles import MISSING_MARKER

#: a node's own Blender, when it is not the ``blender`` on PATH
BLENDER_ENV = "FARM_BLENDER"
#: the in-Blender script that applies a project's settings to the scene
SETUP_SCRIPT = Path(__file__).with_name("blender_setup.py")
#: how the setup script receives the settings (JSON); an env var keeps the command line short
SETUP_ENV = "FARM_FRAMES_SETUP"
#: what the setup script prints when the scene is loaded (serving) and after each job
READY_MARKER = "farm-warm: ready "
DONE_MARKER = "farm-warm: done "
#: where Blender's Python keeps the scripts it compiled, under this user's farm cache
BYTECODE_FOLDER = "blender-bytecode"
#: engines that render headless without a GPU: setting name -> Blender's engine id
ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE", "workbench": "BLENDER_WORKBENCH"}


class BlenderNotFound(Exception):
    """No usable Blender here; the message says where we looked."""


def find_blender() -> str:
    """This node's Blender: ``$FARM_BLENDER``, else ``blender`` on PATH. Never a project's
    choice: a project's setting would run an executable of its choosing on every agent.

    Cheap (no process is started). Raises `BlenderNotFound` with the reason.
    """
    configured = os.environ.get(BLENDER_ENV)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise BlenderNotFound(f"Blender {configured!r} from ${BLENDER_ENV} is not an executable file")
        return found
    found = shutil.which("blender")
    if found is None:
        raise BlenderNotFound(f"Blender is not installed: no 'blender' on PATH and ${BLENDER_ENV} is not set")
    return found


def blender_version(path: str, timeout: float = 60.0) -> str:
    """Run ``blender --version`` (a second or so); raises `BlenderNotFound` if it does not run."""
    try:
        done = subprocess.run(
            [path, "--version"],
            capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
            preexec_fn=child_dies_with_parent(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BlenderNotFound(f"{path} --version failed: {exc}") from None
    first = done.stdout.strip().splitlines()[:1]
    if done.returncode != 0 or not first or not first[0].startswith("Blender "):
        tail = (done.stdout + done.stderr).strip()[-500:]
        raise BlenderNotFound(f"{path} --version exited {done.returncode}: {tail}")
    return first[0].split()[1]


def output_pattern(frames_dir: Path) -> str:
    """Blender's ``-o`` for ``frames/frame_000012.png``: ``#`` is a frame digit."""
    return str(frames_dir / "frame_######")


def setup_settings(settings: dict[str, Any], project_dir: Path, *, serve: bool = False) -> dict[str, Any]:
    """What the in-Blender setup script needs: the settings it applies, and the project
    folder that every external file the scene reads must be in; with ``serve``, the
    markers of its job protocol (it then stays up and renders jobs from stdin)."""
    keys = ("resolution", "samples", "seed", "denoise", "format")
    found = {
        "engine": ENGINES[settings["engine"]],
        **{k: settings[k] for k in keys},
        "project_dir": os.path.realpath(project_dir),
        "marker": MISSING_MARKER,
    }
    if serve:
        found.update(serve=True, ready=READY_MARKER, done=DONE_MARKER)
    return found


def command_line(
    blender: str,
    *,
    scene: Path,
    runs: Runs,
    frames_dir: Path,
    threads: int,
    fmt: str,
) -> list[str]:
    """The headless command for one chunk in its own Blender. Order matters: Blender acts
    on its arguments in turn, so the scene loads first, then settings, output and threads,
    and ``-a`` or ``-f`` (which render on the spot) come last."""
    cmd = [*_load_scene(blender, scene), "--python", str(SETUP_SCRIPT)]
    cmd += ["-o", output_pattern(frames_dir), "-F", FORMATS[fmt][0], "-t", str(threads)]
    if len(runs) == 1:
        first, last = runs[0]
        cmd += ["-s", str(first), "-e", str(last), "-a"]
    else:
        cmd += ["-f", format_runs(runs, sep="..")]
    return cmd


def serve_command_line(blender: str, *, scene: Path, frames_dir: Path, threads: int, fmt: str) -> list[str]:
    """The command for a Blender that stays up (with `setup_env` ``serve=True``): output,
    format and threads are set before the setup script, which then serves jobs from stdin."""
    return [
        *_load_scene(blender, scene),
        "-o", output_pattern(frames_dir), "-F", FORMATS[fmt][0], "-t", str(threads),
        "--python", str(SETUP_SCRIPT),
    ]


def spare_command_line(blender: str, *, threads: int) -> list[str]:
    """A Blender started before its scene is known (with `spare_env`): what `serve_command_line`
    runs for a ``.py`` scene, less the scene script, ``-o`` and ``-F``, which the setup script
    applies when the job's `spare_load` line comes. ``-t`` is a process-wide setting, so it is
    given here as it would be there."""
    return [blender, "-b", "--factory-startup", "--python-exit-code", "1", "-t", str(threads),
            "--python", str(SETUP_SCRIPT)]


def bytecode_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with Blender's Python told to keep compiled scripts in this user's farm cache.

    A Blender whose scripts folder its user cannot write (Debian's, in ``/usr/share``) or that
    runs with ``PYTHONDONTWRITEBYTECODE`` compiles its ~150 startup scripts on every start: 0.4
    to 0.6 s of its 1.0 to 1.2 s here. ``PYTHONPYCACHEPREFIX`` (Python 3.8+, which Blender's
    Python reads unless its build ignores the environment) keeps them in a folder of ours
    instead, so every Blender after the first starts without compiling. The folder is ours
    alone (0700, not a link, owned by us: Python trusts a cached file whose recorded source
    size and time match, so whoever can write there runs code in our Blenders); if it cannot
    be made so, or the user set a prefix of their own, ``env`` is returned as it came.
    """
    if env.get("PYTHONPYCACHEPREFIX"):
        return env
    folder = cache_dir() / BYTECODE_FOLDER
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return env
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(folder, 0o700)
    except OSError:
        return env
    env = dict(env)
    env["PYTHONPYCACHEPREFIX"] = str(folder)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # it would keep the cache empty; it only names ours now
    return env


def spare_env() -> dict[str, str]:
    env = bytecode_env(dict(os.environ))
    env[SETUP_ENV] = json.dumps({"await": True, "ready": READY_MARKER})
    return env


def spare_load(
    cold: list[str], env: dict[str, str], *, scene: Path, frames_dir: Path, fmt: str
) -> dict[str, Any]:
    """What a spare needs to become the Blender of ``cold`` (a `serve_command_line` for a
    ``.py`` scene, and its `setup_env`)."""
    return {"scene": str(scene), "argv": cold, "setup": env[SETUP_ENV], "format": FORMATS[fmt][0],
            "output": output_pattern(frames_dir)}


def _load_scene(blender: str, scene: Path) -> list[str]:
    cmd = [blender, "-b"]
    if scene.suffix.lower() == ".blend":
        cmd.append(str(scene))
    else:
        cmd.append("--factory-startup")  # a script builds on a known, empty-ish default
    cmd += ["--python-exit-code", "1"]
    if scene.suffix.lower() == ".py":
        cmd += ["--python", str(scene)]
    return cmd


def setup_env(settings: dict[str, Any], project_dir: Path, *, serve: bool = False) -> dict[str, str]:
    env = bytecode_env(dict(os.environ))
    env[SETUP_ENV] = json.dumps(setup_settings(settings, project_dir, serve=serve))
    return env
