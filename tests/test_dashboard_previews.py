"""Live previews without a browser: the hook's checks, each built-in preview on real outputs, and
the preview routes on a real controller (what they serve, and what they refuse)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import MappingProxyType

import pytest
from conftest import wait_for
from dashboard_helpers import Api, http_controller, start_agents  # noqa: F401  (fixtures)
from farm_audio.media import AudioSegments
from farm_maptiles.metatile import tile_name
from farm_maptiles.preview import TILE_PATH
from test_audio_fast import Worker, make_project, make_source
from test_dashboard_map import small_world
from test_frames import blender, write_project  # noqa: F401

from farm.client import submit
from farm.http.preview import Previews
from farm.mediatype import CollateContext, MediaType
from farm.preview import BadPreview, PreviewContext, RunFacts, check_description
from farm.project import load_project

# -- the hook's description, checked where it enters ------------------------------------------------

@pytest.mark.parametrize(("bad", "why"), [
    ({"kind": "hologram"}, "'kind' is 'hologram'"),
    ({"kind": "images", "files": ["../secret.png"]}, "'..'"),
    ({"kind": "images", "files": ["/etc/x.png"]}, "is empty"),
    ({"kind": "images", "files": ["page.svg"]}, "not one of"),
    ({"kind": "images", "files": [f"f{i}.png" for i in range(33)]}, "at most 32"),
    ({"kind": "tiles", "path": "tiles/{z}/{x}.png", "bounds": [0, 0, 1, 1], "maxzoom": 1},
     "{z}, {x} and {y}"),
    ({"kind": "tiles", "path": "../{z}/{x}/{y}.png", "bounds": [0, 0, 1, 1], "maxzoom": 1}, "'..'"),
    ({"kind": "tiles", "path": "{z}/{x}/{y}.png", "bounds": [0, 0, 1], "maxzoom": 1}, "'bounds'"),
    ({"kind": "tiles", "path": "{z}/{x}/{y}.png", "bounds": [0, 0, 1, 1], "maxzoom": 1, "mbtiles": "a/b"},
     "path separator"),
    ({"kind": "waveform", "peaks": [[-2, 0.5]]}, "in -1..1"),
    ({"kind": "waveform", "peaks": [[0, float("nan")]]}, "in -1..1"),
    ({"kind": "message", "text": 5}, "'text' must be a string"),
    (["kind", "images"], "expected a dict"),
])
def test_a_description_the_page_cannot_use_is_refused_saying_why(bad, why):
    with pytest.raises(BadPreview, match=None) as info:
        check_description(bad)
    assert why in str(info.value)


class ThirdParty(MediaType):
    """A third-party type whose preview is whatever the test says."""

    name = "third"

    def __init__(self, answer):
        self.answer = answer

    def preview(self, ctx):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(ctx) if callable(self.answer) else self.answer


def facts(media: MediaType, output: Path, run: str = "third-00000001") -> RunFacts:
    return RunFacts(run, "third", media, MappingProxyType({}), output, 0.0)


def test_a_third_party_preview_is_used_checked_and_contained(tmp_path):
    previews = Previews()
    ok = {"kind": "images", "files": ["out/a.png"], "count": 1}
    assert previews.describe(facts(ThirdParty(ok), tmp_path, "r-1")) == ok
    assert previews.describe(facts(ThirdParty(None), tmp_path, "r-2")) == {"kind": "none"}
    assert MediaType().preview(PreviewContext("r", "p", {}, tmp_path)) is None  # the default: none
    broken = previews.describe(facts(ThirdParty(ZeroDivisionError("x")), tmp_path, "r-3"))
    assert broken["kind"] == "message" and "ZeroDivisionError" in broken["text"]
    climbing = ThirdParty({"kind": "images", "files": ["../x.png"]})
    unusable = previews.describe(facts(climbing, tmp_path, "r-4"))
    assert unusable["kind"] == "message" and "unusable" in unusable["text"]

    calls = []  # its cache kept between calls; a description reused for a second by tile requests
    counting = ThirdParty(lambda ctx: calls.append(ctx.cache.setdefault("n", len(calls))) or ok)
    for _ in range(5):
        previews.describe(facts(counting, tmp_path, "r-5"))
    assert calls == [0]
    previews.describe(facts(counting, tmp_path, "r-5"), max_age=0.0)
    assert calls == [0, 0]


def test_context_opens_only_regular_files_beneath_the_output_folder(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"secret")
    (out / "sub" / "link.png").symlink_to(tmp_path / "secret.png")
    (out / "up").symlink_to(tmp_path)
    os.mkfifo(out / "sub" / "fifo.png")
    ctx = PreviewContext("r", "p", {}, out)
    with ctx.open("sub/a.png") as f:
        assert f.read() == b"png"
    assert ctx.open("sub/missing.png") is None
    assert PreviewContext("r", "p", {}, tmp_path / "nowhere").open("a.png") is None
    for refused in ("sub/link.png", "up/secret.png", "../secret.png", "/etc/passwd", "sub/fifo.png"):
        with pytest.raises(ValueError):
            ctx.open(refused)
    assert sorted(e.name for e in ctx.files("sub")) == ["a.png"]  # not the link, not the FIFO
    with pytest.raises(ValueError, match="symlink"):
        list(ctx.files("up"))


# -- the built-in previews on real outputs ------------------------------------------------------------


def test_maptiles_tile_path_is_where_collate_writes_tiles():
    assert TILE_PATH.format(z=7, x=12, y=40) == tile_name(7, 12, 40)


def frames_ctx(out: Path, fmt: str = "png", submitted: float = 0.0) -> PreviewContext:
    return PreviewContext("turn-1", "turn table", MappingProxyType({"format": fmt}), out, submitted)


def test_frames_preview_is_the_newest_frames_oldest_first(tmp_path):
    from farm_frames.media import Frames

    frames = tmp_path / "out" / "frames"
    frames.mkdir(parents=True)
    now = time.time()
    for n in range(1, 13):  # collated out of order: 12 first, then 1..11
        path = frames / f"frame_{n:06d}.png"
        path.write_bytes(b"\x89PNG")
        os.utime(path, (now, now - 100 if n == 12 else now - 50 + n))
    (frames / ".frame_000013.png.partial").write_bytes(b"half")
    (tmp_path / "elsewhere.png").write_bytes(b"secret")
    (frames / "frame_000099.png").symlink_to(tmp_path / "elsewhere.png")
    description = check_description(Frames().preview(frames_ctx(tmp_path / "out")))
    assert description["kind"] == "images" and description["count"] == 12
    assert description["files"] == [f"frames/frame_{n:06d}.png" for n in range(4, 12)]
    assert "poster" not in description
    (tmp_path / "out" / "turn_table-contact.png").write_bytes(b"\x89PNG")
    assert Frames().preview(frames_ctx(tmp_path / "out"))["poster"] == "turn_table-contact.png"
    exr = Frames().preview(frames_ctx(tmp_path / "out", "exr"))
    assert exr["kind"] == "message" and "no browser preview" in exr["text"]
    assert Frames().preview(frames_ctx(tmp_path / "none"))["files"] == []


def test_audio_waveform_grows_with_each_segment_joined_and_survives_the_encode(tmp_path):
    root = make_project(tmp_path / "p", 'filters = "volume=0.5"\nsegment = 0.5\noutputs = ["flac"]\n')
    make_source(root / "source.wav", "0.8*sin(2*PI*220*t)", seconds=3.0)
    project = load_project(root)
    media, worker = AudioSegments(), Worker(tmp_path / "worker")
    collate = CollateContext(project, project.output_dir, {})
    settings = MappingProxyType(dict(project.settings))
    ctx = PreviewContext("t-1", "t", settings, project.output_dir, time.time() - 5)
    jobs = list(media.split(project))
    coverage = []
    for job in reversed(jobs):  # the last segment first: the start stays empty until the end
        result, outputs = worker.render(project, job)
        media.collate(job, result, outputs, collate)
        preview = check_description(media.preview(ctx))
        coverage.append((preview["joined_s"], sum(p is not None for p in preview["peaks"])))
        assert preview["peaks"][0] is None or job is jobs[0]
    assert coverage == sorted(coverage) and coverage[0][1] < coverage[-1][1] == 600
    assert coverage[-1][0] == pytest.approx(3.0)
    peaks = media.preview(ctx)["peaks"]
    assert max(p[1] for p in peaks) == pytest.approx(0.4, abs=0.02)  # 0.8 through volume=0.5
    assert min(p[0] for p in peaks) == pytest.approx(-0.4, abs=0.02)

    media.finalize(collate)  # encodes, then removes the join
    assert not any(project.output_dir.glob(".*.join.*"))
    assert media.preview(ctx)["peaks"] == peaks  # kept from the join
    fresh = PreviewContext("t-1", "t", ctx.settings, project.output_dir, ctx.submitted)
    measured = media.preview(fresh)  # a server that saw none of it: measured from the encoded output
    assert measured["joined_s"] == pytest.approx(3.0)
    assert sum(p is not None for p in measured["peaks"]) >= 590
    assert max(p[1] for p in measured["peaks"] if p) == pytest.approx(0.4, abs=0.02)
    later = PreviewContext("t-2", "t", ctx.settings, project.output_dir, time.time() + 60)
    assert media.preview(later)["joined_s"] == 0  # an earlier run's output is not this run's audio


# -- the routes, on a real controller ----------------------------------------------------------------


def test_tile_and_file_routes_serve_what_the_preview_names_and_nothing_else(
        tmp_path, http_controller, start_agents):  # noqa: F811
    api = Api.of(http_controller.http)
    start_agents(http_controller.url, 1)
    project = load_project(small_world(tmp_path, zoom="0-1"))
    assert submit(http_controller.url, project).ok
    run = api.get("/api/v1/projects")["projects"][-1]["id"]
    tiles = project.output_dir / "tiles"

    description = api.get(f"/api/v1/projects/{run}/preview")
    assert description["kind"] == "tiles" and (description["minzoom"], description["maxzoom"]) == (0, 1)
    assert api.get("/api/v1/projects/world_map/preview") == description  # a project name: its newest run
    status, kind, body = api.raw(f"/api/v1/projects/{run}/tiles/0/0/0.png")
    assert (status, kind) == (200, "image/png") and body == (tiles / "0/0/0.png").read_bytes()
    assert api.raw(f"/api/v1/projects/{run}/tiles/2/0/0.png")[0] == 204  # not rendered (yet)
    assert api.raw(f"/api/v1/projects/{run}/tiles/1/2/0.png")[0] == 404  # not a tile of zoom 1
    assert api.raw(f"/api/v1/projects/{run}/tiles/-1/0/0.png")[0] == 422
    assert api.raw("/api/v1/projects/nothing-12345678/preview")[0] == 404

    kept = (tiles / "1/0/1.png").read_bytes()
    (tiles / "1/0/1.png").unlink()  # gone from the folder: read from the MBTiles file
    assert api.raw(f"/api/v1/projects/{run}/tiles/1/0/1.png")[2] == kept
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the web")
    (tiles / "1/1/1.png").unlink()
    (tiles / "1/1/1.png").symlink_to(secret)
    status, _, body = api.raw(f"/api/v1/projects/{run}/tiles/1/1/1.png")
    assert status == 200 and body != secret.read_bytes()  # the link is refused; the MBTiles copy is served

    for name in ("tiles/0/0/0.png", "..%2F..%2Fsecret.png", "../secret.png", "world_map.mbtiles"):
        assert api.raw(f"/api/v1/projects/{run}/files/{name}")[0] in (400, 404), name


@pytest.mark.usefixtures("blender")
def test_file_route_serves_only_the_frames_in_the_strip(tmp_path, http_controller):  # noqa: F811
    api = Api.of(http_controller.http)
    root = write_project(tmp_path / "frames", frames="1-20")
    thread = threading.Thread(target=submit, args=(http_controller.url, load_project(root)), daemon=True)
    thread.start()  # no agent: the run waits, and the test writes its "collated" frames itself
    run = wait_for(lambda: [p["id"] for p in api.get("/api/v1/projects")["projects"]], 30, "the run")[0]
    frames = root / "output" / "frames"
    frames.mkdir(parents=True)
    for n in range(1, 11):
        (frames / f"frame_{n:06d}.png").write_bytes(b"\x89PNG frame %d" % n)
        os.utime(frames / f"frame_{n:06d}.png", (1e9 + n, 1e9 + n))
    strip = wait_for(lambda: api.get(f"/api/v1/projects/{run}/preview")["files"], 10, "the strip")
    assert strip == [f"frames/frame_{n:06d}.png" for n in range(3, 11)]
    status, kind, body = api.raw(f"/api/v1/projects/{run}/files/frames/frame_000010.png")
    assert (status, kind, body) == (200, "image/png", b"\x89PNG frame 10")
    assert api.raw(f"/api/v1/projects/{run}/files/frames/frame_000001.png")[0] == 404  # not in the strip
    assert api.raw(f"/api/v1/projects/{run}/files/farm.toml")[0] == 404
    assert api.post(f"/api/v1/projects/{run}/cancel") == 200
    thread.join(30)
