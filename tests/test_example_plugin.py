"""The example third-party plugin (examples/farm-mandelbrot), reached only the way farm reaches it:
through the ``farm.plugins`` entry-point group of its installed distribution.

Set-up: ``pip install -e examples/farm-mandelbrot --no-deps`` (after ``pip install -e .``).
"""

from __future__ import annotations

import random
import shutil
import struct
import zlib
from importlib import metadata
from pathlib import Path

import pytest

from farm.errors import ProjectError
from farm.mediatype import CollateContext, Job, MediaType, RenderContext
from farm.plugins import ENTRY_POINT_GROUP, LOAD_PLUGINS_ENV, Plugins, get_plugins
from farm.project import Project, load_project
from farm.testing import run_local

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "farm-mandelbrot" / "project"
INSIDE = (0, 0, 0)  # the plugin's colour for points inside the set (its README says black)


def mandelbrot_entry_point() -> metadata.EntryPoint:
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "mandelbrot"]
    if not found:
        pytest.fail("the example plugin is not installed: pip install -e examples/farm-mandelbrot --no-deps")
    return found[0]


@pytest.fixture
def media() -> MediaType:
    mandelbrot_entry_point()
    return get_plugins().get("mandelbrot")


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A copy of the example project, so outputs never land in the repo."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "project", ignore=shutil.ignore_patterns("output", ".farm")))


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB PNG with filter 0 (what the plugin writes): width, height, rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header, tags = 8, b"", None, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + body) == crc, f"bad CRC in {tag!r}"
        tags.append(tag)
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    assert tags[0] == b"IHDR" and tags[-1] == b"IEND" and pos == len(data)
    width, height, depth, colour_type, _, _, interlace = header
    assert (depth, colour_type, interlace) == (8, 2, 0)
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, ...]:
    return tuple(rows[y][3 * x : 3 * x + 3])


def set_setting(project_dir: Path, line: str) -> int:
    """Append ``line`` to the [mandelbrot] table (the file's last); returns its line number."""
    file = project_dir / "farm.toml"
    text = file.read_text()
    file.write_text(text + line + "\n")
    return len(text.splitlines()) + 1


def test_listed_with_version_and_media_type(media: MediaType) -> None:
    info = next(i for i in get_plugins().infos if i.name == "mandelbrot")
    assert info.error is None
    assert info.version == metadata.version("farm-mandelbrot")
    assert info.module == "farm_mandelbrot"
    assert info.media_types == ["mandelbrot"]
    assert info.hooks == ["farm_register_media_types"]
    assert media.name == "mandelbrot" and media.available() is None


def test_run_local_renders_the_example_png(media: MediaType, project_dir: Path) -> None:
    run = run_local(project_dir)
    png = project_dir / "output" / "mandelbrot.png"
    assert run.outputs == [png]
    assert sorted(p.name for p in png.parent.iterdir()) == ["mandelbrot.png"]  # the raw .part is gone
    assert [j.key for j in run.jobs] == [f"rows-{y:06d}" for y in range(0, 64, 8)]
    assert media.count(run.project) == len(run.jobs) == 8

    width, height, rows = read_png(png)
    assert (width, height) == (96, 64)
    # 96 px span 3 units around -0.5: pixel (48, 32) is c = -0.48-0.02i, deep in the main cardioid;
    # pixel (78, 32) is c = 0.45-0.02i, right of the cusp at 0.25, so it escapes.
    assert pixel(rows, 48, 32) == INSIDE
    assert pixel(rows, 78, 32) != INSIDE
    # The corner, c = -1.98+0.98i, has |c| > 2: it escapes after one iteration, the palette's darkest blue.
    assert pixel(rows, 0, 0) == (0, 0, 26)
    # Centred on the real axis, the image is its own mirror image, row for row.
    assert all(rows[y] == rows[height - 1 - y] for y in range(height))
    # Each job's result (pixels inside) agrees with the collated image.
    inside = sum(pixel(rows, x, y) == INSIDE for y in range(height) for x in range(width))
    assert inside == sum(r["inside"] for r in run.results.values()) > 0


def render_all(media: MediaType, project: Project, stage: Path) -> list[tuple[Job, object, Path]]:
    """Render every job into its own folder, as agents would; nothing collated yet."""
    rendered = []
    for job in media.split(project):
        out, work = stage / job.key / "out", stage / job.key / "work"
        out.mkdir(parents=True)
        work.mkdir()
        ctx = RenderContext(project.root, out, work, project.settings, threads=1, cache={}, deps={})
        rendered.append((job, media.render(job, ctx), out))
    return rendered


