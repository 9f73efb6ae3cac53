"""`farm submit --watch` says which files started a new round (a user saw rounds start with no word
why). Real processes: an embedded farm, real edits, real inotify."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import wait_for, write_project
from watch_helpers import watching

from farm.cli.watch import what_changed

FARM = [sys.executable, "-m", "farm"]


def test_a_round_is_said_to_start_because_of_the_files_that_changed(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2\n", name="p")
    for name in "abcdef":
        (project / "data").mkdir(exist_ok=True)
        (project / "data" / f"{name}.txt").write_text(name)
    err = tmp_path / "err"
    with watching(project, err) as said:
        wait_for(lambda: said("watching for changes"), 180, "the first round")
        (project / "data" / "a.txt").write_text("edited")
        wait_for(lambda: said("change in data/a.txt: rendering again"), 180, "the edit said")
        wait_for(lambda: said("watching for changes", 2), 180, "the second round")
        staged = tmp_path / "data"  # many edits at once: the new folder moved in, in one go
        staged.mkdir()
        for name in "abcdefg":
            (staged / f"{name}.txt").write_text("edited" if name != "g" else "new")
        (project / "data").rename(tmp_path / "old")
        staged.rename(project / "data")
        many = "changes in data/b.txt, data/c.txt, data/d.txt and 3 more files: rendering again"
        wait_for(lambda: said(many), 180, "the edits said, a few named and the rest counted")
    lines = [line for line in err.read_text().splitlines() if line.endswith(": rendering again")]
    assert lines == ["change in data/a.txt: rendering again", many], lines


def test_what_changed_names_a_few_files_and_counts_the_rest() -> None:
    def ok(**files: str) -> tuple:
        return ("ok", tuple(sorted((f"{k}.txt", v.encode()) for k, v in files.items())))

    before = ok(a="1", b="1", c="1", d="1", e="1")
    assert what_changed(before, ok(a="2", b="1", c="1", d="1", e="1")) == "change in a.txt"
    assert what_changed(before, ok(a="1", b="2", c="1", d="1")) == "changes in b.txt and e.txt (removed)"
    assert what_changed(before, ok(a="2", b="2", c="2", d="2", e="2", f="1")) == \
        "changes in a.txt, b.txt, c.txt and 3 more files"
    assert what_changed(("invalid", "bad toml"), before) == "the project loads again"
    assert what_changed(before, ("invalid", "bad toml")) == "the project changed"
