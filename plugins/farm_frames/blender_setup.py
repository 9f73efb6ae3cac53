"""Runs inside Blender (``--python``), after the scene is loaded or built: applies the
project's settings so every chunk renders the same scene the same way, and checks that
every external file the scene reads is here and inside the project.

With ``"serve": true`` in the settings it then stays up for a worker slot: it reads one
job a line on stdin (JSON ``{"id": key, "output": "/abs/frame_######", "runs": [[first, last],
...]}``), checks the files again, renders the runs as ``-s first -e last -a`` would, and prints
``farm-warm: done {"id": key, "began": t, "ended": t}`` (unix times). A line that came while
a job rendered (the next job, sent ahead) is read as soon as that job is done. End of input
ends Blender with code 0.

With ``"await": true`` instead it is a spare started before the project was known (see
``warm.py``): Blender was started as ``-b --factory-startup -t N --python`` this script, and the
first line on stdin says what the rest of a cold command line would have done (``{"scene":
"/abs/scene.py", "argv": [...], "setup": "<settings JSON>", "format": "PNG", "output": ...}``):
the scene script runs as ``--python`` runs it, then ``-o`` and ``-F`` are applied, then the
settings, as above. Where ``-F`` would change the scene's own file format the spare says so in
its ready line (``{"unfit": why}``) and exits, since Python cannot set it as ``-F`` does.

It reads JSON from $FARM_FRAMES_SETUP and must import nothing but Blender's own
modules and the standard library. A failure here exits Blender with code 1
(``--python-exit-code 1``), so a worker never reuses a Blender whose job went wrong.
"""

import builtins
import ctypes
import glob
import json
import os
import sys
import time
import types

import bpy

#: data-block collections whose members read a file, and what users call them
_FILE_OWNERS = (
    ("images", "image"), ("libraries", "linked library"), ("sounds", "sound"), ("fonts", "font"),
    ("movieclips", "movie clip"), ("cache_files", "cache file"), ("volumes", "volume"),
)


def apply(settings):
    scene = bpy.context.scene
    render = scene.render
    render.engine = settings["engine"]  # Blender's id, e.g. "CYCLES"
    if render.engine == "CYCLES":
        scene.cycles.device = "CPU"
        # Debian's Blender is built without OpenImageDenoise; a project opts in explicitly.
        scene.cycles.use_denoising = bool(settings["denoise"])
        if settings["samples"] is not None:
            scene.cycles.samples = settings["samples"]
        if settings["seed"] is not None:
            scene.cycles.seed = settings["seed"]
            scene.cycles.use_animated_seed = False
    elif render.engine == "BLENDER_EEVEE" and settings["samples"] is not None:
        scene.eevee.taa_render_samples = settings["samples"]
    if settings["resolution"] is not None:
        render.resolution_x, render.resolution_y = settings["resolution"]
        render.resolution_percentage = 100
    # -s/-e/-a renders every frame_step-th frame: the farm expects every frame it asked for.
    scene.frame_step = 1
    render.use_file_extension = True
    render.use_overwrite = True
    render.use_placeholder = False  # a placeholder is an empty file that looks like a frame
    if settings["format"] == "exr" and not bpy.app.build_options.image_openexr:
        raise RuntimeError("this Blender was built without OpenEXR; use format = \"png\"")
    print("farm: settings applied:", json.dumps(settings), flush=True)


def _owners():
    """{absolute path: "image 'blue.png'"} for the data-blocks that read a file."""
    owners = {}
    for attr, kind in _FILE_OWNERS:
        for block in getattr(bpy.data, attr, ()):
            path = getattr(block, "filepath", "")
            if path and not path.startswith("<") and getattr(block, "packed_file", None) is None:
                full = os.path.normpath(bpy.path.abspath(path, library=block.library))
                owners.setdefault(full, f"{kind} {block.name!r}")
    return owners


