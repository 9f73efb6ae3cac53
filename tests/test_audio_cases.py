"""The audio case folders as tests, through a real `farm submit` and the real ffmpeg, plus more
inputs of the same kinds: chains that remember across joins, and loudnorm on audio it cannot take.

- ``tests/cases/audio-stateful-filters``: adeclick, afftdn, speechnorm in 0.5 s segments
  differed from a whole-file run near the joins, exit 0. Now the split check at load sends
  such chains to one whole-file job, says why, and the output equals one ffmpeg run.
- ``tests/cases/audio-loudnorm-silent-and-hot``: silence and a +6.25 LUFS square wave got
  ffmpeg's range error about ``anullsrc`` and ``measured_I``; now a message about the input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from farm_audio import ffmpeg
from farm_audio.render import whole_file_filter

from farm.errors import ProjectError, RenderError
from farm.project import load_project
from farm.testing import run_local

CASES = Path(__file__).parent / "cases"
STATEFUL = ("adeclick_", "afftdn_nr_20_", "speechnorm_e_6_r_0_0")


def case_copy(tmp_path: Path, name: str) -> Path:
    """A writable copy of a case folder, with its sources made by its own make_source.sh."""
    dest = tmp_path / name
    shutil.copytree(CASES / name, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.suffix == ".sh" else 0o644)
    subprocess.run(["bash", str(dest / "make_source.sh")], check=True, timeout=120)
    return dest


def submit(project: Path) -> subprocess.CompletedProcess[str]:
    """``farm submit`` on one local agent, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "farm", "submit", str(project), "-n", "1"],
                          capture_output=True, text=True, timeout=300, cwd=project, env=os.environ.copy())


def pcm(path: Path) -> bytes:
    return ffmpeg.run(["-i", str(path), "-f", "s16le", "-"]).stdout


def whole_run(root: Path, target: Path) -> Path:
    """The reference: one ffmpeg over the whole input with the chain farm runs."""
    s = load_project(root).settings
    ffmpeg.run(["-y", "-i", str(root / s["input"]), "-af", whole_file_filter(s), "-c:a", "pcm_s16le",
                str(target)])
    return target


