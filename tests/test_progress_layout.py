"""The rich bar on narrow terminals (80 columns): the bar keeps its width, the name and the
elapsed time are whole, and the stats go on a line of their own instead of being cut."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from farm.cli.progress import BAR_MIN, ProgressBar


def snapshot(project: str) -> dict:
    return {
        "project": project,
        "state": "running",
        "total": 344,
        "done": 294,
        "failed": 2,
        "reused": 0,
        "partial": 0.0,
        "stalled": "no agents connected yet",
        "units": {"name": "tiles", "done": 18645, "failed": 20, "partial": 0, "total": 21845},
    }


def last_frame(project: str, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True, file=io.StringIO())
    bar = ProgressBar(console=console)
    bar.update(snapshot(project), now=0.0)
    bar.close()
    text = console.export_text()
    return text[text.rindex(project[:8]) :].rstrip("\n").splitlines()  # the last frame drawn


@pytest.mark.parametrize("width", [80, 60])
def test_the_bar_keeps_its_width_and_the_stats_wrap_below_on_a_narrow_terminal(width):
    lines = last_frame("wm7", width)
    first = lines[0]
    assert first.startswith("wm7 ") and re.search(r" 85% 0:00:00$", first.rstrip()), lines
    assert len(re.findall("[━╸╺]", first)) >= 24, lines
    stats = " ".join(line.strip() for line in lines[1:])
    assert stats == (
        "tiles 18,645/21,845 · jobs 294/344 · -- tiles/s · ETA --:-- · 2 failed · "
        "waiting: no agents connected yet"
    ), lines
    assert all(len(line.rstrip()) <= width for line in lines) and "…" not in "".join(lines), lines


def test_a_wide_terminal_keeps_one_line():
    (line,) = last_frame("wm7", 200)
    assert (
        line.rstrip().endswith("2 failed · waiting: no agents connected yet") and " 85% 0:00:00 tiles" in line
    )


def test_a_long_project_name_is_shortened_before_the_bar_is():
    name = "a_project_with_a_very_long_name_indeed_" * 2
    lines = last_frame(name, 80)
    assert len(re.findall("[━╸╺]", lines[0])) >= BAR_MIN and "0:00:00" in lines[0], lines
    assert lines[0].startswith(name[:12]) and "…" in lines[0], lines


def test_the_count_and_the_percent_agree_on_jobs_part_way():
    """A turntable run 15% through its first chunks: 'frames 7/48', not 'frames 0/48' beside 15%."""
    update = {
        "project": "turntable",
        "state": "running",
        "total": 4,
        "done": 0,
        "failed": 0,
        "reused": 0,
        "partial": 0.6,
        "stalled": None,
        "units": {"name": "frames", "done": 0, "failed": 0, "partial": 7.2, "total": 48},
    }
    console = Console(width=200, record=True, force_terminal=True, file=io.StringIO())
    bar = ProgressBar(console=console)
    bar.update(update, now=0.0)
    bar.close()
    text = console.export_text()
    assert " 15% " in text and "frames 7/48 · jobs 0/4" in text, text
