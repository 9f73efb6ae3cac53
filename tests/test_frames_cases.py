"""The ``frames`` cases (tests/cases/frames-*): a scene's external files, EXR video, a failed
finalize, and where Blender comes from. Real Blender, real ffmpeg, real embedded farms.

Scenes are tiny (16x16 px, 1 sample, one frame), so each Blender run takes a second or two.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import pytest
from farm_frames.blender import BLENDER_ENV
from farm_frames.ffmpeg import ffmpeg_exe, probe_video
from farm_frames.media import Frames, job_key
from test_frames import blender, media, render_chunk, synthetic_frames, tiny_png, write_project  # noqa: F401

from farm.embedded import submit_embedded
from farm.errors import FarmError, ProjectError, RenderError
from farm.mediatype import CollateContext, Job, RenderContext
from farm.project import load_project

CASES = Path(__file__).resolve().parent / "cases"
FARM = [sys.executable, "-m", "farm"]
SIZE = 16


def blue_png() -> bytes:
    """An 8x8 PNG of one blue, as the texture case makes."""
    return tiny_png(8, 8, (20, 60, 220))


def frames_toml(scene: str, *, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        [project]
        name = "scenefiles"
        media_type = "frames"

        [frames]
        scene = "{scene}"
        frames = "1"
        engine = "cycles"
        resolution = [{SIZE}, {SIZE}]
        samples = 1
        {extra}
        [jobs]
        max_attempts = 1
        """
    )


def centre_rgb(image: Path) -> tuple[int, int, int]:
    """The centre pixel of an image or a video's first frame, decoded by ffmpeg as 8-bit RGB."""
    done = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(image), "-frames:v", "1",
         "-vf", "format=rgb24,crop=1:1:iw/2:ih/2", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    )
    r, g, b = done.stdout
    return r, g, b


