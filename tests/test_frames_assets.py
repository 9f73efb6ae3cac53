"""A scene that reads a project file the project's ``[assets]`` rules keep from the agents
(``exclude``, ``include``, a name starting with '.', the output folder) is refused at load, by
name, with the pattern; where only the agent can tell (a path a script computes), the job's
error names the file by its place in the project, not by the agent's copy.

Real Blender builds the scenes (tests/cases/frames-scene-files/make_scenes.py) and renders
them on real agents.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from test_frames import blender, write_project  # noqa: F401
from test_frames_cases import FARM, blue_png, centre_rgb, project_copy, scenes  # noqa: F401

from farm.assetrules import AssetRules
from farm.embedded import submit_embedded
from farm.errors import ProjectError
from farm.project import list_assets, load_project


def with_assets(root: Path, table: str) -> Path:
    """``root``'s farm.toml with an ``[assets]`` table added."""
    toml = root / "farm.toml"
    toml.write_text(toml.read_text() + "\n[assets]\n" + textwrap.dedent(table))
    return root


def refused(root: Path) -> str:
    with pytest.raises(ProjectError) as raised:
        load_project(root)
    assert raised.value.key == "[frames] scene", raised.value
    return raised.value.message


# -- a .blend -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["tex/**", "tex/*", "tex/blue.png", "**/*.png", "tex", "tex/", "*.png"])
def test_a_texture_exclude_leaves_out_is_refused_at_load_naming_file_block_and_pattern(
        scenes, tmp_path, pattern):  # noqa: F811
    root = with_assets(project_copy(scenes, "inside", tmp_path), f"exclude = [{pattern!r}]\n")
    message = refused(root)
    assert ("image 'blue.png' reads '//tex/blue.png', which is tex/blue.png in the project, but [assets] "
            f"exclude leaves it out of the files sent to the agents (pattern {pattern!r})") in message
    assert "To fix: remove the pattern from [assets] exclude in farm.toml, or the reference" in message
    assert str(tmp_path) not in message  # named as the user knows it


@pytest.mark.slow
def test_a_linked_library_exclude_leaves_out_is_refused(scenes, tmp_path):  # noqa: F811
    message = refused(with_assets(project_copy(scenes, "linked", tmp_path), 'exclude = ["lib/*.blend"]\n'))
    assert "linked library 'lib.blend' reads '//lib/lib.blend', which is lib/lib.blend in the" in message
    assert "(pattern 'lib/*.blend')" in message
    assert "image 'blue.png' in lib/lib.blend" not in message  # its texture still travels


@pytest.mark.slow
def test_a_texture_no_include_pattern_matches_is_refused(scenes, tmp_path):  # noqa: F811
    root = with_assets(project_copy(scenes, "inside", tmp_path), 'include = ["*.blend", "farm.toml"]\n')
    message = refused(root)
    assert ("which is tex/blue.png in the project, but no [assets] include pattern matches it "
            "('*.blend', 'farm.toml')") in message
    assert "add the files to [assets] include" in message


@pytest.mark.slow
def test_an_excluded_scene_file_is_refused(scenes, tmp_path):  # noqa: F811
    message = refused(with_assets(project_copy(scenes, "inside", tmp_path), 'exclude = ["*.blend"]\n'))
    assert "'shot.blend': [assets] exclude leaves it out" in message
    assert "(pattern '*.blend')" in message


@pytest.mark.slow
def test_on_a_controller_the_left_out_texture_is_named_as_excluded_not_missing(scenes, tmp_path):  # noqa: F811
    """A remote controller loads the uploaded copy, which lacks the file: it says why."""
    root = with_assets(project_copy(scenes, "inside", tmp_path), 'exclude = ["tex/**"]\n')
    (root / "tex" / "blue.png").unlink()
    with pytest.raises(ProjectError) as raised:
        load_project(root, renderer_checks=False)
    assert "[assets] exclude leaves it out" in raised.value.message
    assert "does not exist" not in raised.value.message


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_left_out_texture_stops_farm_submit_before_any_render(scenes, tmp_path):  # noqa: F811
    root = with_assets(project_copy(scenes, "inside", tmp_path), 'exclude = ["tex/**"]\n')
    done = subprocess.run([*FARM, "submit", str(root), "--agents", "1"], capture_output=True, text=True,
                          timeout=200)
    assert done.returncode == 1
    assert "farm.toml:6: [frames] scene: shot.blend reads files the agents will not have" in done.stderr
    assert "(pattern 'tex/**')" in done.stderr and "farm-agent" not in done.stderr, done.stderr
    assert not (root / "output").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_patterns_that_leave_the_texture_in_render_it_on_an_agent(scenes, tmp_path):  # noqa: F811
    """``/*.png`` matches top-level files only (anchored, ``*`` stops at '/'): tex/blue.png travels, blue."""
    root = with_assets(project_copy(scenes, "inside", tmp_path),
                       'exclude = ["/*.png", "notes/**", "tex/*.txt"]\n')
    summary = submit_embedded(root, agents=1)
    assert summary.ok, summary.failures or summary.error
    r, g, b = centre_rgb(root / "output" / "frames" / "frame_000001.png")
    assert b > 120 and b > r + 60 and b > g + 40, (r, g, b)


