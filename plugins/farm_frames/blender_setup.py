"""Runs inside Blender (``--python``), after the scene is loaded or built: applies the
project's settings so every chunk renders the same scene the same way.

It reads JSON from $FARM_FRAMES_SETUP and must import nothing but Blender's own
modules. A failure here exits Blender with code 1 (``--python-exit-code 1``).
"""

import json
import os
import sys

import bpy


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


def main():
    raw = os.environ.get("FARM_FRAMES_SETUP")
    if raw is None:
        sys.exit("farm: FARM_FRAMES_SETUP is not set; this script is run by the frames media type")
    apply(json.loads(raw))


if __name__ == "__main__":  # Blender runs --python scripts as __main__
    main()
