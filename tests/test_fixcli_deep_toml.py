"""A farm.toml nested too deeply is one clear error naming the file, in every reader (real CLI,
real controller intake), never a RecursionError traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from farm.controller.intake import prepare
from farm.embedded import peek_media_type
from farm.errors import ProjectError
from farm.project import load_project
from farm.tomltext import MAX_DEPTH

HEAD = '[project]\nname = "deep"\nmedia_type = "synthetic"\n[synthetic]\n'
DEEP = {  # farm.toml body: the line the error names
    "arrays": ("x = " + "[" * 500 + "]" * 500 + "\n", 5),  # the case found: tomllib recursed out
    "inline tables": ("x = " + "{a = " * 400 + "1" + "}" * 400 + "\n", 5),
    "arrays over the limit": ("x = " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", 5),  # parses
    "arrays over lines": ("x = [\n" + "[\n" * 600 + "]\n" * 600 + "]\n", 5 + MAX_DEPTH),  # the 33rd [
}


def _project(tmp_path, body: str, head: str = HEAD):
    folder = tmp_path / "p"
    folder.mkdir(exist_ok=True)
    (folder / "farm.toml").write_text(head + body)
    return folder


@pytest.mark.parametrize(("body", "line"), DEEP.values(), ids=DEEP.keys())
def test_load_project_and_the_controller_intake_refuse_deep_nesting_naming_the_file(tmp_path, body, line):
    folder = _project(tmp_path, body)
    with pytest.raises(ProjectError, match=rf"farm\.toml:{line}: .*nest more than {MAX_DEPTH} levels"):
        load_project(folder)
    with pytest.raises(ProjectError, match=f"farm.toml:{line}: "):
        prepare(str(folder), None, uploaded=True, hashes=None)
    assert peek_media_type(folder) is None  # the embedded farm's early look: no crash, load_project says why


def test_deep_table_headers_are_refused_too(tmp_path):
    folder = _project(tmp_path, "[synthetic." + ".".join(["t"] * 40) + "]\nx = 1\n")
    with pytest.raises(ProjectError, match=r"farm\.toml.*synthetic\.t\.t \.\.\.: tables and arrays nest"):
        load_project(folder)


def test_nesting_within_the_limit_still_loads_as_far_as_the_media_type_cares(tmp_path):
    folder = _project(tmp_path, "x = " + "[" * 20 + "]" * 20 + "\n")
    with pytest.raises(ProjectError, match=r"\[synthetic\] x"):  # the media type's own answer: unknown key
        load_project(folder)


@pytest.mark.parametrize("controller", [False, True], ids=["embedded", "controller"])
def test_farm_submit_json_prints_one_invalid_object_naming_the_file(tmp_path, controller):
    folder = _project(tmp_path, DEEP["arrays"][0])
    args = ["--controller", "tcp://127.0.0.1:47997"] if controller else []
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(folder), "--json", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["state"] == "invalid" and f"{folder / 'farm.toml'}:5: " in report["error"]
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) < 5
