"""The ``frames`` media type (plugins/farm_frames): real Blender renders, real ffmpeg encodes.

Tests that need Blender skip with a reason when it is missing, except in CI (env ``CI``
set), where a missing Blender fails them. Scenes are the turntable sample at 48x27 px
with 2 samples, so each Blender run takes a second or two.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import mapnik
import pytest
from conftest import wait_for
from farm_frames.blender import BLENDER_ENV, command_line, find_blender
from farm_frames.ffmpeg import ffmpeg_exe, probe_video
from farm_frames.framerange import (
    FrameRangeError,
    chunk_runs,
    format_runs,
    frame_count,
    iter_frames,
    parse_frames,
)
from farm_frames.images import BadImage, check_image
from farm_frames.media import Frames, job_key
from farm_frames.progress import ChunkProgress, log_tail
from hypothesis import given
from hypothesis import strategies as st

from farm.errors import ProjectError, RenderError
from farm.mediatype import CollateContext, Job, RenderContext
from farm.plugins import get_plugins
from farm.project import load_project
from farm.testing import run_local

REPO = Path(__file__).resolve().parents[1]
TURNTABLE = REPO / "sample_projects" / "turntable"
WIDTH, HEIGHT, SAMPLES, SEED = 48, 27, 2, 3


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def blender() -> str:
    """Blender's path; skip without it locally, fail without it in CI."""
    found = shutil.which(os.environ.get(BLENDER_ENV) or "blender")
    if found is None:
        reason = f"Blender is not installed (no 'blender' on PATH, ${BLENDER_ENV} unset)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return found


def media() -> Frames:
    found = get_plugins().get("frames")  # through the entry point, as farm does
    assert isinstance(found, Frames)
    return found


def write_project(
    root: Path,
    *,
    frames: str = "1-3",
    frames_extra: str = "",
    video: str = "",
    scene_extra: str = "",
    tail: str = "",
) -> Path:
    """A project with the turntable scene (plus ``scene_extra`` code) at a tiny size."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "scene.py").write_text((TURNTABLE / "scene.py").read_text() + textwrap.dedent(scene_extra))
    (root / "farm.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "tiny turntable"
            media_type = "frames"

            [frames]
            scene = "scene.py"
            frames = "{frames}"
            resolution = [{WIDTH}, {HEIGHT}]
            samples = {SAMPLES}
            seed = {SEED}
            """
        )
        + textwrap.dedent(frames_extra)
        + "\n[frames.video]\nfps = 12\n"
        + textwrap.dedent(video)
        + textwrap.dedent(tail)
    )
    return root


def render_chunk(
    project_dir: Path, runs: list[list[int]], scratch: Path, progress: list[float] | None = None
) -> tuple[dict, Path]:
    """Call the media type's render for one chunk, as a worker would."""
    project = load_project(project_dir)
    out, work = scratch / "out", scratch / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    ctx = RenderContext(
        project_dir=project.root, output_dir=out, work_dir=work, settings=project.settings,
        threads=2, cache={}, deps={}, progress=(progress.append if progress is not None else lambda f: None),
    )
    result = media().render(Job(job_key(runs), {"runs": runs}), ctx)
    return dict(result), out


