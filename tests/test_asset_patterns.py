"""``[assets]`` include/exclude patterns follow .gitignore's rules, and the walk that lists what the
agents get (`list_assets`) agrees with the load's refusal of a file they never get (`left_out`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_project

from farm.assetrules import AssetRules
from farm.client import submit
from farm.errors import ProjectError, ProtocolError
from farm.project import Project, list_assets, load_project

SAMPLE = Path(__file__).resolve().parents[1] / "sample_projects" / "world_map"

TREE = ["farm.toml", "a.tmp", "renders/a.tmp", "renders/deep/b.tmp", "src/main.py", "src/deep/x.py",
        "lib/src/y.py", "notes/src", "cache/c.bin", "data/cache/d.bin", "notes/cache", "build/o.bin",
        "src/build/o.bin", "docs/c.md", "docs/a/b/c.md", "scenes/shot.blend", "scenes/tex/blue.png",
        "x.blend", ".git/HEAD", "scenes/.cache/s.bin", "output/old.png", "#x"]
SENT = set(TREE) - {".git/HEAD", "scenes/.cache/s.bin", "output/old.png"}  # with no patterns


@pytest.mark.parametrize(("include", "exclude", "left_out"), [
    # a name without a slash, at any depth: the folders so named and all under them, and files so named
    (["**"], ["src"], {"src/main.py", "src/deep/x.py", "src/build/o.bin", "lib/src/y.py", "notes/src"}),
    (["**"], ["*.tmp"], {"a.tmp", "renders/a.tmp", "renders/deep/b.tmp"}),  # the README's example
    (["**"], ["cache/"], {"cache/c.bin", "data/cache/d.bin"}),  # a trailing / matches folders only
    (["**"], ["/build"], {"build/o.bin"}),  # a leading / anchors to the project root
    (["**"], ["src/build"], {"src/build/o.bin"}),  # a slash inside anchors too
    (["**"], ["docs/**/c.md"], {"docs/c.md", "docs/a/b/c.md"}),  # ** spans zero or more folders
    (["**"], ["src/*"], {"src/main.py", "src/deep/x.py", "src/build/o.bin"}),  # src/deep/ matches
    (["**"], ["renders/**"], {"renders/a.tmp", "renders/deep/b.tmp"}),
    (["**"], ["\\#x"], {"#x"}),  # an escaped '#' is a name, not a comment
    # include: a file travels when a pattern matches it or a folder above it
    (["scenes", "farm.toml"], [], SENT - {"scenes/shot.blend", "scenes/tex/blue.png", "farm.toml"}),
    (["*.blend"], [], SENT - {"scenes/shot.blend", "x.blend"}),
    (["/*.blend", "docs/"], ["a/"], SENT - {"x.blend", "docs/c.md"}),
])
def test_the_walk_and_left_out_agree_on_gitignore_patterns(tmp_path, include, exclude, left_out):
    for rel in TREE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rules = AssetRules(tuple(include), tuple(exclude), "output")
    sent = set(list_assets(tmp_path, rules))
    assert sent == SENT - left_out
    assert {rel for rel in TREE if rules.left_out(rel) is None} == sent
    for rel in left_out:  # each named by the pattern that leaves it out, or the include list
        kind, why = rules.left_out(rel)
        assert kind in ("exclude", "include") and any(repr(p) in why for p in (*exclude, *include)), why


def test_left_out_names_the_pattern_that_matched_a_folder_above(tmp_path):
    rules = AssetRules(exclude=("*.tmp", "src"))
    assert rules.left_out("src/deep/x.py") == (
        "exclude", "[assets] exclude leaves it out of the files sent to the agents (pattern 'src')")
    assert rules.left_out("renders/a.tmp")[1].endswith("(pattern '*.tmp')")
    assert rules.left_out("srcs/x.py") is None and rules.left_out("lib/source/x.py") is None


@pytest.mark.parametrize(("key", "pattern", "why"), [
    ("exclude", "!keep.tmp", "'!' negation is not supported"),
    ("exclude", "#notes", "is a comment in .gitignore's rules and matches nothing"),
    ("include", "tex/[ab", "matches nothing"),
    ("exclude", "", "matches nothing"),
    ("exclude", "/", "matches nothing"),
    ("exclude", "tex\\", "is not a valid pattern"),
    ("include", "[z-a].png", "is not a valid pattern"),
    ("exclude", "tmp ", "ends in white space"),
])
def test_a_pattern_that_cannot_apply_is_refused_at_load_with_line_and_key(tmp_path, key, pattern, why):
    write_project(tmp_path, "synthetic", extra=f'[assets]\n{key} = ["*.blend", {json.dumps(pattern)}]\n')
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    assert (err.value.key, err.value.line) == (f"[assets] {key}", 5), err.value
    assert f"{pattern!r}" in err.value.message and why in err.value.message, err.value.message


def test_a_bad_pattern_from_a_controller_is_refused_naming_the_field(tmp_path):
    wire = load_project(write_project(tmp_path, "synthetic")).to_wire()
    with pytest.raises(ProtocolError, match=r"project field 'exclude': '!x': '!' negation is not supported"):
        Project.from_wire({**wire, "exclude": ["!x"]})


@pytest.mark.parametrize("pattern", ["data", "data/"])
def test_a_file_under_a_folder_excluded_by_its_name_stops_farm_submit_at_load(tmp_path, pattern):
    """``exclude = ["data"]`` leaves out data/ whole (before, only a file named data): the style's
    shapefile there is refused at load by name, before an agent renders (and fails on) a job."""
    project = tmp_path / "world_map"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("output", ".farm"))
    with (project / "farm.toml").open("a") as toml:
        toml.write(f'\n[assets]\nexclude = ["{pattern}"]\n')
    done = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(project)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{project / 'farm.toml'}:8: [maptiles] style: cannot use style 'world.xml'" in done.stderr
    assert ("is data/naturalearth_lowres.shp in the project, but [assets] exclude leaves it out of the "
            f"files sent to the agents (pattern {pattern!r})") in done.stderr, done.stderr
    assert not (project / "output").exists()


def test_agents_get_exactly_what_the_walk_lists(controller, agents, synthetic):
    """A name without a slash leaves out that name at any depth: the agents never get in/job-0000001.txt
    (job 1 finds nothing to read and outputs nothing), nor anything in a folder named scratch."""
    project = synthetic(jobs=3, inputs="in", extra='[assets]\nexclude = ["job-0000001.txt", "scratch"]\n')
    (project / "in" / "scratch").mkdir(parents=True)
    (project / "in" / "scratch" / "notes.txt").write_text("never sent")
    for i in range(3):
        (project / "in" / f"job-{i:07d}.txt").write_text(f"input {i}")
    loaded = load_project(project)
    assert list(loaded.assets()) == ["farm.toml", "in/job-0000000.txt", "in/job-0000002.txt"]
    agents(controller.url, 1)
    assert submit(controller.url, loaded).ok
    outputs = [(project / "output" / f"job-{i:07d}.txt").read_text() for i in range(3)]
    assert outputs == ["input 0", "", "input 2"]


def test_an_upload_sends_farm_toml_whatever_the_patterns(controller, agents, synthetic):
    """An include list of what the jobs read leaves farm.toml out of the assets: the upload sent it
    no more, and the controller answered "no farm.toml in <folder>" for a folder that has one."""
    project = synthetic(jobs=2, inputs="in", extra='[assets]\ninclude = ["in"]\n')
    (project / "in").mkdir()
    for i in range(2):
        (project / "in" / f"job-{i:07d}.txt").write_text(f"input {i}")
    loaded = load_project(project)
    assert list(loaded.assets()) == ["in/job-0000000.txt", "in/job-0000001.txt"]
    agents(controller.url, 1)
    summary = submit(controller.url, loaded, upload=True)
    assert summary.ok, summary
    assert [(project / "output" / f"job-{i:07d}.txt").read_text() for i in range(2)] == ["input 0", "input 1"]