@pytest.fixture(scope="module")
def stateful(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return case_copy(tmp_path_factory.mktemp("cases"), "audio-stateful-filters")


@pytest.mark.parametrize("case", STATEFUL)
def test_stateful_case_runs_whole_file_and_equals_one_ffmpeg_run(
    stateful: Path, case: str, tmp_path: Path
) -> None:
    root = stateful / case
    done = submit(root)
    assert done.returncode == 0, done.stderr
    settings = load_project(root).settings
    name = settings["filters"].split("=")[0]
    assert f"'{name}" in done.stderr and "does not split into segments" in done.stderr
    assert "running the whole file as one job" in done.stderr
    assert settings["segment"] == settings["samples"] and settings["lead_in"] == 0  # one job
    assert pcm(root / "output" / "src.wav") == pcm(whole_run(root, tmp_path / "ref.wav"))


def write_chain(root: Path, chain: str, segment: float = 0.5, extra: str = "") -> Path:
    (root / "farm.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "chain"
        media_type = "audio"

        [audio]
        input = "src.wav"
        filters = "{chain}"
        segment = {segment}
        outputs = ["wav:16"]
        {extra}"""))
    return root


# dynaudnorm (listed, with look-ahead) and filters nobody listed: LFOs that count from the
# stream's start, frame-wise gain, an adaptive bass boost, a spectral dialogue enhancer
NOT_SPLITTING = [
    "dynaudnorm",
    "dynaudnorm=f=100:g=5",
    "flanger",
    "apulsator",
    "chorus=0.5:0.9:50:0.4:0.25:2",
    "volume='0.5+0.5*sin(t)':eval=frame",
    "asubboost",
    "dialoguenhance",
    "highpass=f=100,adeclick,volume=0.8",
]


@pytest.mark.parametrize("chain", NOT_SPLITTING)
def test_chains_with_memory_across_joins_run_whole_and_equal_one_run(
    stateful: Path, tmp_path: Path, chain: str
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(stateful / "src.wav", root / "src.wav")
    run = run_local(write_chain(root, chain))
    s = run.project.settings
    assert "does not split into segments" in s["whole_file"], s["whole_file"]
    assert len(run.jobs) == 1 and s["segment"] == s["samples"] and s["lead_in"] == 0
    assert pcm(run.outputs[0]) == pcm(whole_run(root, tmp_path / "ref.wav"))


SPLITTING = [
    "volume=0.5",
    "highpass=f=200",
    "highpass=f=80,lowpass=f=3000,volume=-3dB",
    "aecho=0.8:0.7:200:0.3",
    "acompressor=threshold=0.1:ratio=4",
    "afade=t=in:d=1",
]


@pytest.mark.parametrize("chain", SPLITTING)
def test_chains_that_split_still_split_and_equal_one_run(stateful: Path, tmp_path: Path, chain: str) -> None:
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(stateful / "src.wav", root / "src.wav")
    run = run_local(write_chain(root, chain))
    s = run.project.settings
    assert s["whole_file"] == ""
    segments = [j for j in run.jobs if j.key.startswith("segment-")]
    assert len(segments) == 8  # 4 s in 0.5 s segments
    measured = run.results.get("loudnorm-analysis")
    ref = tmp_path / "ref.wav"
    ffmpeg.run(["-y", "-i", str(root / "src.wav"), "-af", whole_file_filter(s, measured), "-c:a", "pcm_s16le",
                str(ref)])
    assert pcm(run.outputs[0]) == pcm(ref)


def test_a_lead_in_long_enough_makes_a_compressor_split_again(stateful: Path, tmp_path: Path) -> None:
    """The verdict follows the lead-in: none is too short for a slow compressor, the default is enough."""
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(stateful / "src.wav", root / "src.wav")
    chain = "acompressor=threshold=0.05:ratio=6:release=400"
    short = load_project(write_chain(root, chain, extra="lead_in = 0")).settings
    assert "lead-in 0 s" in short["whole_file"]
    assert load_project(write_chain(root, chain)).settings["whole_file"] == ""


def test_loudnorm_on_audio_with_no_loudness_range_suggests_the_same_constant_gain(
    stateful: Path, tmp_path: Path
) -> None:
    """loudnorm reads a measured range of 0 LU as missing and never runs linear: say so, and give the gain."""
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(stateful / "src.wav", root / "src.wav")
    with pytest.raises(RenderError) as caught:
        run_local(write_chain(root, "loudnorm=I=-20"))
    assert "loudness range of 0 LU" in str(caught.value)
    gain = str(caught.value).split("volume=")[1].split("dB")[0]
    run = run_local(write_chain(root, f"volume={gain}dB"))
    assert abs(loudness(run.outputs[0]) - -20) < 0.3


def test_the_verdict_is_cached_per_chain(stateful: Path, tmp_path: Path) -> None:
    from farm_audio import splitcheck

    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(stateful / "src.wav", root / "src.wav")
    write_chain(root, "aphaser=speed=0.7")
    load_project(root)
    before = dict(splitcheck._cache)
    load_project(root)
    assert dict(splitcheck._cache) == before and any("aphaser" in key[1] for key in before)


@pytest.fixture(scope="module")
def loudnorm_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return case_copy(tmp_path_factory.mktemp("cases"), "audio-loudnorm-silent-and-hot")


def test_silent_input_to_loudnorm_says_the_input_is_silent(loudnorm_case: Path) -> None:
    done = submit(loudnorm_case / "silent")
    assert done.returncode != 0
    assert "the input is silent" in done.stderr
    assert "anullsrc" not in done.stderr and "measured_I" not in done.stderr


def loudness(path: Path) -> float:
    """Integrated loudness in LUFS (ffmpeg's ebur128)."""
    text = ffmpeg.run(["-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"], quiet=False).stderr
    return float(text.decode().rsplit("I:", 1)[1].split("LUFS")[0])


def suggested(message: str) -> str:
    return message.split('filters = "')[1].split('"')[0]


def test_hot_input_to_loudnorm_says_how_loud_and_what_fixes_it(loudnorm_case: Path) -> None:
    root = loudnorm_case / "hotter"
    done = submit(root)
    assert done.returncode != 0
    assert "the input measures +6.25 LUFS" in done.stderr
    assert "anullsrc" not in done.stderr and "measured_I" not in done.stderr
    # a square wave of constant level: no loudness range, so the fix is loudnorm's own constant gain
    chain = suggested(done.stderr)
    assert chain.startswith("volume=-22.25dB"), chain
    text = (root / "farm.toml").read_text().replace('"loudnorm=I=-16:TP=-1.5:LRA=11"', f'"{chain}"')
    (root / "farm.toml").write_text(text)
    again = submit(root)
    assert again.returncode == 0, again.stderr
    assert abs(loudness(root / "output" / "src.wav") - -16) < 0.3


def test_hot_input_with_a_loudness_range_is_lowered_before_loudnorm(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    square = "if(lt(mod(t*4000\\,1)\\,0.5)\\,1\\,-1)*if(lt(t\\,4)\\,1\\,0.8)"
    ffmpeg.run(["-f", "lavfi", "-i", f"aevalsrc={square}:s=48000:d=8", "-c:a", "pcm_s16le",
                str(root / "src.wav")])
    write_chain(root, "loudnorm=I=-16:TP=-1.5:LRA=11", segment=1)
    with pytest.raises(RenderError) as caught:
        run_local(root)
    assert "the input measures +" in str(caught.value) and "Lower it before loudnorm" in str(caught.value)
    chain = suggested(str(caught.value))
    assert chain.startswith("volume=-") and chain.endswith(",loudnorm=I=-16:TP=-1.5:LRA=11")
    run = run_local(write_chain(root, chain, segment=1))
    assert abs(loudness(run.outputs[0]) - -16) < 1


@pytest.mark.parametrize(
    ("make", "chain", "words"),
    [
        ("sine=f=440:d=4,volume=-90dB", "loudnorm", "the input is silent"),  # under loudnorm's -70 LUFS gate
        ("sine=f=440:d=4", "volume=40dB,loudnorm",
         "reaching loudnorm (the input after 'volume=40dB') measures +"),
        ("anullsrc=r=48000:cl=stereo:d=4", "highpass=f=100,loudnorm=I=-23", "is silent"),
    ],
)
def test_loudnorm_on_audio_it_cannot_measure_names_the_audio(
    tmp_path: Path, make: str, chain: str, words: str
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    ffmpeg.run(["-f", "lavfi", "-i", make, "-c:a", "pcm_s16le", str(root / "src.wav")])
    write_chain(root, chain, segment=1)
    with pytest.raises(RenderError) as caught:
        run_local(root)
    assert words in str(caught.value)
    assert "measured_I" not in str(caught.value) and "anullsrc" not in str(caught.value)


@pytest.mark.parametrize(("chain", "option", "filt"), [
    ("volume=bogus=1", "bogus", "volume"),
    ("highpass=f=100:zz=3", "zz", "highpass"),
])
def test_an_unknown_option_is_named_in_the_error(stateful: Path, tmp_path: Path, chain: str, option: str,
                                                 filt: str) -> None:
    root = write_chain(tmp_path, chain)
    shutil.copy(stateful / "src.wav", root / "src.wav")
    with pytest.raises(ProjectError, match=rf"'{option}'.*'{filt}'.*Option not found"):
        load_project(root)