def reference_render(blender: str, project_dir: Path, first: int, last: int, out: Path) -> None:
    """One plain ``blender -b -a`` over the frames, settings written out by hand (not by the plugin)."""
    settings = (
        "import bpy; s = bpy.context.scene; s.render.engine = 'CYCLES'; s.cycles.device = 'CPU'; "
        f"s.cycles.use_denoising = False; s.cycles.samples = {SAMPLES}; s.cycles.seed = {SEED}; "
        f"s.render.resolution_x = {WIDTH}; s.render.resolution_y = {HEIGHT}; "
        "s.render.resolution_percentage = 100"
    )
    done = subprocess.run(
        [blender, "-b", "--factory-startup", "--python-exit-code", "1",
         "--python", str(project_dir / "scene.py"), "--python-expr", settings,
         "-o", str(out / "ref_######"), "-F", "PNG", "-t", "2", "-s", str(first), "-e", str(last), "-a"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def assert_same_pixels(a: Path, b: Path) -> None:
    """Same seed, same samples: at most 1 % of pixels may differ by more than 2 % per channel."""
    one, two = mapnik.Image.open(str(a)), mapnik.Image.open(str(b))
    assert (one.width(), one.height()) == (two.width(), two.height())
    differing = one.compare(two, 0.02 * 255)
    limit = 0.01 * one.width() * one.height()
    assert differing <= limit, f"{a.name}: {differing} pixels differ from {b.name}"


def synthetic_frames(folder: Path, frames: list[int]) -> list[Path]:
    """Real 33x19 PNG frames made by ffmpeg (no Blender), named as the plugin names them.

    Each frame's red level comes from its number, so frames in the wrong order show.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in frames:
        path = folder / f"frame_{frame:06d}.png"
        pattern = f"geq=r='mod({frame}*37,256)':g='X*6':b='Y*10'"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "color=size=33x19",
             "-vf", f"format=rgb24,{pattern}", "-frames:v", "1", str(path)],
            check=True,
        )
        paths.append(path)
    return paths


def tiny_png(width: int, height: int, rgb: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    """A whole PNG of one colour, written by hand (no image library needed)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    raw = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# -- frame lists -------------------------------------------------------------------------


def test_frame_lists_parse_into_sorted_runs():
    assert parse_frames("1-240") == [[1, 240]]
    assert parse_frames("1-10, 20, 30-40") == [[1, 10], [20, 20], [30, 40]]
    assert parse_frames("30-40,1-10 ,11") == [[1, 11], [30, 40]]
    assert parse_frames(7) == [[7, 7]]
    assert parse_frames("0") == [[0, 0]]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("1-", "cannot read '1-'"),
        ("a-b", "cannot read 'a-b'"),
        ("1,,3", "empty item"),
        ("10-1", "backwards"),
        ("-5", "cannot read '-5'"),
        ("1-10, 5", "frame 5 is listed twice"),
        ("1-1000000", "above the highest frame"),
        ("1.5", "cannot read '1.5'"),
    ],
)
def test_bad_frame_lists_say_what_is_wrong(text, problem):
    with pytest.raises(FrameRangeError, match=re.escape(problem)):
        parse_frames(text)


@given(
    st.lists(st.integers(0, 400), min_size=1, max_size=60, unique=True),
    st.integers(1, 30),
)
def test_chunks_cover_every_frame_once_in_order(frames, size):
    runs = parse_frames(", ".join(map(str, frames)))
    assert list(iter_frames(runs)) == sorted(frames)
    chunks = list(chunk_runs(runs, size))
    assert [f for c in chunks for f in iter_frames(c)] == sorted(frames)
    assert all(frame_count(c) == size for c in chunks[:-1]) and 1 <= frame_count(chunks[-1]) <= size
    assert parse_frames(format_runs(runs)) == runs


# -- the command line and the log --------------------------------------------------------


def test_command_line_renders_last_and_picks_range_or_list(tmp_path):
    common = {"frames_dir": tmp_path / "frames", "threads": 3, "fmt": "png"}
    cmd = command_line("blender", scene=Path("/p/scene.blend"), runs=[[5, 9]], **common)
    assert cmd[:3] == ["blender", "-b", "/p/scene.blend"]
    assert cmd[-7:] == ["-t", "3", "-s", "5", "-e", "9", "-a"]
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "frames" / "frame_######")
    assert cmd[cmd.index("-F") + 1] == "PNG"
    assert cmd.index("--python-exit-code") < cmd.index("--python")

    cmd = command_line("blender", scene=Path("/p/scene.py"), runs=[[1, 2], [7, 7]], **dict(common, fmt="exr"))
    assert cmd[:3] == ["blender", "-b", "--factory-startup"]
    assert cmd[cmd.index("--python") + 1] == "/p/scene.py"  # the scene first, then the settings
    assert cmd[-2:] == ["-f", "1..2,7"]
    assert cmd[cmd.index("-F") + 1] == "OPEN_EXR"


