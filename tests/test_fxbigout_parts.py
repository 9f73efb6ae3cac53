"""A remote run's output folder with more files than one manifest may list is served in parts,
and `farm submit --controller` and `farm download` fetch every part; outputs the controller
cannot serve at all make the remote submit fail naming why, never a silent empty download.

Scale: a zoom 0-10 map writes 1.4 million tiles, past the 200,000 files one manifest may list
(`Limits.max_files`). Here the controller's `OUTPUT_LIMITS` are lowered to 50 files, and a
synthetic run writes 120 (real controller, agent, submitter and downloader processes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from farm_synthetic import payload

import farm.controller.assets as assets_module
from farm.filesync import Limits, build_manifest
from farm.filesync.parts import build_parts

FARM = [sys.executable, "-m", "farm"]
JOBS = 120  # 120 files: 3 parts of at most 50


def _farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=300)


def _check_outputs(folder: Path) -> None:
    got = sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(got) == JOBS and all(name.endswith(".bin") for name in got), (len(got), got[:5])
    for path in folder.glob("*.bin"):
        assert path.read_bytes() == payload(path.stem, 64), path


def test_outputs_past_the_file_limit_come_down_in_parts(controller, agents, synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(assets_module, "OUTPUT_LIMITS", Limits(max_files=50))
    agents(controller.url, 1)
    project = synthetic(jobs=JOBS, output_bytes=64, name="tiles")
    done = _farm("submit", "--controller", controller.url, str(project))
    assert done.returncode == 0, (done.stdout, done.stderr)
    _check_outputs(project / "output")
    run = next(iter(controller.runs.values()))
    assert run.summary()["download_parts"] == [f"{run.id}.output", f"{run.id}.output.2", f"{run.id}.output.3"]

    again = _farm("download", run.id, str(tmp_path / "again"), "--controller", controller.url, "--json")
    assert again.returncode == 0, (again.stdout, again.stderr)
    _check_outputs(tmp_path / "again")


def test_outputs_that_cannot_be_served_fail_the_remote_submit(controller, agents, synthetic, monkeypatch):
    monkeypatch.setattr(assets_module, "OUTPUT_LIMITS", Limits(max_file_size=10))  # each .bin is 64 bytes
    agents(controller.url, 1)
    project = synthetic(jobs=3, output_bytes=64, name="unserved")
    done = _farm("submit", "--controller", controller.url, str(project))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "cannot serve its outputs for download" in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "over the limit of 10" in done.stdout + done.stderr
    run = wait_for(lambda: next(iter(controller.runs.values()), None), 60, "the run")
    refused = _farm("download", run.id, "elsewhere", "--controller", controller.url)
    assert refused.returncode == 1 and "over the limit of 10" in refused.stderr, refused.stderr


def test_parts_keep_within_the_manifest_byte_limit(tmp_path):
    root = tmp_path / "tree"
    for i in range(300):
        (root / f"z{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"z{i % 3}" / f"{i:04d}-{'x' * 40}.png").write_bytes(b"%d" % i)
    paths = [str(p.relative_to(root)) for p in root.rglob("*.png")]
    limits = Limits(max_manifest_bytes=4096)
    parts = build_parts(root, paths, limits=limits)
    assert len(parts) > 3
    assert all(len(part.to_bytes()) <= 4096 for part in parts)
    entries = [entry for part in parts for entry in part]
    assert [e.path for e in entries] == sorted(paths)
    assert entries == list(build_manifest(root, paths))  # the same entries as one manifest
