"""`farm submit --watch`: an edit of a file no job reads (jobs declare `inputs`) starts no round,
which would render nothing; it is said plainly. An edit of a file a job reads still starts one.
Real processes: an embedded farm, real edits, real inotify."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from conftest import ROOT, wait_for, write_project
from watch_helpers import watching

from farm.cli.watch import ProjectInputs, unread_change

FARM = [sys.executable, "-m", "farm"]


def test_an_edit_no_job_reads_starts_no_round_and_says_so(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "synthetic", 'jobs = 2\ninputs = "data"\n', name="p")
    (project / "data").mkdir()
    for key in ("job-0000000", "job-0000001"):
        (project / "data" / f"{key}.txt").write_text(key)
    (project / "notes.txt").write_text("to do\n")
    err = tmp_path / "err"
    with watching(project, err) as said:
        wait_for(lambda: said("watching for changes"), 180, "the first round")
        (project / "notes.txt").write_text("to do: nothing\n")
        wait_for(lambda: said("notes.txt changed; no job reads it: nothing to render"), 180, "the edit said")
        (project / "data" / "job-0000001.txt").write_text("edited")
        wait_for(lambda: said("change in data/job-0000001.txt: rendering again"), 180, "the read edit said")
        wait_for(lambda: said("watching for changes", 2), 180, "the second round")
    text = err.read_text()
    assert text.count("watching for changes") == 2, text  # two rounds: none for notes.txt
    assert "change in notes.txt" not in text, text


def test_unread_change_names_the_files_and_leaves_read_ones_to_a_round() -> None:
    def ok(**files: str) -> tuple:
        return ("ok", tuple(sorted((f"{k}.txt", v.encode()) for k, v in files.items())))

    before = ok(a="1", b="1", notes="1")
    unread = {"notes.txt", "b.txt"}.issuperset
    assert unread_change(before, ok(a="1", b="1", notes="2"), lambda changed: not unread(changed)) == \
        "notes.txt changed; no job reads it: nothing to render"
    assert unread_change(before, ok(a="1", b="2"), lambda changed: not unread(changed)) == \
        "b.txt and notes.txt (removed) changed; no job reads them: nothing to render"
    assert unread_change(before, ok(a="2", b="1", notes="2"), lambda changed: not unread(changed)) is None
    assert unread_change(("invalid", "x"), before, lambda changed: False) is None  # loads again: a round


def test_maptiles_jobs_read_the_style_and_its_data_not_notes(tmp_path: Path) -> None:
    """The sample world map (real Mapnik): its jobs read the style and the shapefiles it names."""
    project = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project)
    (project / "notes.txt").write_text("to do\n")
    inputs = ProjectInputs(project)
    assert inputs.fingerprint()[0] == "ok"
    assert not inputs.read_by_jobs({"notes.txt", "README.md"})
    assert inputs.read_by_jobs({"notes.txt", "world.xml"})
    assert inputs.read_by_jobs({"data/naturalearth_cities.dbf"})
    assert inputs.read_by_jobs({"farm.toml"})


def test_each_jobs_own_input_is_read_whichever_job_it_is(tmp_path: Path) -> None:
    """Synthetic jobs each read their own file (a tuple of its own per job): an edit of any one is a
    file a job reads. The jobs' tuples were told apart by id only, and a freed tuple's id went to the
    next job's, which was skipped: the edit of data/job-0000002.txt started no round (CI hung)."""
    project = write_project(tmp_path / "p", "synthetic", 'jobs = 8\ninputs = "data"\n', name="p")
    (project / "data").mkdir()
    keys = [f"job-{i:07d}" for i in range(8)]
    for key in keys:
        (project / "data" / f"{key}.txt").write_text(key)
    inputs = ProjectInputs(project)
    assert inputs.fingerprint()[0] == "ok"
    assert [key for key in keys if not inputs.read_by_jobs({f"data/{key}.txt"})] == []
    assert not inputs.read_by_jobs({"data/job-0000008.txt"})  # no such job