def test_progress_follows_frames_and_samples():
    seen: list[float] = []
    progress = ChunkProgress(2, seen.append)
    lines = [
        "Fra:4 Mem:9.72M (Peak 10.88M) | Time:00:00.00 | Mem:0.91M | Scene, ViewLayer | Sample 0/8",
        "Fra:4 Mem:10.22M (Peak 10.88M) | Time:00:00.01 | Remaining:00:00.04 | Scene, ViewLayer | Sample 4/8",
        "Saved: '/x/frame_000004.png'",
        "Fra:5 Mem:10.22M (Peak 10.88M) | Time:00:00.01 | Scene, ViewLayer | Rendering 2 / 8 samples",
        "Fra:5 Mem:10.22M (Peak 10.88M) | Time:00:00.01 | Scene, ViewLayer | Sample 8/8",
        "Saved: '/x/frame_000005.png'",
    ]
    for line in lines:
        progress.feed(line)
    assert seen == [0.0, 0.25, 0.5, 0.625, 1.0]
    assert progress.saved == ["/x/frame_000004.png", "/x/frame_000005.png"]


def test_log_tail_keeps_errors_over_status_lines():
    lines = ["Error: Python: Traceback", "NameError: boom"] + [f"Fra:1 | Updating {i}" for i in range(500)]
    tail = log_tail(lines, count=3)
    assert tail.splitlines() == ["Error: Python: Traceback", "NameError: boom", "Fra:1 | Updating 499"]


# -- frame checks ------------------------------------------------------------------------


def test_frame_checks_catch_missing_empty_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(tiny_png(5, 3))
    assert (check_image(good, "png").width, check_image(good, "png").height) == (5, 3)
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "truncated.png": tiny_png(5, 3)[:-20],
        "jpeg.png": b"\xff\xd8\xff\xe0" + b"\0" * 100,
        "noheader.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        "signature-only.png": b"\x89PNG\r\n\x1a\n",
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImage, match=re.escape(name)):
            check_image(tmp_path / name, "png")
    (tmp_path / "fake.exr").write_bytes(tiny_png(5, 3))
    with pytest.raises(BadImage, match="not an OpenEXR"):
        check_image(tmp_path / "fake.exr", "exr")


# -- settings ----------------------------------------------------------------------------


def test_settings_are_normalised(tmp_path):
    project = load_project(write_project(tmp_path / "p", frames="1-10, 20"))
    s = project.settings
    assert s["frames"] == [[1, 10], [20, 20]]
    assert s["engine"] == "cycles" and s["format"] == "png" and s["resolution"] == [WIDTH, HEIGHT]
    assert s["video"] == {"fps": 12, "codec": "h264", "crf": 18}
    assert s["chunk"] == 4  # 11 frames: at least 4 per job, so Blender's start-up is worth it
    assert media().count(project) == len(list(media().split(project))) == 3
    assert [j.key for j in media().split(project)] == ["frames-000001-000004", "frames-000005-000008",
                                                       "frames-000009-000020"]


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"frames": 'frames = "1-10, x"'}, "[frames] frames", "cannot read 'x'"),
        ({"frames": 'frames = "5-1"'}, "[frames] frames", "backwards"),
        ({"scene": 'scene = "missing.blend"'}, "[frames] scene", "does not exist"),
        ({"scene": 'scene = "farm.toml"'}, "[frames] scene", "ending in .blend or .py"),
        ({"video": 'codec = "av1"'}, "[frames.video] codec", "unknown codec 'av1' (supported: h264, vp9)"),
        ({"video": "crf = 99"}, "[frames.video] crf", "at most 51"),
        ({"video": "fsp = 24"}, "[frames.video] fsp", "unknown key"),
        ({"frames_extra": "smaples = 4"}, "[frames] smaples", "unknown key"),
        ({"frames_extra": 'engine = "octane"'}, "[frames] engine", "expected one of"),
        ({"frames_extra": "chunk = 0"}, "[frames] chunk", "at least 1"),
        ({"frames_extra": 'format = "jpeg"'}, "[frames] format", "expected one of"),
    ],
)
def test_bad_settings_name_the_key_and_line(tmp_path, change, key, message):
    root = write_project(tmp_path / "p", frames_extra=change.get("frames_extra", ""),
                         video=change.get("video", ""))
    toml = root / "farm.toml"
    text = toml.read_text()
    for name in ("frames", "scene"):
        if name in change:
            text = re.sub(rf"^{name} = .*$", change[name], text, count=1, flags=re.M)
    toml.write_text(text)
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    err = raised.value
    assert err.key == key and message in err.message
    bad_line = text.splitlines()[err.line - 1]
    assert bad_line.split("=")[0].strip() == key.split()[-1], f"line {err.line} is {bad_line!r}"