@pytest.fixture(scope="module")
def scenes(blender, tmp_path_factory) -> Path:  # noqa: F811
    """The projects make_scenes.py builds, one per kind of external file (see there)."""
    root = tmp_path_factory.mktemp("scenes")
    for folder in ("shared", "shared/tex", "inside/tex", "missing/tex", "absolute/tex", "linked/lib/tex",
                   "linked-missing/lib/tex", "sound-outside/tex", "font-outside/tex", "cache-outside/tex"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        if folder.endswith("tex") or folder == "shared":
            (root / folder / "blue.png").write_bytes(blue_png())
    with wave.open(str(root / "shared" / "tone.wav"), "wb") as tone:
        tone.setnchannels(1), tone.setsampwidth(2), tone.setframerate(8000)
        tone.writeframes(b"\0\1" * 800)
    fonts = [Path(p) for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",) if Path(p).is_file()]
    if not fonts:
        pytest.skip("no TrueType font to build the font case from")
    shutil.copyfile(fonts[0], root / "shared" / "font.ttf")
    done = subprocess.run(
        [blender, "-b", "--factory-startup", "--python-exit-code", "1",
         "--python", str(CASES / "frames-scene-files" / "make_scenes.py"), "--", str(root)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (root / "missing" / "tex" / "blue.png").unlink()
    (root / "linked-missing" / "lib" / "tex" / "blue.png").unlink()
    for project in root.iterdir():
        if project.name != "shared":
            (project / "farm.toml").write_text(frames_toml("shot.blend"))
    return root


def render_loaded(project_dir: Path, settings: dict, scratch: Path) -> tuple[dict, Path]:
    """Render frame 1 with the given settings, as an agent's worker would (no load here)."""
    out, work = scratch / "out", scratch / "work"
    out.mkdir(), work.mkdir()
    ctx = RenderContext(project_dir=project_dir, output_dir=out, work_dir=work, settings=settings,
                        threads=1, cache={}, deps={})
    result = Frames().render(Job(job_key([[1, 1]]), {"runs": [[1, 1]]}), ctx)
    return dict(result), out / "frames"


def project_copy(scenes: Path, kind: str, tmp_path: Path) -> Path:
    """A copy of one kind's project beside a copy of ``shared/``, so ``//../shared`` still leads there."""
    shutil.copytree(scenes / "shared", tmp_path / "shared")
    shutil.copytree(scenes / kind, tmp_path / kind, symlinks=True)
    return tmp_path / kind


# -- the case: a texture outside the project ------------------------------------------------


@pytest.mark.slow
def test_case_texture_outside_the_project_is_refused_at_load_by_name(blender, tmp_path):  # noqa: F811
    case = tmp_path / "case"
    shutil.copytree(CASES / "frames-texture-outside-project", case)
    env = {**os.environ, "PATH": f"{Path(blender).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(case / "make_case.sh")], check=True, capture_output=True, env=env)
    done = subprocess.run([*FARM, "submit", str(case / "project"), "--agents", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    err = done.stderr
    assert "farm.toml:6: [frames] scene: shot.blend reads files the agents will not have" in err, err
    assert "image 'blue.png' reads '//../shared/blue.png', which is outside the project folder" in err
    assert "Pack Resources" in err and "Traceback" not in err + done.stdout
    assert not (case / "project" / "output").exists()  # nothing rendered magenta


# -- other kinds of external file, at load -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "image 'blue.png' reads '//tex/blue.png', which does not exist"),
        ("absolute", "reads '{root}/tex/blue.png', an absolute path, which will not exist on the agents"),
        ("linked-outside", "linked library 'lib.blend' reads '//../shared/lib.blend', which is outside"),
        ("linked-missing", "image 'blue.png' in lib/lib.blend reads '//tex/blue.png', which does not exist"),
        ("sound-outside", "sound 'tone.wav' reads '//../shared/tone.wav', which is outside the project"),
        ("font-outside", "reads '//../shared/font.ttf', which is outside the project folder"),
        ("cache-outside", "object 'Domain.modifiers[0]' reads '//../"),
        ("compressed", "image 'blue.png' reads '//../shared/blue.png', which is outside the project folder"),
    ],
)
def test_each_kind_of_external_file_is_found_at_load(scenes, kind, expected):
    root = scenes / kind
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    err = raised.value
    assert err.key == "[frames] scene" and err.line == 6
    assert expected.format(root=root) in err.message, err.message
    assert "To fix:" in err.message
    if kind == "cache-outside":
        assert "which is outside the project folder" in err.message and "bake simulations" in err.message


@pytest.mark.slow
def test_a_symlink_out_of_the_project_is_outside(scenes, tmp_path):
    root = project_copy(scenes, "inside", tmp_path)
    texture = root / "tex" / "blue.png"
    texture.unlink()
    texture.symlink_to(tmp_path / "shared" / "blue.png")
    with pytest.raises(ProjectError, match="leads outside the project folder through a symlink"):
        load_project(root)


def test_a_damaged_blend_is_refused_at_load(tmp_path):
    (tmp_path / "shot.blend").write_bytes(b"BLENDER-v304" + b"\0" * 40)
    (tmp_path / "farm.toml").write_text(frames_toml("shot.blend"))
    with pytest.raises(ProjectError, match=r"\[frames\] scene: cannot read shot.blend as a .blend file"):
        load_project(tmp_path)


# -- files inside the project travel -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["inside", "linked", "packed"])
def test_files_inside_the_project_travel_and_render(scenes, kind, tmp_path):
    """A texture beside the .blend, one reached through a linked library, one packed: the
    agent (which sees only its synced copy of the project) renders them, not magenta."""
    root = project_copy(scenes, kind, tmp_path)
    summary = submit_embedded(root, agents=1)
    assert summary.ok, summary.failures or summary.error
    r, g, b = centre_rgb(root / "output" / "frames" / "frame_000001.png")
    assert b > 120 and b > r + 60 and b > g + 40, (r, g, b)  # blue, where a lost texture is magenta


# -- at render time, on the agent: scene scripts, and files gone since load -----------------


# A path held in a variable: reading the script does not show it, so only the agent can catch it.
OUTSIDE_IMAGE = """
    import bpy
    TEXTURE = {path!r}
    bpy.data.images.load(TEXTURE, check_existing=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scene_script_reading_a_file_outside_fails_the_job_naming_it(blender, tmp_path):  # noqa: F811
    outside = tmp_path / "shared" / "blue.png"
    outside.parent.mkdir()
    outside.write_bytes(blue_png())
    root = write_project(tmp_path / "p", frames="1", scene_extra=OUTSIDE_IMAGE.format(path=str(outside)),
                         tail="\n[jobs]\nmax_attempts = 1\n")
    summary = submit_embedded(root, agents=1)
    assert not summary.ok and summary.failed == 1
    error = summary.failures[0]["error"]
    assert "the scene reads files that are not in the project on this agent" in error, error
    assert f"image 'blue.png' reads {outside}, which is outside the project folder" in error
    assert not (root / "output" / "tiny_turntable.mp4").exists()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ('bpy.data.images.load("/home/me/wood.png")',
         "scene.py:{line}: bpy.data.images.load() reads '/home/me/wood.png', an absolute path"),
        ('bpy.data.images.load(filepath="tex/wood.png")',
         "reads 'tex/wood.png', relative to the current folder, which on an agent is the job's scratch"),
        ('bpy.ops.wm.append(directory="../lib.blend/Object/", filename="Cube")',
         "bpy.ops.wm.append() reads '../lib.blend/Object/', a path out of the project folder"),
        ('with bpy.data.libraries.load("/srv/lib.blend") as (src, dst):\n    pass',
         "bpy.data.libraries.load() reads '/srv/lib.blend', an absolute path"),
        ('bpy.data.sounds.load("../../music/tone.wav")', "a path out of the project folder"),
        ("x = (", "scene.py:{line}: invalid Python: '(' was never closed"),
    ],
)
def test_paths_a_scene_script_spells_out_are_checked_at_load(tmp_path, code, expected):
    root = write_project(tmp_path / "p", scene_extra="\n" + code + "\n")
    (root / "tex").mkdir()
    (root / "tex" / "wood.png").write_bytes(blue_png())
    line = (root / "scene.py").read_text().splitlines().index(code.splitlines()[0]) + 1
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    assert raised.value.key == "[frames] scene"
    assert expected.format(line=line) in raised.value.message, raised.value.message
    if "invalid" not in expected:
        assert "os.path.dirname(__file__)" in raised.value.message  # what to write instead


def test_paths_a_scene_script_builds_or_writes_are_left_to_the_agent(tmp_path):
    code = """
        import os
        bpy.data.images.load(os.path.join(os.path.dirname(__file__), "tex", "wood.png"))
        bpy.data.images.load("baked.png")  # not in the project: perhaps the script writes it first
        bpy.data.images.load("//tex/wood.png")  # relative to a .blend the script opened
    """
    load_project(write_project(tmp_path / "p", scene_extra=code))


@pytest.mark.slow
def test_scene_script_with_a_missing_sound_fails_naming_it(blender, tmp_path):  # noqa: F811
    """Blender reads sounds lazily, so loading one that is not there raises nothing in the script."""
    load = """
        import os
        bpy.data.sounds.load(os.path.join(os.path.dirname(__file__), "gone.wav"), check_existing=False)
    """
    root = write_project(tmp_path / "p", frames="1", scene_extra=load)
    with pytest.raises(RenderError) as raised:
        render_chunk(root, [[1, 1]], tmp_path / "scratch")
    message = str(raised.value).splitlines()[0]
    # named by its place in the project, not by the agent's copy of it
    assert "sound 'gone.wav' reads gone.wav in the project, which does not exist on this agent" in message


@pytest.mark.slow
def test_a_blend_whose_texture_is_gone_at_render_time_fails_naming_it(scenes, tmp_path):
    root = project_copy(scenes, "inside", tmp_path)
    project = load_project(root)  # there at load
    (root / "tex" / "blue.png").unlink()  # not on the agent
    with pytest.raises(RenderError) as raised:
        render_loaded(project.root, project.settings, tmp_path)
    message = str(raised.value).splitlines()[0]
    assert "image 'blue.png' reads tex/blue.png in the project, which does not exist on this agent" in message


# -- EXR to video ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("size", [(33, 17), (161, 91)])
def test_case_exr_frames_encode_to_video_at_odd_sizes(blender, tmp_path, size):  # noqa: F811
    root = tmp_path / "exr"
    shutil.copytree(CASES / "frames-exr-video", root)
    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace("resolution = [33, 17]", f"resolution = [{size[0]}, {size[1]}]"))
    summary = submit_embedded(root, agents=1)
    assert summary.ok, summary.failures or summary.error
    video = root / "output" / "exrodd.mp4"
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (2, size[0] + 1, size[1] + 1)  # padded to even
    assert (root / "output" / "exrodd-contact.png").is_file()
    assert [p.name for p in (root / "output").iterdir() if "partial" in p.name] == []
    # The picture survived the linear-to-sRGB conversion: not black, not blown out.
    assert 10 < sum(centre_rgb(video)) < 3 * 250


# -- a finalize that fails ------------------------------------------------------------------


def test_failed_finalize_leaves_no_partial_file_and_raises_a_farm_error(tmp_path):
    """A frame whose header is whole but whose pixels are not: ffmpeg cannot decode it, so the
    video comes out short. The error is a FarmError (one line from the controller, no traceback),
    and neither the video nor its temporary file is left behind."""
    root = write_project(tmp_path / "p", frames="1-3")
    project = load_project(root)
    frames = synthetic_frames(project.output_dir / "frames", [1, 2, 3])
    data = bytearray(frames[1].read_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat:idat + 40] = b"\xff" * 40  # the compressed pixels, not the header or the IEND
    frames[1].write_bytes(bytes(data))
    ctx = CollateContext(project, project.output_dir, {}, done=frozenset(j.key for j in media().split(project)))
    with pytest.raises(FarmError) as raised:
        media().finalize(ctx)
    assert isinstance(raised.value, RenderError)
    assert "tiny_turntable.mp4" in str(raised.value)
    assert sorted(p.name for p in project.output_dir.iterdir()) == ["frames"]


DAMAGE_FRAME_2 = """

def _damage(scene, *args):  # frame 2's header and end stay whole, its pixels do not
    if scene.frame_current == 2:
        with open(scene.render.frame_path(frame=2), "r+b") as f:
            f.seek(f.read().index(b"IDAT") + 4)
            f.write(b"\\xff" * 40)
bpy.app.handlers.render_write.append(_damage)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_failed_finalize_through_the_cli_says_why_in_one_line_and_leaves_no_file(blender, tmp_path):  # noqa: F811
    root = tmp_path / "broken"
    shutil.copytree(CASES / "frames-exr-video", root)
    (root / "scene.py").write_text((root / "scene.py").read_text() + DAMAGE_FRAME_2)
    toml = root / "farm.toml"
    text = toml.read_text().replace('frames = "1-2"', 'frames = "1-3"').replace('format = "exr"\n', "")
    toml.write_text(text)  # PNG frames: the damage below is a PNG's
    done = subprocess.run([*FARM, "submit", str(root), "--agents", "1"], capture_output=True, text=True,
                          timeout=200)
    out = done.stdout + done.stderr
    assert done.returncode == 1
    assert "exrodd.mp4: ffmpeg wrote 2 frames, expected 3; ffmpeg said:" in out, out
    assert sorted(p.name for p in (root / "output").iterdir()) == ["frames"]
    assert "Traceback" not in out


# -- Blender comes from the agent, never from a project --------------------------------------


def test_a_project_cannot_name_the_blender_executable(tmp_path):
    root = write_project(tmp_path / "p", frames_extra='blender = "tools/blender.sh"\n')
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    err = raised.value
    assert err.key == "[frames] blender"
    assert (root / "farm.toml").read_text().splitlines()[err.line - 1].startswith("blender = ")
    assert "cannot choose the Blender executable" in err.message and f"${BLENDER_ENV}" in err.message


def shipped_executable(folder: Path) -> tuple[Path, Path]:
    """An executable as a hostile project would ship it, and the file it writes if it ever runs."""
    marker = folder / "it-ran"
    script = folder / "blender.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\necho 'Blender 9.9.9'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, marker


@pytest.mark.slow
def test_settings_from_a_controller_naming_an_executable_do_not_run_it(blender, tmp_path):  # noqa: F811
    """A rogue controller sends settings with a ``blender`` key: the agent renders with its own."""
    root = write_project(tmp_path / "p", frames="1")
    script, marker = shipped_executable(root)
    project = load_project(root)
    result, out = render_loaded(root, {**project.settings, "blender": str(script)}, tmp_path)
    assert not marker.exists()
    assert result["blender"] != "9.9.9" and (out / "frame_000001.png").is_file()


@pytest.mark.parametrize("scene", ["../evil.py", "/tmp/evil.py", "link/evil.py", "farm.toml", None])
def test_settings_from_a_controller_naming_a_scene_outside_the_project_are_refused(tmp_path, scene):
    """Blender runs whatever script the settings name: on the agent it must be the project's."""
    root = write_project(tmp_path / "p", frames="1")
    (tmp_path / "evil.py").write_text("import os; os.system('touch it-ran')\n")
    (root / "link").symlink_to(tmp_path)
    settings = {**load_project(root).settings, "scene": scene}
    with pytest.raises(RenderError, match="refusing to render: the scene"):
        render_loaded(root, settings, tmp_path)


# -- the probe every agent makes at start ------------------------------------------------------


def test_probing_for_blender_starts_nothing_and_logs_nothing(tmp_path, monkeypatch, caplog):
    script, marker = shipped_executable(tmp_path)
    monkeypatch.setenv(BLENDER_ENV, str(script))
    caplog.set_level("DEBUG", logger="farm_frames")
    assert Frames().available() is None
    assert not marker.exists()  # no Blender started just to find out it is there
    monkeypatch.setenv(BLENDER_ENV, str(tmp_path / "no-blender"))
    reason = Frames().available()
    assert reason is not None and "no-blender" in reason  # recorded, for a frames run that needs it
    assert [r for r in caplog.records if r.levelno >= 30] == []


@pytest.mark.slow
def test_a_map_render_prints_nothing_about_a_missing_blender(tmp_path):
    shutil.copytree(Path(__file__).resolve().parents[1] / "sample_projects" / "world_map", tmp_path / "map",
                    ignore=shutil.ignore_patterns("output"))
    env = {**os.environ, BLENDER_ENV: str(tmp_path / "no-blender")}
    done = subprocess.run([*FARM, "submit", str(tmp_path / "map"), "--agents", "1"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "blender" not in (done.stdout + done.stderr).lower()