# -- a scene script -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        'bpy.data.images.load(os.path.join(os.path.dirname(__file__), "tex", "blue.png"))',
        'HERE = os.path.dirname(os.path.abspath(__file__))\n'
        'bpy.data.images.load(os.path.join(HERE, "tex/blue.png"))',
        'bpy.data.images.load(str(Path(__file__).parent / "tex" / "blue.png"), check_existing=False)',
        'bpy.data.images.load(filepath=str(pathlib.Path(__file__).resolve().parent.joinpath("tex", '
        '"blue.png")))',
        'bpy.data.images.load(os.fspath(Path(__file__).with_name("tex") / "blue.png"))',
    ],
)
def test_a_script_path_built_from_its_folder_that_exclude_leaves_out_is_refused(tmp_path, code):
    imports = "\nimport pathlib\nfrom pathlib import Path\n"
    root = write_project(tmp_path / "p", scene_extra=imports + code + "\n")
    (root / "tex").mkdir()
    (root / "tex" / "blue.png").write_bytes(blue_png())
    with_assets(root, 'exclude = ["tex/**"]\n')
    line = (root / "scene.py").read_text().splitlines().index(code.splitlines()[-1]) + 1
    message = refused(root)
    assert (f"scene.py:{line}: bpy.data.images.load() reads tex/blue.png in the project, but [assets] "
            "exclude leaves it out of the files sent to the agents (pattern 'tex/**')") in message, message
    assert "remove the pattern from [assets] exclude" in message


def test_a_script_path_into_a_hidden_folder_or_out_of_the_project_is_refused(tmp_path):
    code = """
        bpy.data.images.load(os.path.join(os.path.dirname(__file__), ".tex", "blue.png"))
        bpy.data.images.load(os.path.join(os.path.dirname(__file__), "..", "shared", "blue.png"))
    """
    message = refused(write_project(tmp_path / "p", scene_extra=code))
    assert ("reads .tex/blue.png in the project, but farm never sends it to the agents: '.tex' starts "
            "with '.'") in message
    assert "reads ../shared/blue.png (from the script's folder), out of the project folder" in message


def test_a_script_path_the_text_cannot_pin_down_is_left_to_the_agent(tmp_path):
    """A name bound twice, or a part that is not a literal: only running the script tells."""
    code = """
        HERE = os.path.dirname(__file__)
        HERE = "/elsewhere"
        bpy.data.images.load(os.path.join(HERE, "tex", "blue.png"))
        bpy.data.images.load(os.path.join(os.path.dirname(__file__), os.environ.get("T", "tex"), "blue.png"))
    """
    root = with_assets(write_project(tmp_path / "p", scene_extra=code), 'exclude = ["tex/**"]\n')
    load_project(root)


# A path the text does not show (built by a call): only the agent can tell it is not there.
# (An image given a file path is read when it is drawn; bpy.data.images.load would raise at once.)
COMPUTED = """
    import os
    def texture():
        return os.path.join(os.path.dirname(__file__), "tex", "blue" + ".png")
    image = bpy.data.images.new("blue.png", 8, 8)
    image.source = "FILE"
    image.filepath = texture()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_computed_path_left_out_fails_on_the_agent_naming_the_project_file(blender, tmp_path):  # noqa: F811
    root = write_project(tmp_path / "p", frames="1", scene_extra=COMPUTED,
                         tail="\n[jobs]\nmax_attempts = 1\n")
    (root / "tex").mkdir()
    (root / "tex" / "blue.png").write_bytes(blue_png())
    with_assets(root, 'exclude = ["tex/**"]\n')
    summary = submit_embedded(root, agents=1)
    assert not summary.ok and summary.failed == 1
    first = summary.failures[0]["error"].splitlines()[0]
    assert ("image 'blue.png' reads tex/blue.png in the project, which does not exist on this agent "
            "(left out by farm.toml's [assets] include or exclude, or gone since load?)") in first, first
    assert "farm-agent" not in first and str(root) not in first  # not the agent's copy


# -- the rules are the sync's ------------------------------------------------------------------


TREE = ["farm.toml", "shot.blend", "a.png", "tex/blue.png", "tex/deep/c.exr", "tex/notes.txt",
        "lib/lib.blend", "lib/tex/blue.png", ".hidden/x.png", "tex/.dot.png", "output/old.png",
        "renders/final/f.png", "other/tex/x.png"]


@pytest.mark.parametrize(
    ("include", "exclude", "output"),
    [
        (["**"], [], "output"),
        (["**"], ["tex/**"], "output"),
        (["**"], ["tex/*"], "output"),
        (["**"], ["*.png"], "output"),
        (["**"], ["**/*.png", "lib"], "renders/final"),
        (["**"], ["tex/deep/**", "**/tex/**"], "output"),
        (["*.blend", "farm.toml", "tex/**"], ["tex/notes.txt"], "output"),
        (["**/*.png", "*"], ["lib/**/*.png"], "renders"),
        (["tex/*"], [], "output"),
    ],
)
def test_left_out_files_are_exactly_those_the_agents_are_not_sent(tmp_path, include, exclude, output):
    for rel in TREE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rules = AssetRules(tuple(include), tuple(exclude), output)
    sent = set(list_assets(tmp_path, rules))
    assert {rel for rel in TREE if rules.left_out(rel) is None} == sent