def test_bad_resolution_and_inline_video_table_are_located(tmp_path):
    root = write_project(tmp_path / "p")
    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace(f"[{WIDTH}, {HEIGHT}]", "[160]"))
    with pytest.raises(ProjectError, match=r"farm.toml:8: \[frames\] resolution: expected \[width, height\]"):
        load_project(root)
    text = toml.read_text().replace("[160]", "[16, 9]").replace("\n[frames.video]\nfps = 12\n", "")
    text += 'video = { codec = "h265" }\n'
    toml.write_text(text)
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    assert raised.value.key == "[frames.video] codec"
    assert text.splitlines()[raised.value.line - 1].startswith("video = ")


# -- collation and the video (ffmpeg only, no Blender) ------------------------------------


def collate_all(project_dir: Path, staged: Path, order: str) -> CollateContext:
    """Collate every job's frames (made by ffmpeg) in the given order, as a controller would."""
    project = load_project(project_dir)
    jobs = list(media().split(project))
    done: dict[str, None] = {}  # its keys() are the read-only set ctx.done shows, as on a farm
    ctx = CollateContext(project, project.output_dir, {}, done=done.keys())
    if order == "reverse":
        jobs.reverse()
    for job in jobs:
        frames = list(iter_frames(job.params["runs"]))
        paths = synthetic_frames(staged / job.key, frames)
        media().collate(job, None, {f"frames/{p.name}": p for p in paths}, ctx)
        done[job.key] = None
    return ctx


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_gappy_sequence_encodes_every_frame_in_order(tmp_path, codec):
    root = write_project(tmp_path / "p", frames="3-5, 9, 20-21", frames_extra="chunk = 2",
                         video=f'codec = "{codec}"')
    ctx = collate_all(root, tmp_path / "staged", "reverse")
    outputs = media().finalize(ctx)
    video, sheet = outputs
    assert video.name == f"tiny_turntable.{'mp4' if codec == 'h264' else 'webm'}"
    assert sheet.name == "tiny_turntable-contact.png"
    info = probe_video(video)
    assert info.frames == 6
    assert (info.width, info.height) == (34, 20)  # 33x19 padded to even for yuv420p
    assert info.duration == pytest.approx(6 / 12, abs=0.01)
    # Each frame has its own red level, so the video must hold the collated frames in order:
    # each decoded frame must be nearest to the source frame at its place.
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-vf", "format=rgb24,crop=33:19:0:0",
                    str(decoded / "%02d.png")], check=True)
    sources = sorted((root / "output" / "frames").iterdir())
    assert len(sources) == 6
    images = [mapnik.Image.open(str(p)) for p in sources]
    for index in range(len(sources)):
        frame = mapnik.Image.open(str(decoded / f"{index + 1:02d}.png"))
        differing = [frame.compare(image, 16) for image in images]
        assert differing.index(min(differing)) == index, f"video frame {index + 1}: {differing}"
        assert differing[index] <= 0.15 * 33 * 19
    sheet_info = check_image(sheet, "png")
    assert sheet_info.width > 33 * 2 and sheet_info.height > 19 * 2  # a 3x2 grid of thumbnails


def test_a_shorter_range_encodes_only_its_frames_not_an_earlier_runs(tmp_path):
    """Frames 1-6 rendered, then the range cut to 1-3: frames 4-6 of the earlier run stay in the
    folder, and the video must not take them (ffmpeg's image2 reads on to the first gap)."""
    longer = write_project(tmp_path / "p", frames="1-6", frames_extra="chunk = 2")
    media().finalize(collate_all(longer, tmp_path / "staged", "forward"))
    assert probe_video(longer / "output" / "tiny_turntable.mp4").frames == 6
    shorter = write_project(tmp_path / "p", frames="1-3", frames_extra="chunk = 2")
    video, _ = media().finalize(collate_all(shorter, tmp_path / "staged2", "forward"))
    assert len(list((shorter / "output" / "frames").iterdir())) == 6  # the earlier frames are still there
    assert probe_video(video).frames == 3


