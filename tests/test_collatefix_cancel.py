"""The collate thread and the ends of a run: a cancel, the controller's stop.

A cancelled remote run's outputs are published for download only once the collate running in
the collate thread has returned (it may be half way through a file); `Collator.close` collates
nothing more, not even the rest of the batch its thread holds. The controller's `synthetic`
collate is wrapped in this process (agents are real processes): the first collate with outputs
writes half its file, then waits on an event the test sets.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for
from farm_synthetic import Synthetic, payload

from farm.client import Client
from farm.controller.collator import Collator, Pending
from farm.controller.run import ProjectRun
from farm.journal import Journal
from farm.plugins import get_media_type
from farm.project import load_project
from farm.protocol import T

FARM = [sys.executable, "-m", "farm"]
SIZE = 4096  # bytes each synthetic job writes


class Hold:
    """Wraps Synthetic.collate: the first collate with outputs writes half its first file, sets
    `held`, and waits for `release` before the real collate writes it whole."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.key: str | None = None  # the job whose collate was held
        self.returned: list[str] = []  # keys whose collate returned, in order

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Hold:
        collate = Synthetic.collate

        def held(media, job, result, outputs, ctx):
            if outputs and self.key is None:
                self.key = job.key
                name, staged = next(iter(outputs.items()))
                data = staged.read_bytes()
                ctx.output_dir.mkdir(parents=True, exist_ok=True)
                (ctx.output_dir / name).write_bytes(data[:len(data) // 2])  # as a transaction half done
                self.held.set()
                assert self.release.wait(120), "never released"
            collate(media, job, result, outputs, ctx)
            self.returned.append(job.key)

        monkeypatch.setattr(Synthetic, "collate", held)
        return self


def _bins(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.bin")}


def _farm(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*FARM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_cancel_publishes_the_outputs_once_the_running_collate_returned(
        controller, agents, synthetic, tmp_path, monkeypatch):
    hold = Hold().install(monkeypatch)
    agents(controller.url, 1)
    project = synthetic(jobs=3, output_bytes=SIZE, name="held")
    procs = [_farm("submit", "--controller", controller.url, str(project))]
    follower = Client(controller.url)
    try:
        assert hold.held.wait(120), "no collate was held"
        run = next(iter(controller.runs.values()))
        url = controller.url
        procs.append(_farm("cancel", "held", "--controller", url, "--download", str(tmp_path / "a")))
        wait_for(lambda: run.state == "cancelled", 60, "the cancel")
        # a second canceller while the collate still runs: it waits with the first
        procs.append(_farm("cancel", run.id, "--controller", url, "--download", str(tmp_path / "b")))
        waiting = lambda: getattr(controller, "publishing", {}).get(run.id, ())  # noqa: E731
        wait_for(lambda: len(waiting()) == 2 or procs[2].poll() is not None, 60, "the second cancel")
        # and a client that follows the run anew (a submitter back after a restart): told with the others
        follower.send(T.FOLLOW, {"project": run.id})
        wait_for(lambda: len(controller.followers.get(run.id, ())) == 2 or follower.sock.poll(0), 60,
                 "the follower")
        assert all(p.poll() is None for p in procs), "answered before the collate returned"
        hold.release.set()
        outs = [p.communicate(timeout=120) for p in procs]
        followed = follower.receive(timeout=60)
        while followed.type is T.UPDATE:  # the final counts come first
            followed = follower.receive(timeout=60)
    finally:
        follower.close()
        hold.release.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    submit, first, second = procs
    assert submit.returncode == 1, outs[0]  # cancelled: not all rendered
    assert first.returncode == 0 and second.returncode == 0, outs
    assert "had finished already (cancelled)" in outs[2][1]
    assert followed.type is T.FINISHED and followed.body["summary"]["download"] == f"{run.id}.output"
    there = next((controller.state_dir / "uploads").glob("*/output"))
    final = _bins(there)
    assert final[f"{hold.key}.bin"] == payload(hold.key, SIZE)  # the held collate finished its file
    # and its job counts as done: the summary counts every job whose outputs are there, no more
    assert followed.body["summary"]["jobs"]["done"] == len(final), (followed.body["summary"], sorted(final))
    for folder in (tmp_path / "a", tmp_path / "b", project / "output"):
        got = _bins(folder)
        assert got == final, folder  # what was published is what the folder holds now, whole
        for name, data in got.items():
            assert data == payload(name.removesuffix(".bin"), SIZE), (folder, name)


def test_close_collates_nothing_more_of_the_batch_its_thread_took(tmp_path, synthetic, monkeypatch):
    hold = Hold().install(monkeypatch)
    project = load_project(synthetic(jobs=6, output_bytes=SIZE))
    media = get_media_type("synthetic")
    journal = Journal(tmp_path / "journal.sqlite")
    collator = Collator()
    closer = threading.Thread(target=collator.close, daemon=True)
    try:
        run = ProjectRun("run0", project, media, journal)
        stagings = []
        for job in media.split(project):
            staging = tmp_path / "staging" / job.key
            staging.mkdir(parents=True)
            (staging / f"{job.key}.bin").write_bytes(payload(job.key, SIZE))
            stagings.append(staging)
            collator.submit(Pending(run, job, None, {f"{job.key}.bin": staging / f"{job.key}.bin"},
                                    staging=staging))
        collator.flush(time.monotonic() + 1)  # all six in one batch
        assert hold.held.wait(60), "the first collate did not start"
        closer.start()
        wait_for(lambda: getattr(collator, "_closing", True), 30, "close to begin")
        hold.release.set()
        closer.join(60)
        assert not closer.is_alive(), "close did not return"
        assert not collator._thread.is_alive()
    finally:
        hold.release.set()
        if not closer.is_alive() and not closer.ident:
            collator.close()
        journal.close()
    assert hold.returned == [hold.key] == ["job-0000000"]  # the one running finished; no other began
    assert list(_bins(project.output_dir)) == ["job-0000000.bin"]
    assert [s for s in stagings if s.exists()] == []  # the skipped ones' staging is gone too
