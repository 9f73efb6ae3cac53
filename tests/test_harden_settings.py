"""nan and inf are refused wherever a number is read from a project or from renderer facts,
naming the file, the line and the key (nan slips past any min/max: every comparison is false)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from farm.errors import ProjectError
from farm.project import load_project
from farm.settings import SettingsReader

# media type, its table's other keys (assets they need are written by the test), [table] key
CASES = [
    ("synthetic", "", "synthetic", "sleep"),
    ("synthetic", "", "jobs", "timeout"),
    ("synthetic", "", "jobs", "max_output_mib"),
    ("synthetic", "", "jobs", "target"),
    ("audio", 'input = "in.wav"', "audio", "segment"),
    ("audio", 'input = "in.wav"', "audio", "lead_in"),
    ("audio", 'input = "in.wav"', "audio", "lead_out"),
    ("frames", 'scene = "scene.py"\nframes = "1-4"', "frames.video", "fps"),
    ("maptiles", 'style = "style.xml"', "maptiles", "tile_size"),
    ("maptiles", 'style = "style.xml"', "maptiles", "buffer"),
    ("mandelbrot", "", "mandelbrot", "zoom"),  # the example third-party plugin
]
NOT_FINITE = ["nan", "+nan", "-nan", "inf", "+inf", "-inf"]


def _project(folder: Path, media: str, table: str, where: str, key: str, value: str) -> tuple[Path, int]:
    """A farm.toml with ``where.key = value``; returns its folder and the line of that key."""
    folder.mkdir()
    for asset in ("in.wav", "scene.py", "style.xml"):
        (folder / asset).write_text("")
    lines = ['[project]', 'name = "p"', f'media_type = "{media}"', f"[{media}]", table]
    if where != media:
        lines.append(f"[{where}]")
    lines.append(f"{key} = {value}")
    (folder / "farm.toml").write_text("\n".join(lines) + "\n")
    return folder, len("\n".join(lines).splitlines())


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(("media", "table", "where", "key"), CASES)
def test_nan_and_inf_are_refused_with_file_line_and_key(tmp_path, media, table, where, key, value):
    folder, line = _project(tmp_path / "p", media, table, where, key, value)
    with pytest.raises(ProjectError) as refused:
        load_project(folder, renderer_checks=False)
    text = str(refused.value)
    assert f"farm.toml:{line}:" in text and f"[{where}] {key}" in text, text
    if key not in ("tile_size", "buffer"):  # integers: "expected an integer" says it already
        assert "finite" in text or "at least" in text, text  # -inf below a min: either says it


FLOATS = [case for case in CASES if case[3] not in ("tile_size", "buffer")]


@pytest.mark.parametrize(("media", "table", "where", "key"), FLOATS)
def test_finite_numbers_still_pass_the_reader(tmp_path, media, table, where, key):
    """The check is on nan and inf alone: the same key with a usable number gets past it."""
    value = {"target": "5.5", "max_output_mib": "10.5", "fps": "23.976"}.get(key, "1.5")
    folder, _ = _project(tmp_path / "p", media, table, where, key, value)
    try:
        load_project(folder, renderer_checks=False)
    except ProjectError as exc:  # a later check (an empty asset) may refuse, never this key
        assert f"{where}] {key}" not in str(exc), exc


@pytest.mark.parametrize("center", ["[nan, 0.0]", "[0.0, inf]", "[-inf, 1]"])
@pytest.mark.parametrize(("media", "where", "key", "table"), [
    ("maptiles", "maptiles", "bbox", 'style = "style.xml"\nbbox = {value}'),
    ("mandelbrot", "mandelbrot", "center", "center = {value}"),
    ("synthetic", "synthetic", "units_per_job", "units_per_job = {value}"),
])
def test_lists_of_numbers_read_by_plugins_refuse_them_too(tmp_path, media, where, key, table, center):
    """A list is read with `get`, past the reader's number check: each plugin checks its own."""
    folder, _ = _project(tmp_path / "p", media, table.format(value=center), where, "__unused", "1")
    (folder / "farm.toml").write_text((folder / "farm.toml").read_text().replace("__unused = 1\n", ""))
    with pytest.raises(ProjectError) as refused:
        load_project(folder, renderer_checks=False)
    assert f"[{where}] {key}" in str(refused.value) and "farm.toml:" in str(refused.value), refused.value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_renderer_facts_refuse_nan_and_inf(tmp_path, value):
    """Facts come from a remote submitter (msgpack carries nan and inf): the same reader refuses them."""
    reader = SettingsReader({}, table="audio", file=tmp_path / "farm.toml", text="", root=tmp_path,
                            renderer_checks=False, facts={"gain": value, "rate": value})
    facts = reader.facts_reader()
    with pytest.raises(ProjectError) as number:
        facts.number("gain", min=-100, max=100)
    assert "[audio.facts] gain" in str(number.value) and "finite" in str(number.value)
    with pytest.raises(ProjectError) as integer:
        facts.integer("rate", min=1)
    assert "[audio.facts] rate" in str(integer.value)


def test_the_cli_says_so_in_one_line(tmp_path):
    folder, line = _project(tmp_path / "p", "synthetic", "", "jobs", "timeout", "inf")
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert f"farm.toml:{line}: [jobs] timeout: expected a finite number, got inf" in done.stderr
    assert "Traceback" not in done.stderr