def test_finalize_refuses_an_incomplete_sequence(tmp_path):
    root = write_project(tmp_path / "p", frames="1-6", frames_extra="chunk = 2")
    ctx = collate_all(root, tmp_path / "staged", "forward")
    frames = root / "output" / "frames"
    (frames / "frame_000002.png").unlink()
    (frames / "frame_000003.png").unlink()
    (frames / "frame_000005.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(RenderError, match=r"incomplete: frames 2-3,5 are missing or damaged"):
        media().finalize(ctx)
    assert not list((root / "output").glob("*.mp4"))


def test_collating_a_job_again_replaces_its_frames(tmp_path):
    """After a controller restart a job may be rendered and collated twice."""
    root = write_project(tmp_path / "p", frames="1-2", frames_extra="chunk = 2")
    project = load_project(root)
    job = next(iter(media().split(project)))
    ctx = CollateContext(project, project.output_dir, {}, done=frozenset({job.key}))
    first = synthetic_frames(tmp_path / "first", [1, 2])
    media().collate(job, None, {f"frames/{p.name}": p for p in first}, ctx)
    again = synthetic_frames(tmp_path / "again", [7, 8])  # other pixels, under the same names
    expected = [p.read_bytes() for p in again]
    again = [p.rename(p.with_name(f"frame_00000{n}.png")) for n, p in zip((1, 2), again, strict=True)]
    media().collate(job, None, {f"frames/{p.name}": p for p in again}, ctx)
    placed = sorted((root / "output" / "frames").iterdir())
    assert [p.read_bytes() for p in placed] == expected
    assert [p.name for p in placed] == ["frame_000001.png", "frame_000002.png"]
    assert probe_video(media().finalize(ctx)[0]).frames == 2


def test_collate_refuses_a_job_without_its_frames(tmp_path):
    root = write_project(tmp_path / "p", frames="1-4", frames_extra="chunk = 2")
    project = load_project(root)
    job = next(iter(media().split(project)))
    paths = synthetic_frames(tmp_path / "staged", [1])
    ctx = CollateContext(project, project.output_dir, {})
    with pytest.raises(RenderError, match=r"frames-000001-000002 came back without frames/frame_000002.png"):
        media().collate(job, None, {f"frames/{p.name}": p for p in paths}, ctx)


# -- Blender -----------------------------------------------------------------------------


def test_available_explains_a_missing_blender(tmp_path, monkeypatch):
    monkeypatch.setenv(BLENDER_ENV, str(tmp_path / "no-blender"))
    reason = Frames().available()
    assert reason is not None and "no-blender" in reason and BLENDER_ENV in reason
    monkeypatch.delenv(BLENDER_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "Blender is not installed" in (Frames().available() or "")
    with pytest.raises(RenderError, match="Blender is not installed"):
        render_chunk(write_project(tmp_path / "p"), [[1, 1]], tmp_path / "scratch")


def test_available_with_blender(blender):
    assert Frames().available() is None
    assert find_blender() == blender


@pytest.mark.slow
def test_farm_frames_match_one_blender_process(blender, tmp_path):
    """Chunks as a range (-s/-e/-a), a list (-f) and a single frame, against one plain render."""
    root = write_project(tmp_path / "p", frames="1-2, 4, 7-8", frames_extra="chunk = 2")
    run = run_local(root, threads=2)
    keys = ["frames-000001-000002", "frames-000004-000007", "frames-000008-000008"]
    assert [j.key for j in run.jobs] == keys
    assert run.results["frames-000004-000007"]["size"] == [WIDTH, HEIGHT]
    reference_render(blender, root, 1, 8, tmp_path / "ref")
    frames = sorted((root / "output" / "frames").iterdir())
    assert [p.name for p in frames] == [f"frame_{n:06d}.png" for n in (1, 2, 4, 7, 8)]
    for frame in frames:
        assert_same_pixels(frame, tmp_path / "ref" / frame.name.replace("frame_", "ref_"))
    # The scene turns: frames 1 and 7 must not look alike, or the comparison above proves little.
    one, seven = (mapnik.Image.open(str(p)) for p in (frames[0], frames[3]))
    assert one.compare(seven, 0.05 * 255) > 0.02 * WIDTH * HEIGHT
    video = run.outputs[0]
    assert video.name == "tiny_turntable.mp4"
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (5, WIDTH, HEIGHT + 1)  # 27 rows padded to 28
    assert info.duration == pytest.approx(5 / 12, abs=0.01)
    assert check_image(run.outputs[1], "png").width >= 3 * WIDTH


@pytest.mark.slow
def test_progress_moves_within_a_job(blender, tmp_path):
    root = write_project(tmp_path / "p", frames="1-3")
    seen: list[float] = []
    result, out = render_chunk(root, [[1, 3]], tmp_path / "scratch", seen)
    assert result["frames"] == 3 and result["blender"]
    assert sorted((out / "frames").iterdir()) == [out / "frames" / f"frame_{n:06d}.png" for n in (1, 2, 3)]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len([f for f in seen if 0 < f < 1]) >= 3, seen  # samples and frames, not just the end


@pytest.mark.slow
def test_exr_frames(blender, tmp_path):
    root = write_project(tmp_path / "p", frames="1-2", frames_extra='format = "exr"')
    _, out = render_chunk(root, [[1, 2]], tmp_path / "scratch")
    for n in (1, 2):
        info = check_image(out / "frames" / f"frame_{n:06d}.exr", "exr")
        assert (info.width, info.height) == (WIDTH, HEIGHT)


@pytest.mark.slow
def test_blend_file_scene_keeps_its_own_settings(blender, tmp_path):
    """A .blend loads as saved; settings the project leaves out (here: resolution) stay the file's."""
    root = write_project(tmp_path / "p", frames="5-6")
    save = ("import bpy; s = bpy.context.scene; s.render.resolution_x, s.render.resolution_y = 40, 30; "
            f"bpy.ops.wm.save_as_mainfile(filepath={str(root / 'scene.blend')!r})")
    subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1",
                    "--python", str(root / "scene.py"), "--python-expr", save],
                   capture_output=True, check=True)
    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace('scene = "scene.py"', 'scene = "scene.blend"')
                    .replace(f"resolution = [{WIDTH}, {HEIGHT}]\n", ""))
    result, out = render_chunk(root, [[5, 6]], tmp_path / "scratch")
    assert result["size"] == [40, 30]
    assert [p.name for p in sorted((out / "frames").iterdir())] == ["frame_000005.png", "frame_000006.png"]