def _inside(path, roots):
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def check_external_files(project_dir, marker):
    """Fail if the scene reads a file that is missing here or lies outside the project.

    Blender's own list (``bpy.utils.blend_paths``) covers every kind of data-block it reads
    from disk, linked libraries included. Allowed: the project folder, the job's scratch
    folder (the current directory, where a scene script may write a file it then loads) and
    Blender's own bundled files, which every agent has.
    """
    project = os.path.realpath(project_dir)
    roots = [project, os.path.realpath(os.getcwd())]
    roots += [os.path.realpath(bpy.utils.resource_path(kind)) for kind in ("LOCAL", "SYSTEM")]
    owners = _owners()
    refused = []
    for path in sorted(set(bpy.utils.blend_paths(absolute=True, packed=False, local=False))):
        full = os.path.normpath(path)
        owner = owners.get(full, "a data-block")
        pattern = full.replace("<UDIM>", "[0-9][0-9][0-9][0-9]").replace("<UVTILE>", "u*_v*")
        if not (os.path.exists(full) if pattern == full else glob.glob(pattern)):
            if _inside(full, [project]):  # named as the user knows it, not by this agent's copy
                rel = os.path.relpath(os.path.realpath(full), project)
                refused.append(f"{owner} reads {rel} in the project, which does not exist on this agent "
                               "(left out by farm.toml's [assets] include or exclude, or gone since load?)")
            else:
                refused.append(f"{owner} reads {full}, which does not exist on this agent")
        elif not _inside(full, roots):
            refused.append(f"{owner} reads {full}, which is outside the project folder")
    for line in refused:
        print(marker + json.dumps(line), flush=True)
    if refused:
        raise RuntimeError(f"the scene reads {len(refused)} file(s) it cannot have on the farm")


def _say(marker, body):
    """A protocol line on stdout, after everything Blender's C code has printed so far."""
    ctypes.CDLL(None).fflush(None)  # C stdio buffers its own lines: they must come first
    print(marker + json.dumps(body), flush=True)


def serve(settings):
    """Render job after job from stdin, with the scene loaded once."""
    files = sorted(set(bpy.utils.blend_paths(absolute=True, packed=False, local=False)))
    _say(settings["ready"], {"version": bpy.app.version_string, "pid": os.getpid(), "files": files})
    scene = bpy.context.scene
    for line in sys.stdin:
        began = time.time()  # Blender's own word on when it took the job, for the worker's trace
        job = json.loads(line)
        check_external_files(settings["project_dir"], settings["marker"])  # files gone since load
        scene.render.filepath = job["output"]
        for first, last in job["runs"]:
            scene.frame_start, scene.frame_end = first, last  # what -s/-e set before -a
            bpy.ops.render.render(animation=True)
        _say(settings["done"], {"id": job.get("id"), "runs": job["runs"], "began": began,
                                "ended": time.time()})


def load(spare):
    """Do what a cold Blender's command line does before this script runs, from the job's line
    on stdin; returns that job's settings. End of input ends Blender."""
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    cold = json.loads(line)
    os.environ["FARM_FRAMES_SETUP"] = cold["setup"]  # what the scene script would see
    sys.argv[:] = cold["argv"]
    path = cold["scene"]
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    # as --python runs a file: a fresh __main__ module for it, the previous one put back after
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = path, builtins
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules["__main__"] = saved
    render = bpy.context.scene.render
    if render.image_settings.file_format != cold["format"]:
        # -F sets the format alone; through Python colour depth and mode may change with it
        _say(spare["ready"], {"unfit": f"the scene writes {render.image_settings.file_format}"})
        sys.exit(0)
    render.filepath = cold["output"]  # what -o does
    return json.loads(cold["setup"])


def main():
    raw = os.environ.get("FARM_FRAMES_SETUP")
    if raw is None:
        sys.exit("farm: FARM_FRAMES_SETUP is not set; this script is run by the frames media type")
    settings = json.loads(raw)
    if settings.get("await"):
        settings = load(settings)
    apply(settings)
    check_external_files(settings["project_dir"], settings["marker"])
    if settings.get("serve"):
        serve(settings)


if __name__ == "__main__":  # Blender runs --python scripts as __main__
    main()