def collate_in_order(media: MediaType, project: Project, rendered: list, stage: Path) -> bytes:
    ctx = CollateContext(project, project.output_dir, {})
    for job, result, out in rendered:
        staged = Path(shutil.copytree(out, stage / job.key))  # collate may move what it is given
        media.collate(job, result, {p.name: p for p in staged.iterdir()}, ctx)
    (png,) = media.finalize(ctx)
    return png.read_bytes()


def test_bands_collated_in_any_order_give_the_identical_png(
    media: MediaType, project_dir: Path, tmp_path: Path
) -> None:
    reference = (run_local(project_dir).outputs[0]).read_bytes()
    project = load_project(project_dir)
    assert [j.key for j in media.split(project)] == [j.key for j in media.split(project)]  # stable keys
    rendered = render_all(media, project, tmp_path / "rendered")
    shuffled = rendered[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != rendered
    assert collate_in_order(media, project, rendered[::-1], tmp_path / "reversed") == reference
    assert collate_in_order(media, project, shuffled, tmp_path / "shuffled") == reference


def test_band_height_does_not_change_the_image(media: MediaType, project_dir: Path, tmp_path: Path) -> None:
    reference = (run_local(project_dir).outputs[0]).read_bytes()
    other = Path(shutil.copytree(project_dir, tmp_path / "band5", ignore=shutil.ignore_patterns("output")))
    toml = other / "farm.toml"
    text = toml.read_text()
    assert "band = 8 " in text
    toml.write_text(text.replace("band = 8 ", "band = 5 "))
    run = run_local(other)
    assert len(run.jobs) == media.count(run.project) == 13  # 12 bands of 5 rows, one of 4
    assert run.outputs[0].read_bytes() == reference


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("zoom = -1.0", "zoom", "greater than 0"),
        ("center = [1, 2, 3]", "center", "expected [x, y]"),
        ("center = [0.5, true]", "center", "expected [x, y]"),
        ("width = 0", "width", "at least 1"),
        ("max_iter = 'many'", "max_iter", "expected an integer"),
        ("bands = 4", "bands", "unknown key"),
    ],
)
def test_bad_settings_name_file_line_and_key(
    media: MediaType, project_dir: Path, line: str, key: str, message: str
) -> None:
    toml = project_dir / "farm.toml"
    # replace the key's existing line where there is one, so the TOML stays valid
    lines = [ln for ln in toml.read_text().splitlines() if not ln.startswith(f"{key} ")]
    toml.write_text("\n".join(lines) + "\n")
    number = set_setting(project_dir, line)
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    error = caught.value
    assert error.key == f"[mandelbrot] {key}"
    assert error.line == number
    assert error.file == str(toml)
    assert message in str(error)


def test_a_plugin_that_fails_to_import_is_recorded_and_others_keep_working(
    caplog: pytest.LogCaptureFixture, project_dir: Path
) -> None:
    plugins = Plugins()
    broken = metadata.EntryPoint(name="broken", value="farm_no_such_plugin_module", group=ENTRY_POINT_GROUP)
    plugins.load(broken)
    plugins.load(mandelbrot_entry_point())
    info = {i.name: i for i in plugins.infos}
    assert info["broken"].error == "ModuleNotFoundError: No module named 'farm_no_such_plugin_module'"
    assert info["broken"].media_types == []
    assert "broken" in caplog.text
    assert info["mandelbrot"].error is None
    media = plugins.get("mandelbrot")
    project = load_project(project_dir)
    assert len(list(media.split(project))) == media.count(project) == 8


def test_farm_load_plugins_selects_plugins_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    mandelbrot_entry_point()
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "mandelbrot, no-such-plugin")
    plugins = Plugins()
    plugins.load_entry_points()
    assert [i.name for i in plugins.infos] == ["mandelbrot"]
    assert sorted(plugins.media_types) == ["mandelbrot"]


@pytest.mark.slow  # starts a controller and two agent processes: a few seconds
def test_submit_embedded_gives_the_same_png_as_run_local(
    media: MediaType, project_dir: Path, tmp_path: Path
) -> None:
    if not (REPO / "farm" / "embedded.py").exists():
        pytest.skip("farm/embedded.py is not written yet")
    from farm.embedded import submit_embedded

    local = Path(shutil.copytree(project_dir, tmp_path / "local"))
    reference = run_local(local).outputs[0].read_bytes()
    summary = submit_embedded(project_dir, agents=2)
    assert summary.ok, summary.failures
    assert (summary.total, summary.done, summary.failed) == (8, 8, 0)
    png = project_dir / "output" / "mandelbrot.png"
    assert [Path(p).name for p in summary.outputs] == ["mandelbrot.png"]
    assert png.read_bytes() == reference