@pytest.mark.slow
def test_blender_crash_fails_with_its_log(blender, tmp_path):
    crash = """
        import os
        def _crash(scene, *args):
            if scene.frame_current == 2:
                print("farm-test: crashing on frame 2", flush=True)
                os.abort()
        bpy.app.handlers.render_pre.append(_crash)
    """
    root = write_project(tmp_path / "p", scene_extra=crash)
    with pytest.raises(RenderError) as raised:
        render_chunk(root, [[1, 3]], tmp_path / "scratch")
    message = str(raised.value)
    assert re.search(r"Blender exited with code -?\d+ rendering frames 1-3", message), message
    assert "farm-test: crashing on frame 2" in message  # Blender's own log comes with the error
    assert "farm-test: crashing on frame 2" in raised.value.log


@pytest.mark.slow
def test_missing_or_truncated_frame_fails_although_blender_exits_0(blender, tmp_path):
    damage = """
        import os
        def _damage(scene, *args):
            path = scene.render.frame_path(frame=scene.frame_current)
            if scene.frame_current == 2:
                os.remove(path)
            if scene.frame_current == 3:
                with open(path, "r+b") as f:
                    f.truncate(100)
        bpy.app.handlers.render_write.append(_damage)
    """
    root = write_project(tmp_path / "p", scene_extra=damage)
    with pytest.raises(RenderError) as raised:
        render_chunk(root, [[1, 3]], tmp_path / "scratch")
    message = str(raised.value)
    assert "Blender reported frames 1-3 done but they are not all there" in message
    assert "frame_000002.png was not written" in message and "frame_000003.png is truncated" in message
    assert "Saved: " in message  # the log tail


