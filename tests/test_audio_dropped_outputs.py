"""A successful audio run removes the outputs an earlier run of the project wrote that it no
longer writes (a dropped format, another name), unless the user changed them since; it never
removes a file audio did not write, and one warning (a note of the run) names what went.

Real ffmpeg: 1 s of a tone in 0.5 s segments, rendered and collated in-process, then one real
embedded farm whose summary carries the warning as its note.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from audio_helpers import render_all, write_project
from farm_audio.dropped import RECORD

from farm.embedded import submit_embedded
from farm.project import STATE_DIR, load_project

#: files audio never wrote, some with names like its outputs: every run leaves them alone
OTHERS = {"notes.txt": b"mine", "t.wav": b"a wav I made", "other.mp3": b"another mp3", "t.opus.bak": b"copy"}
TONE = "0.5*sin(2*PI*440*t)"
#: loudnorm's linear mode needs over 3 s of audio whose loudness varies
SWELLS = "0.5*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*1.7*t))*gt(mod(t,0.9),0.25)"


def make_project(root: Path, outputs: str, name: str = "t", loudnorm: bool = False) -> Path:
    """1 s of a tone (3.5 s of swells with ``loudnorm``) in 0.5 s segments."""
    chain = 'filters = "loudnorm=I=-20:TP=-1:LRA=15"\n' if loudnorm else ""
    return write_project(root, f'segment = 0.5\nname = "{name}"\noutputs = {outputs}\n{chain}',
                         *((SWELLS, 3.5) if loudnorm else (TONE, 1)))


def run(root: Path, scratch: Path) -> list[str]:
    """One run of the project at ``root``, in-process; its outputs' names."""
    return sorted(p.name for p in render_all(load_project(root), scratch))


def files(output: Path) -> dict[str, bytes]:
    """The output folder's files (not the hidden scratch files), by name."""
    return {p.name: p.read_bytes() for p in output.iterdir() if p.is_file() and not p.name.startswith(".")}


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_dropped_format_and_the_earlier_analysis_are_removed_and_other_files_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path / "p", '["flac", "mp3", "opus"]', loudnorm=True)
    output = root / "output"
    assert run(root, tmp_path / "w1") == ["t.flac", "t.loudnorm.json", "t.mp3", "t.opus"]
    for name, data in OTHERS.items():
        (output / name).write_bytes(data)

    make_project(root, '["flac"]')  # mp3, opus and loudnorm dropped
    with caplog.at_level(logging.WARNING):
        assert run(root, tmp_path / "w2") == ["t.flac"]
    assert sorted(files(output)) == sorted(["t.flac", *OTHERS])
    assert {n: d for n, d in files(output).items() if n in OTHERS} == OTHERS
    assert notes(caplog) == ["t: removed t.loudnorm.json, t.mp3, t.opus: an earlier run of this project "
                             "wrote them, and this run does not (its outputs: t.flac)"]

    caplog.clear()  # the same outputs again: nothing to remove, nothing said
    with caplog.at_level(logging.WARNING):
        assert run(root, tmp_path / "w3") == ["t.flac"]
    assert notes(caplog) == []


def test_an_output_the_user_changed_since_stays_and_a_renamed_run_removes_the_old_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(tmp_path / "p", '["flac", "mp3"]')
    output = root / "output"
    assert run(root, tmp_path / "w1") == ["t.flac", "t.mp3"]
    (output / "t.mp3").write_bytes(b"my own edit")  # changed since: the user's now

    make_project(root, '["flac"]', name="u")  # another name: t.flac is no longer this run's
    with caplog.at_level(logging.WARNING):
        assert run(root, tmp_path / "w2") == ["u.flac"]
    assert sorted(files(output)) == ["t.mp3", "u.flac"]
    assert (output / "t.mp3").read_bytes() == b"my own edit"
    assert notes(caplog) == ["t: removed t.flac: an earlier run of this project wrote it, "
                             "and this run does not (its outputs: u.flac)"]


def test_an_earlier_output_replaced_by_another_file_of_the_same_size_stays(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '["flac", "mp3"]')
    output = root / "output"
    run(root, tmp_path / "w1")
    mp3 = output / "t.mp3"
    size = mp3.stat().st_size
    mp3.write_bytes(b"x" * size)  # same size, a later modification time: not what audio wrote
    os.utime(mp3, ns=(mp3.stat().st_atime_ns, mp3.stat().st_mtime_ns + 1_000_000_000))
    make_project(root, '["flac"]')
    run(root, tmp_path / "w2")
    assert mp3.read_bytes() == b"x" * size


@pytest.mark.slow  # two runs of a controller and an agent
@pytest.mark.timeout(300)
def test_embedded_farm_a_run_that_drops_a_format_removes_it_and_notes_it(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '["flac", "mp3", "opus"]')
    output = root / "output"
    first = submit_embedded(root, agents=1)
    assert first.ok, first.failures
    assert sorted(Path(p).name for p in first.outputs) == ["t.flac", "t.mp3", "t.opus"]
    assert (root / STATE_DIR / RECORD).is_file()

    make_project(root, '["flac"]')
    second = submit_embedded(root, agents=1)
    assert second.ok, second.failures
    assert [Path(p).name for p in second.outputs] == ["t.flac"]
    assert sorted(files(output)) == ["t.flac"]
    assert second.notes == ["t: removed t.mp3, t.opus: an earlier run of this project wrote "
                            "them, and this run does not (its outputs: t.flac)"], second.notes
