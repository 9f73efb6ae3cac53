"""A job sent ahead: while one job renders, its Blender is given the next (`RenderContext.upcoming`),
so it goes from one frame to the next as ``blender -a`` does while the worker checks and reports
the first. Its frames and log stay its own, its failure is its own, and a job other than the one
sent ahead gets a fresh Blender. Real Blender, and a real worker process on a real socket.

A scene handler appends each frame's number to a file when Blender starts rendering it, so "the
next frame started before its own render was called" is read from Blender, not from the plugin.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest
import zmq
from conftest import wait_for
from farm_frames.media import Frames, job_key
from farm_frames.warm import SLOT
from test_frames import assert_same_pixels, blender, reference_render, write_project  # noqa: F401
from test_frames_warm import Worker
from wire_helpers import result_map

from farm.agent.launch import worker_command, worker_env
from farm.agent.wresults import read as read_results
from farm.errors import RenderError
from farm.mediatype import Job
from farm.project import load_project
from farm.protocol import JobSpec, T, pack, unpack

pytestmark = pytest.mark.slow

STARTS = """
    def _started(scene, *args):
        with open({path!r}, "a") as f:
            f.write(f"{{scene.frame_current}}\\n")
    bpy.app.handlers.render_pre.append(_started)
"""


def started(path: Path) -> list[int]:
    """The frames Blender began rendering, in order."""
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def job(frame: int) -> Job:
    return Job(job_key([[frame, frame]]), {"runs": [[frame, frame]]})


class Slot(Worker):
    """One worker slot's context, its jobs rendered one after another, each told the next."""

    def __init__(self, root: Path, scratch: Path) -> None:
        super().__init__(root, scratch)
        self.kept = scratch / "kept"
        self.kept.mkdir()

    def render(self, frame: int, upcoming: int | None) -> tuple[dict, list[str], str]:  # type: ignore[override]
        """Render ``frame`` with ``upcoming`` as the next job; its result, the files of its
        output folder (then kept aside, as the worker sends them) and its Blender log."""
        self.ctx.upcoming = lambda: None if upcoming is None else job(upcoming)
        result = dict(Frames().render(job(frame), self.ctx))
        files = sorted(p.relative_to(self.out).as_posix() for p in self.out.rglob("*") if p.is_file())
        for path in (self.out / "frames").iterdir():
            path.rename(self.kept / path.name)
        return result, files, (self.ctx.work_dir / "blender.log").read_text()


def frames_in(log: str) -> set[int]:
    """The frames Blender's status lines (``Fra:12 Mem:...``) in a log speak of."""
    return {int(line[4:].split()[0]) for line in log.splitlines() if line.startswith("Fra:")}


def test_the_next_job_starts_before_its_render_is_called_and_keeps_its_frames_and_log(blender, tmp_path):  # noqa: F811
    starts = tmp_path / "starts"
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=STARTS.format(path=str(starts)))
    slot = Slot(root, tmp_path / "slot")
    results = []
    for frame, upcoming in ((1, 2), (2, 3), (3, None)):
        result, files, log = slot.render(frame, upcoming)
        results.append(result)
        assert files == [f"frames/frame_{frame:06d}.png"]  # the next job's frame is not in this job's outputs
        assert frames_in(log) == {frame}, log[-2000:]  # nor its lines in this job's log
        if upcoming is not None:  # Blender is on the next frame before the worker asks for it
            wait_for(lambda n=upcoming: n in started(starts), 120, f"Blender to start frame {upcoming} ahead")
    assert [r["ahead"] for r in results] == [False, True, True]
    assert [r["warm"] for r in results] == [False, True, True]
    assert len({r["blender_pid"] for r in results}) == 1
    assert started(starts) == [1, 2, 3]
    reference_render(blender, root, 1, 3, tmp_path / "ref")
    for frame in (1, 2, 3):
        assert_same_pixels(slot.kept / f"frame_{frame:06d}.png", tmp_path / "ref" / f"ref_{frame:06d}.png")


CRASH_ON_2 = """
    import os
    def _crash(scene, *args):
        if scene.frame_current == 2:
            open({marker!r}, "w").close()
            print("farm-test: crashing on frame 2", flush=True)
            os.abort()
    bpy.app.handlers.render_pre.append(_crash)
"""