@pytest.mark.slow
def test_scene_script_error_fails_with_the_traceback(blender, tmp_path):
    root = write_project(tmp_path / "p", scene_extra="\nraise RuntimeError('farm-test: broken scene')\n")
    with pytest.raises(RenderError, match=r"(?s)exited with code 1.*farm-test: broken scene") as raised:
        render_chunk(root, [[1, 1]], tmp_path / "scratch")
    # named as the user knows it, not by the agent's copy of the project
    assert 'File "scene.py", line' in str(raised.value) and str(root) not in str(raised.value)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` no longer exists (a zombie is gone for our purposes)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (ProcessLookupError, FileNotFoundError):
        return True


PID_FILE = """
    import os as _os
    with open({path!r}, "a") as _f:
        _f.write(f"{{_os.getpid()}}\\n")
"""


@pytest.mark.slow
def test_interrupted_job_kills_blender(blender, tmp_path):
    pids = tmp_path / "pids"
    root = write_project(tmp_path / "p", frames="1-48", scene_extra=PID_FILE.format(path=str(pids)))
    project = load_project(root)
    (tmp_path / "out").mkdir(), (tmp_path / "work").mkdir()

    class Interrupted(BaseException):  # like KeyboardInterrupt, without alarming pytest
        pass

    def interrupt(fraction: float) -> None:
        raise Interrupted

    ctx = RenderContext(project_dir=project.root, output_dir=tmp_path / "out", work_dir=tmp_path / "work",
                        settings=project.settings, threads=1, cache={}, deps={}, progress=interrupt)
    with pytest.raises(Interrupted):
        media().render(Job(job_key([[1, 48]]), {"runs": [[1, 48]]}), ctx)
    pid = int(pids.read_text())
    wait_for(lambda: _gone(pid), 30, "Blender to exit")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_blender_dies_with_a_killed_worker(blender, tmp_path):
    """The agent kills a timed-out worker's process group; Blender must die with it."""
    pids = tmp_path / "pids"
    root = write_project(tmp_path / "p", frames="1-48", scene_extra=PID_FILE.format(path=str(pids)))
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_frames import render_chunk
        render_chunk(Path({str(root)!r}), [[1, 48]], Path({str(tmp_path / "scratch")!r}))
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_for(lambda: pids.exists() and pids.read_text().endswith("\n"), 60, "Blender to load the scene")
        pid = int(pids.read_text())
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    wait_for(lambda: _gone(pid), 30, f"Blender {pid} to die with its worker")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_end_to_end_on_two_agents(blender, tmp_path):
    embedded = pytest.importorskip("farm.embedded", reason="farm.embedded is not there yet")
    root = write_project(tmp_path / "p", frames="1-4", frames_extra="chunk = 2", video='codec = "vp9"')
    summary = embedded.submit_embedded(root, agents=2)
    assert summary.ok, summary.failures
    assert summary.total == summary.done == 2
    video = root / "output" / "tiny_turntable.webm"
    assert str(video) in summary.outputs or video.name in {Path(o).name for o in summary.outputs}
    info = probe_video(video)
    assert (info.frames, info.width, info.height, info.codec) == (4, WIDTH, HEIGHT + 1, "vp9")
    assert info.duration == pytest.approx(4 / 12, abs=0.01)
    assert len(list((root / "output" / "frames").glob("frame_*.png"))) == 4


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_end_to_end_failure_carries_blenders_log(blender, tmp_path, caplog):
    embedded = pytest.importorskip("farm.embedded", reason="farm.embedded is not there yet")
    broken = "\nraise RuntimeError('farm-test: broken scene')\n"
    root = write_project(tmp_path / "p", frames="1-2", frames_extra="chunk = 2", scene_extra=broken,
                         tail="\n[jobs]\nmax_attempts = 1\n")
    with caplog.at_level(logging.WARNING, logger="farm.controller.run"):
        summary = embedded.submit_embedded(root, agents=1)
    # the controller's log says it in one line; Blender's log comes once, with the summary (an embedded
    # farm's controller is gone once it returns: no `farm logs` to point at)
    said = [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert "Blender exited with code 1" in said[0] and "more lines: the run's summary; with --json" in said[0]
    assert not summary.ok and summary.failed == 1
    failure = summary.failures[0]
    assert failure["job"] == "frames-000001-000002"
    assert "farm-test: broken scene" in failure["error"] + failure.get("log", "")
