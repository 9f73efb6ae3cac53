"""Renderer checks run where the renderer is (the submitter, the agents), never on the controller.

What only the renderer can tell (audio: the input's format and exact length, the chain's
shape, the split verdict; maptiles: the derived metatile buffer) travels with the submit as
the project's renderer facts, checked on arrival: a false fact is refused with its key, or,
if plausible, fails the run's jobs on agents whose renderer finds otherwise, naming both.
Real controllers, agents, ffmpeg, Blender and Mapnik.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest
from conftest import ROOT, restartable_url, wait_for
from farm_audio import ffmpeg

from farm.client import Client, submit
from farm.errors import FarmError
from farm.project import load_project
from farm.protocol import T

FARM = [sys.executable, "-m", "farm"]



def logging_shim(folder: Path, name: str, then: str) -> tuple[Path, Path]:
    """An executable that appends its arguments to a log, then runs `then` (a shell line)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    shim = folder / name
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n{then}\n')
    shim.chmod(0o755)
    return shim, log


class RemoteController:
    """`farm controller` in a process of its own, with the environment given (its host's renderers)."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.url = restartable_url()
        self.state = tmp / "state"
        self.proc = subprocess.Popen([*FARM, "--log-level", "warning", "controller", "--bind", self.url,
                                      "--insecure", "--state-dir", str(self.state), "--heartbeat", "0.5"],
                                     env=env)
        wait_for(self._up, 60, "the controller")

    def _up(self) -> bool:
        try:
            with Client(self.url, timeout=5) as client:
                client.status()
        except Exception:
            return False
        return True

    def settings(self) -> list[dict]:
        """The settings of each project the controller journaled (as it derived them)."""
        import sqlite3

        with sqlite3.connect(self.state / "journal.sqlite") as db:
            rows = db.execute("SELECT wire FROM projects")
            return [msgpack.unpackb(wire, raw=False)["settings"] for (wire,) in rows]

    def close(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(30) == 0


def audio_project(root: Path, table: str, seconds: float = 3.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tone = f"aevalsrc=exprs='0.3*sin(2*PI*440*t)':s=44100:c=stereo:d={seconds}"
    ffmpeg.run(["-y", "-f", "lavfi", "-i", tone, "-c:a", "flac", str(root / "source.flac")])
    (root / "farm.toml").write_text(f'[project]\nname = "tone"\nmedia_type = "audio"\n\n[audio]\n'
                                    f'input = "source.flac"\n{textwrap.dedent(table)}')
    return root


# -- a controller that never runs the renderer ------------------------------------------

def test_a_controller_that_runs_no_ffmpeg_check_schedules_audio_its_agents_render(tmp_path, agents):
    project = audio_project(tmp_path / "tone", 'filters = "highpass=f=100,volume=0.8"\nsegment = 1\n'
                                               'outputs = ["flac", "mp3"]\nname = "tone"\n')
    real = ffmpeg.ffmpeg_exe()
    shim, calls = logging_shim(tmp_path / "shim", "ffmpeg", f'exec "{real}" "$@"')
    ctl = RemoteController(tmp_path, {**os.environ, ffmpeg.FFMPEG_ENV: str(shim)})
    try:
        agents(ctl.url, 2)
        loaded = load_project(project)  # the submitter asks ffmpeg (its own)
        assert loaded.facts["samples"] == 3 * 44100 and loaded.facts["whole_file"] == ""
        summary = submit(ctl.url, loaded, upload=True)
        assert summary.ok and summary.done == summary.total == 3, summary
        assert (project / "output" / "tone.flac").is_file() and (project / "output" / "tone.mp3").is_file()
        assert ctl.settings()[0]["samples"] == 3 * 44100  # derived from the facts, not measured
    finally:
        ctl.close()
    ran = calls.read_text().splitlines() if calls.exists() else []
    # the controller's ffmpeg only encoded (the joined PCM on its stdin; one process for both
    # outputs): it never probed, decoded, listed filters or ran the chain
    assert len(ran) == 1 and all("-i pipe:0" in line for line in ran), ran


def test_a_resumed_controller_takes_the_journaled_facts_and_measures_nothing(tmp_path, agents):
    project = audio_project(tmp_path / "tone", 'segment = 1\nname = "tone"\n')
    real = ffmpeg.ffmpeg_exe()
    shim, calls = logging_shim(tmp_path / "shim", "ffmpeg", f'exec "{real}" "$@"')
    env = {**os.environ, ffmpeg.FFMPEG_ENV: str(shim)}
    ctl = RemoteController(tmp_path, env)
    try:  # accepted with no agent to run it, then the controller goes away
        with Client(ctl.url, timeout=60) as client:
            run_id = client.submit(load_project(project), upload=True)
    finally:
        ctl.close()
    ctl = RemoteController(tmp_path, env)  # the same state folder: it resumes the run from the journal
    try:
        agents(ctl.url, 1)
        with Client(ctl.url, timeout=120) as client:
            client.send(T.FOLLOW, {"project": run_id})
            summary = client.download(client.follow(run_id), load_project(project))
        assert summary.ok and summary.done == summary.total == 3, summary
        assert (project / "output" / "tone.flac").is_file()
    finally:
        ctl.close()
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert len(ran) == 1 and "-i pipe:0" in ran[0], ran  # the one encoder; no probe, before or after


def test_a_controller_without_blender_schedules_frames_its_agents_render(tmp_path, agents):
    project = tmp_path / "turntable"
    shutil.copytree(ROOT / "sample_projects" / "turntable", project,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    toml = project / "farm.toml"
    text = toml.read_text().replace('frames = "1-48"', 'frames = "1-4"').replace("chunk = 12", "chunk = 2")
    toml.write_text(text.replace("resolution = [160, 90]", "resolution = [32, 18]").replace("samples = 8",
                                                                                            "samples = 1"))
    shim, calls = logging_shim(tmp_path / "shim", "blender", "exit 1")  # a Blender that never works
    env = {**os.environ, "FARM_BLENDER": str(shim)}
    ctl = RemoteController(tmp_path, env)
    try:
        agents(ctl.url, 2)
        summary = submit(ctl.url, load_project(project), upload=True)
        assert summary.ok and summary.done == summary.total == 2, summary
        assert sorted(p.name for p in (project / "output" / "frames").iterdir())[:1] == ["frame_000001.png"]
    finally:
        ctl.close()
    assert not calls.exists()  # the controller never ran (its) Blender


def test_a_controller_without_mapnik_takes_the_buffer_the_submitters_mapnik_derived(tmp_path, agents):
    shim = tmp_path / "nomapnik"
    shim.mkdir()
    (shim / "mapnik.py").write_text('raise ImportError("this host has no Mapnik")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    project = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-1"'))
    loaded = load_project(project)
    assert loaded.facts == {"buffer": loaded.settings["buffer"]} and loaded.settings["buffer"] >= 128
    ctl = RemoteController(tmp_path, env)
    try:
        agents(ctl.url, 1)
        summary = submit(ctl.url, loaded, upload=True)
        assert summary.ok and summary.done == summary.total == 2, summary
        assert ctl.settings()[0]["buffer"] == loaded.settings["buffer"]  # same cache keys as with Mapnik
    finally:
        ctl.close()


# -- facts a submitter could lie about ----------------------------------------------------

@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    return audio_project(tmp_path_factory.mktemp("tone") / "tone", 'filters = "volume=0.5"\nsegment = 1\n')


@pytest.mark.parametrize(("change", "error"), [
    ({"samples": -1}, r"\[audio.facts\] samples: must be at least 1"),
    ({"samples": 10**15}, r"\[audio\] input: .* longer than the 7 days of audio"),
    ({"out_layout": "stereo -y /tmp/x"}, r"\[audio.facts\] out_layout: .* not a channel layout"),
    ({"out_channels": 6}, r"\[audio.facts\] out_channels: 6 channels, but the output layout 'stereo' has 2"),
    ({"source_fmt": "evil"}, r"\[audio.facts\] source_fmt: expected one of"),
    ({"tail": 10**12}, r"\[audio.facts\] tail: .* longer than any chain's tail"),
    ({"extra": 1}, r"\[audio.facts\] extra: unknown key"),
    ({"codec": None}, r"\[audio.facts\] codec: is required"),
    ({"whole_file": ["a"]}, r"\[audio.facts\] whole_file: expected a string"),
])
def test_false_audio_facts_are_refused_naming_the_fact(controller, tone, change, error):
    project = load_project(tone)
    facts = {**project.facts, **change}
    facts = {k: v for k, v in facts.items() if v is not None}
    with Client(controller.url) as client, pytest.raises(FarmError, match=error):
        client.submit(dataclasses.replace(project, facts=facts))


@pytest.mark.parametrize("facts", [["not", "a", "map"], "samples=1"])
def test_facts_that_are_not_a_map_are_refused(controller, tone, facts):
    with Client(controller.url) as client, pytest.raises(FarmError, match=r"renderer facts .* must be a map"):
        client.submit(dataclasses.replace(load_project(tone), facts=facts))


def test_a_false_maptiles_buffer_is_refused(controller):
    project = load_project(ROOT / "sample_projects" / "world_map")
    wrong = r"\[maptiles.facts\] buffer: must be at most"
    with Client(controller.url) as client, pytest.raises(FarmError, match=wrong):
        client.submit(dataclasses.replace(project, facts={"buffer": 10**6}))


def test_a_plausible_lie_fails_the_run_on_the_agents_naming_both_values(controller, agents, tone, tmp_path):
    project = tmp_path / "tone"
    shutil.copytree(tone, project, ignore=shutil.ignore_patterns("output"))
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace("[audio]", "[jobs]\nmax_attempts = 1\n\n[audio]"))
    loaded = load_project(project)
    lie = dataclasses.replace(loaded, facts={**loaded.facts, "samples": loaded.facts["samples"] * 2})
    agents(controller.url, 1)
    with Client(controller.url, timeout=120) as client:
        run_id = client.submit(lie)
        summary = client.follow(run_id)
    assert not summary.ok and summary.total == 6  # the controller split what it was told
    assert summary.failures and all("fact 'samples' = 132300, but the project was submitted with 264600"
                                    in f["error"] for f in summary.failures), summary.failures[:1]
    written = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert all(p in ("farm.toml", "source.flac") or p.startswith("output/") for p in written), written


def test_a_submit_without_facts_is_measured_by_a_controller_that_has_ffmpeg(controller, tone):
    # an older submitter sends none: a controller with ffmpeg then measures, as before
    with Client(controller.url) as client:
        run_id = client.submit(dataclasses.replace(load_project(tone), facts={}))
    run = wait_for(lambda: controller.runs.get(run_id), 30, "the run")
    assert run.total == 3 and run.project.facts["samples"] == 3 * 44100
