"""A filter chain that turns sound into silence or non-finite samples is refused at load.

`volume=inf` gave a silent wav with exit 0 (as PCM, infinite samples come out as 0). Two
guards, both at load with real ffmpeg: a number option that is not finite (inf, -infinity,
nan, 1e999, also in '|' lists and with a unit) is refused by name; and the chain's output
of the check's test tone must be finite, which catches what no literal shows (`volume=1/0`,
an expression). All-silent output is not refused: fades, delays and gates silence the
check's short tone on purpose, and `volume=0` is silence asked for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from farm_audio import ffmpeg

from farm.errors import ProjectError
from farm.project import load_project


def audio_project(root: Path, filters: str) -> Path:
    """A 4 s tone as in.wav, one-second segments, 16-bit wav out, through ``filters``."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "in.wav").exists():
        ffmpeg.run(["-f", "lavfi", "-i", "sine=f=440:d=4", str(root / "in.wav")], timeout=120)
    (root / "farm.toml").write_text(
        '[project]\nname = "tone"\nmedia_type = "audio"\n\n'
        f'[audio]\ninput = "in.wav"\nfilters = "{filters}"\nsegment = 1\noutputs = ["wav:16"]\n')
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Chain verdicts are remembered in the cache: each test checks afresh."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize(("filters", "says"), [
    ("volume=inf", "volume: a positional option is 'inf', not a finite number"),
    ("volume=-inf", "not a finite number"),
    ("volume=volume=Infinity", "option 'volume' is 'Infinity', not a finite number"),
    ("volume=1e999", "not a finite number"),
    ("volume=1e999dB", "not a finite number"),
    ("volume=-infdB", "not a finite number"),
    ("highpass=f=inf", "highpass: option 'f'"),
    ("lowpass=f=500,volume=NaN", "volume: a positional option is 'NaN'"),
    ("aecho=0.8:0.9:1000|inf:0.3|0.2", "aecho: a positional option is '1000|inf'"),
    ("volume=1/0", "infinite or not a number"),  # no literal to see: the test tone tells
    ("volume='pow(10,400)'", "infinite or not a number"),
    ("aeval=exprs='val(ch)/0'", "infinite or not a number"),
])
def test_a_chain_that_cannot_make_finite_sound_is_refused_at_load(tmp_path, filters, says):
    with pytest.raises(ProjectError) as caught:
        load_project(audio_project(tmp_path / "p", filters))
    assert "filters" in str(caught.value) and says in str(caught.value), str(caught.value)


@pytest.mark.parametrize("filters", [
    "volume=2", "volume=-6dB", "highpass=f=200,lowpass=f=8000", "volume=0.5:precision=double",
    "aecho=0.8:0.9:100|200:0.3|0.2",
    "volume=0",  # silence asked for is not refused: nor a fade-in that silences the check's start
    "afade=t=in:st=0.2:d=1,adelay=500|500",
])
def test_finite_chains_still_load(tmp_path, filters):
    load_project(audio_project(tmp_path / "p", filters))


@pytest.mark.timeout(300)
def test_farm_submit_with_volume_inf_fails_with_the_reason_and_writes_nothing(tmp_path):
    root = audio_project(tmp_path / "p", "volume=inf")
    proc = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(root)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0  # before the fix: 0, and a silent tone.wav
    assert "farm.toml:7" in proc.stderr and "not a finite number" in proc.stderr, proc.stderr
    assert not list((root / "output").glob("*.wav")) if (root / "output").exists() else True
