"""The progress total of jobs: with a chunk the project wrote it is known from the start and
never changes; without one it follows the advisor's sizes but always counts what the split
makes at those sizes (maptiles' rows cut jobs short: a total must count that).

The advisor is the controller's own (`AdaptiveChunks`); the run's total is what
`ProjectRun` computes: the jobs pulled so far plus `jobs_left()`. The end-to-end test runs
`farm submit --agents 2` with real Mapnik and reads the plain progress lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_frames import write_project as write_frames

from farm.controller.chunking import AdaptiveChunks
from farm.plugins import get_media_type
from farm.project import load_project

WORLD = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"


def world_map(tmp_path: Path, table: str) -> Path:
    """The sample world map with its ``[maptiles]`` zoom line replaced by ``table``."""
    root = tmp_path / "world_map"
    shutil.copytree(WORLD, root, ignore=shutil.ignore_patterns("output", ".farm"))
    toml = (root / "farm.toml").read_text()
    if "bbox" in table:
        toml = re.sub(r"^bbox = .*\n", "", toml, flags=re.M)
    (root / "farm.toml").write_text(re.sub(r'^zoom = .*$', table, toml, flags=re.M))
    return root


def totals_while_pulling(root: Path, times: list[float] | None = None) -> tuple[int, int, list[int]]:
    """(count(), the jobs the split made, the run's job total after each pull)."""
    project = load_project(root, renderer_checks=False)
    media = get_media_type(project.media_type)
    chunks = AdaptiveChunks(target_s=2.0)
    chunks.saw("agent-0", 1, 2)
    totals = []
    pulled = 0
    for job in media.split(project, chunks):
        pulled += 1
        if times and pulled <= len(times):  # measured times: the advisor regroups from here
            chunks.record("agent-0", job.units, times[pulled - 1] * job.units)
        totals.append(pulled + chunks.jobs_left())
    return media.count(project), pulled, totals


@pytest.mark.parametrize(("table", "jobs"), [
    ('zoom = "0-6"\nchunk = 2', 46),  # the user's case
    ('zoom = "0-6"\nchunk = 3', None),
    ('zoom = "2-7"\nchunk = 5', None),
    ('zoom = "0-7"\nchunk = 16', None),  # one job a row (16 metatiles at z7: the cap)
    ('zoom = "4-6"\nchunk = 1\nbbox = [-30, -40, 60, 70]', None),  # rows narrower than the world
])
def test_maptiles_fixed_chunk_total_is_known_from_the_start(tmp_path, table, jobs):
    count, pulled, totals = totals_while_pulling(world_map(tmp_path, table))
    assert count == pulled == (jobs or pulled)
    assert set(totals) == {pulled}, sorted(set(totals))  # before the fix: 46 -> 88


@pytest.mark.parametrize("table", ['zoom = "0-6"', 'zoom = "3-7"\nbbox = [-30, -40, 60, 70]'])
def test_maptiles_adaptive_total_counts_row_ends_and_ends_exact(tmp_path, table):
    """No chunk: before any time the total is count(); with times the advisor groups more per
    job, and the total follows (each figure what the split makes at the size of the moment)."""
    root = world_map(tmp_path, table)
    count, pulled, totals = totals_while_pulling(root)
    assert set(totals) == {count == pulled and pulled}
    _, pulled, totals = totals_while_pulling(root, times=[0.01] * 40)  # 10 ms a metatile: large jobs
    assert totals[-1] == pulled and all(t >= i + 1 for i, t in enumerate(totals))
    assert max(totals[:3]) <= count  # never more than one metatile a job makes


@pytest.mark.parametrize(("frames", "chunk"),
                         [("1-100", 7), ("1-10,20-33,50", 4), ("1-3", 5), ("5-300,400-401", 10)])
def test_frames_fixed_chunk_total_is_known_from_the_start(tmp_path, frames, chunk):
    root = write_frames(tmp_path / "p", frames=frames, frames_extra=f"chunk = {chunk}\n")
    count, pulled, totals = totals_while_pulling(root)
    assert count == pulled
    assert set(totals) == {pulled}, totals  # before the fix: the jobs pulled so far


@pytest.mark.timeout(600)
def test_farm_submit_progress_shows_one_total_with_a_fixed_chunk(tmp_path):
    root = world_map(tmp_path, 'zoom = "0-6"\nchunk = 2')
    proc = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "2", str(root)],
                          capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    totals = {int(t) for t in re.findall(r"jobs \d+/(\d+)", proc.stderr)}
    assert totals == {46}, proc.stderr[-3000:]