def test_a_job_sent_ahead_that_crashes_fails_itself_and_not_the_one_before(blender, tmp_path):  # noqa: F811
    marker = tmp_path / "crashed"
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=CRASH_ON_2.format(marker=str(marker)))
    slot = Slot(root, tmp_path / "slot")
    first, files, _ = slot.render(1, 2)
    assert files == ["frames/frame_000001.png"] and first["ahead"] is False
    wait_for(marker.exists, 120, "frame 2 to crash its Blender before its own render is called")
    with pytest.raises(RenderError, match=r"Blender exited with code -?\d+ rendering frames 2\n") as raised:
        slot.render(2, 3)
    assert "farm-test: crashing on frame 2" in str(raised.value)
    assert "Fra:1 " not in str(raised.value)  # the job before's lines are not this one's
    assert SLOT.running is None
    third, files, _ = slot.render(3, None)  # the next job gets a fresh Blender
    assert files == ["frames/frame_000003.png"]
    assert (third["warm"], third["ahead"]) == (False, False) and third["blender_pid"] != first["blender_pid"]


def test_a_job_other_than_the_one_sent_ahead_gets_a_fresh_blender(blender, tmp_path, caplog):  # noqa: F811
    starts = tmp_path / "starts"
    root = write_project(tmp_path / "p", frames="1-3", scene_extra=STARTS.format(path=str(starts)))
    slot = Slot(root, tmp_path / "slot")
    first, _, _ = slot.render(1, 2)
    wait_for(lambda: 2 in started(starts), 120, "Blender to start frame 2 ahead")
    with caplog.at_level(logging.WARNING, logger="farm_frames.warm"):
        third, files, log = slot.render(3, None)  # the worker broke its word: never take frame 2 for 3
    assert "was sent job frames-000002-000002 ahead, not frames-000003-000003" in caplog.text
    assert files == ["frames/frame_000003.png"] and frames_in(log) == {3}
    assert (third["warm"], third["ahead"]) == (False, False) and third["blender_pid"] != first["blender_pid"]
    reference_render(blender, root, 3, 3, tmp_path / "ref")
    assert_same_pixels(slot.kept / "frame_000003.png", tmp_path / "ref" / "ref_000003.png")


def test_a_worker_hands_blender_the_job_queued_behind_the_running_one(blender, tmp_path):  # noqa: F811
    """A real worker process, fed as its agent feeds it: job 2 waits in its socket while job 1
    renders, so Blender gets it ahead; job 3 comes with its project described anew (a new
    context), so it is not sent ahead and gets a Blender of its own."""
    root = write_project(tmp_path / "p", frames="1-3")
    described = {"proj1": load_project(root).to_wire()}
    zctx = zmq.Context()
    sock = zctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/workers.sock"
    sock.bind(endpoint)
    worker = subprocess.Popen(worker_command(endpoint, 0, tmp_path / "slot0"), env=worker_env(2),
                              start_new_session=True)
    results, outputs = {}, {}
    try:
        assert sock.poll(120_000), "the worker never said it was ready"
        ident, *rest = sock.recv_multipart()
        assert unpack(rest).type is T.W_READY
        for frame, projects in ((1, described), (2, {}), (3, described)):
            spec = JobSpec(f"lease{frame}", job(frame).key, "proj1", job(frame).params, {}, 600.0)
            body = {"jobs": [spec], "projects": projects, "threads": 2}
            sock.send_multipart([ident, *pack(T.W_JOBS, body)])
        while len(results) < 3:
            assert sock.poll(120_000), f"no result within 120 s; have {sorted(results)}"
            msg = unpack(sock.recv_multipart()[1:])
            if msg.type is not T.W_RESULTS:
                continue
            payloads = iter(msg.payloads)
            for wire in map(result_map, read_results(msg.body)):
                results[wire["lease"]] = wire
                outputs[wire["lease"]] = {name: next(payloads) for name, _, _ in wire["files"]}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        zctx.destroy(linger=0)
    assert all(r["ok"] for r in results.values()), [r.get("error") for r in results.values()]
    said = [results[f"lease{n}"]["result"] for n in (1, 2, 3)]
    assert [r["ahead"] for r in said] == [False, True, False]
    assert [r["warm"] for r in said] == [False, True, False]
    reference_render(blender, root, 1, 3, tmp_path / "ref")
    for frame in (1, 2, 3):
        files = outputs[f"lease{frame}"]
        assert list(files) == [f"frames/frame_{frame:06d}.png"]
        got = tmp_path / f"got_{frame}.png"
        got.write_bytes(files[f"frames/frame_{frame:06d}.png"])
        assert_same_pixels(got, tmp_path / "ref" / f"ref_{frame:06d}.png")
