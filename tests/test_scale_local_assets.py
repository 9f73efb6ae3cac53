"""Agents on the controller's machine use the project's files in place; remote ones still sync."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Background, wait_for

from farm.client import submit
from farm.embedded import EmbeddedFarm
from farm.filesync import build_manifest
from farm.filesync.localview import LocalView, local_hint
from farm.project import STATE_DIR, load_project

BIG = 50 * 2**20


def cache_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def big_project(synthetic, tmp_path: Path, jobs: int = 4) -> tuple[Path, dict[str, bytes]]:
    """A project with a 50 MB asset and one input file per job (the first one 4 MB)."""
    root = synthetic(jobs=jobs, inputs="in")
    with open(root / "big.bin", "wb") as f:  # sparse but for a random head and tail: cheap to write
        f.write(os.urandom(2**20))
        f.seek(BIG - 2**20)
        f.write(os.urandom(2**20))
    (root / "in").mkdir()
    inputs = {f"job-{i:07d}.txt": os.urandom(4 * 2**20 if i == 0 else 100) for i in range(jobs)}
    for name, data in inputs.items():
        (root / "in" / name).write_bytes(data)
    return root, inputs


def test_embedded_farm_renders_without_copying_the_assets(synthetic, tmp_path, monkeypatch):
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the agents' cache, inherited by their processes
    root, inputs = big_project(synthetic, tmp_path)
    project = load_project(root)
    with EmbeddedFarm(root / STATE_DIR, agents=2) as farm:
        summary = farm.submit(project)
    assert summary.state == "done", summary
    assert summary.done == len(inputs)
    for name, data in inputs.items():  # each job read its own input, right to the byte
        assert (project.output_dir / name).read_bytes() == data
    assert cache_bytes(cache) < 2**20, "the assets were copied into the agents' cache"


def start_agent(agents, url: str, tmp_path: Path, *, local: bool) -> Path:
    """A real agent process; returns its temp folder (its scratch folder is made in there)."""
    tmp = tmp_path / "agent-tmp"
    tmp.mkdir()
    agents(
        url,
        1,
        extra=["--cache-dir", str(tmp_path / "agent-cache"), *(["--local-assets"] if local else [])],
        env={"TMPDIR": str(tmp)},
    )
    return tmp


@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
def test_local_agent_links_remote_agent_syncs(synthetic, tmp_path, controller, agents, local):
    root, _ = big_project(synthetic, tmp_path, jobs=2)
    tmp = start_agent(agents, controller.url, tmp_path, local=local)
    summary = submit(controller.url, load_project(root))
    assert summary.state == "done", summary
    (placed,) = tmp.glob("farm-agent-*/projects/*/big.bin")
    assert placed.read_bytes() == (root / "big.bin").read_bytes()
    grown = cache_bytes(tmp_path / "agent-cache")
    if local:  # the source's inode, or a reflink of it
        assert placed.stat().st_ino == (root / "big.bin").stat().st_ino or placed.stat().st_nlink == 1
        assert grown < 2**20
    else:  # a remote-style agent (no --local-assets) keeps the synchroniser and its cache
        assert placed.stat().st_ino != (root / "big.bin").stat().st_ino
        assert grown >= BIG


def test_view_refuses_what_it_cannot_prove(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello")
    manifest = build_manifest(src)
    hint = local_hint(src)
    for wrong in (
        {**hint, "boot": "another-boot"},
        {**hint, "uid": hint["uid"] + 1},
        {**hint, "ino": hint["ino"] + 1},
        {**hint, "root": "relative"},
        {"root": 3},
        None,
    ):
        assert LocalView.make(wrong, manifest, tmp_path / "dest") is None, wrong
    (src / "a.txt").write_bytes(b"HELLO")  # same size, other content: the mtime moved since it was hashed
    os.utime(src / "a.txt", ns=(1, 1))
    assert LocalView.make(hint, manifest, tmp_path / "dest") is None
    assert not (tmp_path / "dest").exists()  # nothing half-made is left


def test_view_notices_an_in_place_edit(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_bytes(b"hello")
    manifest = build_manifest(src)
    view = LocalView.make(local_hint(src), manifest, tmp_path / "dest")
    assert view is not None
    assert (tmp_path / "dest" / "sub" / "a.txt").read_bytes() == b"hello"
    assert view.changed() is None
    if not view.linked:
        pytest.skip("this filesystem reflinks: an edit of the source never reaches the job")
    with open(src / "sub" / "a.txt", "r+b") as f:  # in place: the hard link shares the inode
        f.write(b"J")
    assert "sub/a.txt was modified" in (view.changed() or "")


def test_agent_fails_a_job_whose_linked_asset_changed(synthetic, tmp_path, controller, agents):
    root = synthetic(jobs=1, sleep=2.0, inputs="in", extra="[jobs]\nmax_attempts = 1")
    (root / "in").mkdir()
    (root / "in" / "job-0000000.txt").write_bytes(b"x")
    tmp = start_agent(agents, controller.url, tmp_path, local=True)
    run = Background(controller.url, root)
    placed = wait_for(lambda: list(tmp.glob("farm-agent-*/projects/*/in/job-0000000.txt")), what="the view")
    if placed[0].stat().st_ino != (root / "in" / "job-0000000.txt").stat().st_ino:
        pytest.skip("this filesystem reflinks: an edit of the source never reaches the job")
    with open(root / "in" / "job-0000000.txt", "ab") as f:  # edited in place while the job sleeps
        f.write(b"y")
    wait_for(run.done, 120, "the run")
    summary = run.summary
    assert summary is not None and summary.failed == 1, summary
    assert "modified while the job ran" in str(summary.failures), summary.failures


def test_jobs_a_worker_held_when_an_edit_was_found_fail_too(synthetic, tmp_path, controller, agents):
    """The first result checked after an in-place edit fails, and the project is placed afresh; but the
    job its worker already held (queued behind the running one: short jobs) runs on the edited files
    too. The agent forgot the project's view at the first finding, so that job's result went unchecked
    and came back done with the edited bytes: a mix of old and new outputs, exit 0."""
    jobs = 20
    root = synthetic(jobs=jobs, sleep=0.3, inputs="in", extra="[jobs]\nmax_attempts = 1")
    (root / "in").mkdir()
    for i in range(jobs):
        (root / "in" / f"job-{i:07d}.txt").write_bytes(b"as submitted")
    tmp = start_agent(agents, controller.url, tmp_path, local=True)
    run = Background(controller.url, root)
    placed = wait_for(lambda: list(tmp.glob("farm-agent-*/projects/*/in/job-0000001.txt")), what="the view")
    if placed[0].stat().st_ino != (root / "in" / "job-0000001.txt").stat().st_ino:
        pytest.skip("this filesystem reflinks: an edit of the source never reaches the job")
    wait_for(lambda: (root / "output" / "job-0000002.txt").exists(), 120, "three jobs done")
    for i in range(3, jobs):  # in place (the hard links share the inode), the same size
        with open(root / "in" / f"job-{i:07d}.txt", "r+b") as f:
            f.write(b"EDITED here!")
    wait_for(run.done, 120, "the run")
    summary = run.summary
    assert summary is not None, run.error
    assert any("modified while the job ran" in f["error"] for f in summary.failures), summary
    edited = sorted(p.name for p in (root / "output").glob("*.txt") if p.read_bytes() != b"as submitted")
    assert not edited, f"outputs made from files edited after the submit, counted done: {edited}"
