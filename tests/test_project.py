"""Loading projects: every malformed project gives an error naming file, line and key."""

from __future__ import annotations

import pytest
from conftest import write_project

from farm.assetrules import AssetRules
from farm.errors import ProjectError, UnknownMediaType
from farm.project import list_assets, load_project


def test_a_valid_project_loads_with_defaults(tmp_path):
    root = write_project(tmp_path / "p", "synthetic", "jobs = 3")
    project = load_project(root)
    assert (project.name, project.media_type, project.output) == ("test", "synthetic", "output")
    assert project.settings["jobs"] == 3 and project.max_attempts == 3 and project.timeout is None


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "nowhere")
    with pytest.raises(ProjectError, match="no farm.toml"):
        load_project(tmp_path)
    (tmp_path / "farm.toml").write_text("")  # the file named instead of its folder
    with pytest.raises(ProjectError, match="farm.toml is a file: give the project's folder"):
        load_project(tmp_path / "farm.toml")


def test_bad_toml_names_the_line(tmp_path):
    (tmp_path / "farm.toml").write_text('[project]\nname = "x"\nmedia_type = \n')
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    assert info.value.line == 3 and "invalid TOML" in str(info.value) and "farm.toml:3" in str(info.value)


def test_unknown_media_type_lists_the_installed_ones(tmp_path):
    write_project(tmp_path, "sculpture")
    with pytest.raises(UnknownMediaType) as info:
        load_project(tmp_path)
    message = str(info.value)
    assert "unknown media type 'sculpture'" in message and "synthetic" in message
    assert "[project] media_type" in message and info.value.line == 3


def test_unknown_and_mistyped_keys_are_named_with_their_line(tmp_path):
    write_project(tmp_path, "synthetic", "jobs = 2\njbos = 3")
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    assert "[synthetic] jbos: unknown key" in str(info.value) and info.value.line == 7
    write_project(tmp_path, "synthetic", 'jobs = "many"')
    with pytest.raises(ProjectError, match=r"\[synthetic\] jobs: expected an integer, got 'many'"):
        load_project(tmp_path)
    write_project(tmp_path, "synthetic", "jobs = -1")
    with pytest.raises(ProjectError, match="must be at least 0"):
        load_project(tmp_path)


def test_unknown_table_and_missing_project_table(tmp_path):
    write_project(tmp_path, "synthetic", extra="[rendr]\nx = 1\n")
    with pytest.raises(ProjectError, match=r"\[rendr\]: unknown table"):
        load_project(tmp_path)
    (tmp_path / "farm.toml").write_text("[synthetic]\njobs = 1\n")
    with pytest.raises(ProjectError, match=r"missing \[project\] table"):
        load_project(tmp_path)


def test_output_folder_may_not_escape_the_project(tmp_path):
    write_project(tmp_path, "synthetic", extra='[output]\ndirectory = "../elsewhere"\n')
    with pytest.raises(ProjectError, match=r"\[output\] directory: path '../elsewhere' leads outside"):
        load_project(tmp_path)
    with pytest.raises(ProjectError, match="is absolute"):
        load_project(tmp_path, output="/tmp/out")


@pytest.mark.parametrize(("given", "why"), [("/tmp/out", "is absolute"), ("../out", "leads outside")])
def test_a_bad_output_option_is_named_as_the_option_not_as_farm_toml(tmp_path, given, why):
    """`farm submit --output /tmp/out` was reported as farm.toml's [output] directory, which the
    project may not even have."""
    write_project(tmp_path, "synthetic")
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path, output=given)
    assert info.value.key is None and "[output]" not in str(info.value), info.value
    assert str(info.value).startswith(f"--output {given!r}: path {given!r} {why}"), info.value


def test_jobs_table_overrides_timeout_and_attempts(tmp_path):
    write_project(tmp_path, "synthetic", extra="[jobs]\ntimeout = 2.5\nmax_attempts = 5\n")
    project = load_project(tmp_path)
    assert (project.timeout, project.max_attempts) == (2.5, 5)


def test_assets_skip_output_and_dot_folders_and_honour_globs(tmp_path):
    for name in ["a.shp", "data/b.dbf", "data/deep/c.txt", ".git/x", "output/tile.png", "notes.tmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    write_project(tmp_path, "synthetic", extra='[assets]\nexclude = ["*.tmp"]\n')
    assert list(load_project(tmp_path).assets()) == ["a.shp", "data/b.dbf", "data/deep/c.txt", "farm.toml"]
    assert list(list_assets(tmp_path, AssetRules(("data/**",)))) == ["data/b.dbf", "data/deep/c.txt"]
    assert list(list_assets(tmp_path, AssetRules(("**/*.dbf",)))) == ["data/b.dbf"]


def test_a_crashing_plugin_configure_is_reported_not_raised_raw(tmp_path, monkeypatch):
    from farm.plugins import get_media_type

    media = get_media_type("synthetic")
    monkeypatch.setattr(type(media), "configure", lambda self, s: 1 / 0)
    write_project(tmp_path, "synthetic")
    with pytest.raises(ProjectError, match="failed to read its settings: ZeroDivisionError"):
        load_project(tmp_path)


@pytest.mark.parametrize("folder, extra", [("output", ""), ("renders", '[output]\ndirectory = "renders"\n'),
                                           (".farm", "")])
def test_an_asset_in_the_output_or_state_folder_is_refused(tmp_path, folder, extra):
    # farm writes there (an audio input output/t.flac would be overwritten by the output t.flac)
    # and never sends it to the agents
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "t.flac").write_bytes(b"not read")
    (tmp_path / "farm.toml").write_text(
        f'[project]\nname = "p"\nmedia_type = "audio"\n{extra}[audio]\ninput = "{folder}/t.flac"\n')
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    assert f"'{folder}/t.flac' is in " in str(err.value) and "[audio] input" in str(err.value)
    assert err.value.line == 5 + extra.count("\n")  # the input line


def test_an_asset_in_a_folder_named_like_the_output_loads(tmp_path):
    (tmp_path / "output-scenes").mkdir()
    (tmp_path / "output-scenes" / "scene.py").write_text("import bpy\n")
    (tmp_path / "farm.toml").write_text(
        '[project]\nname = "p"\nmedia_type = "frames"\n[frames]\nscene = "output-scenes/scene.py"\nframes = "1"\n')
    assert load_project(tmp_path).settings["scene"] == "output-scenes/scene.py"


@pytest.mark.parametrize("assets, path, why", [
    ('exclude = ["raw/**"]', "raw/t.flac", "[assets] exclude leaves it out of the files sent to the agents "
                                          "(pattern 'raw/**'); remove the pattern"),
    ('include = ["*.toml"]', "raw/t.flac", "no [assets] include pattern matches it ('*.toml')"),
    ("", ".raw/t.flac", "'.raw' starts with '.'"),
])
def test_an_asset_the_agents_never_get_is_refused_naming_why(tmp_path, assets, path, why):
    # an audio input, a map style, a scene: any media type's file setting (SettingsReader.asset)
    (tmp_path / path).parent.mkdir()
    (tmp_path / path).write_bytes(b"not read")
    (tmp_path / "farm.toml").write_text(
        f'[project]\nname = "p"\nmedia_type = "audio"\n[assets]\n{assets}\n[audio]\ninput = "{path}"\n')
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    assert f"[audio] input: '{path}': " in str(err.value) and why in str(err.value)
    assert err.value.line == 7
