"""The ``audio`` media type with the real ffmpeg: segments joined equal one whole-file run.

Every comparison is against a single whole-file ffmpeg run of the same chain
(`farm_audio.render.whole_file_filter`), on short generated inputs with small segments,
so that every test crosses several joins.
"""

from __future__ import annotations

import array
import itertools
import json
import random
import shutil
import textwrap
from pathlib import Path

import pytest
from farm_audio import ffmpeg
from farm_audio.encode import Output
from farm_audio.render import ANALYSIS_KEY, MEASURED, whole_file_filter
from farm_audio.segments import READ_ALIGN, plan

from farm.errors import ProjectError, RenderError
from farm.mediatype import CollateContext, Job, RenderContext
from farm.plugins import get_plugins
from farm.project import Project, load_project
from farm.testing import run_local

RATE = 44100
# A tone that swells, with gaps, on a noise floor, in two different channels: level changes
# exercise compressors, gaps and noise exercise filters' states.
SIGNAL = (
    "0.5*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*1.7*t))*gt(mod(t,0.9),0.25)+0.02*sin(2*PI*3170*t*t)"
    "|0.4*sin(2*PI*330*t)*gt(mod(t,1.3),0.4)+0.05*sin(2*PI*90*t)"
)
INPUTS = {  # name -> encoder options
    "source.flac": ["-c:a", "flac"],
    "source.wav": ["-c:a", "pcm_s16le"],
    "source.mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "source.opus": ["-c:a", "libopus", "-b:a", "64k"],
    "source.m4a": ["-c:a", "aac", "-b:a", "128k"],
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3.3 s of the test signal in every input format (generated, never downloaded)."""
    folder = tmp_path_factory.mktemp("sources")
    for name, codec in INPUTS.items():
        rate = 48000 if name.endswith(".opus") else RATE
        ffmpeg.run(["-f", "lavfi", "-i", f"aevalsrc=exprs='{SIGNAL}':s={rate}:c=stereo:d=3.3",
                    *codec, str(folder / name)])
    silence = f"aevalsrc=0:s={RATE}:d=0"
    ffmpeg.run(["-f", "lavfi", "-i", silence, "-c:a", "pcm_s16le", str(folder / "empty.wav")])
    ffmpeg.run(["-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(folder / "picture.png")])
    (folder / "garbage.mp3").write_bytes(b"this is not audio\n" * 100)
    return folder


def make_project(tmp_path: Path, sources: Path, table: str, *, source: str = "source.flac",
                 folder: str = "project") -> Path:
    root = tmp_path / folder
    root.mkdir()
    shutil.copy(sources / source, root / source)
    (root / "farm.toml").write_text(
        f'[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\ninput = "{source}"\n'
        + textwrap.dedent(table)
    )
    return root


def whole_file(project: Project, output: dict, target: Path, measured: dict | None = None) -> Path:
    """The reference: one ffmpeg run of the same chain over the whole input, same encoder options."""
    out = Output.from_wire(output)
    s = project.settings
    tail = [] if s["tail"] else [f",atrim=end_sample={s['samples']}"]
    graph = whole_file_filter(s, measured) + "".join(tail)
    ffmpeg.run(["-y", "-i", str(project.root / s["input"]), "-map", "0:a:0", "-af", graph,
                *out.args, *ffmpeg.BITEXACT, str(target)])
    return target


def decode(path: Path, fmt: str = "f64le") -> array.array:
    raw = ffmpeg.run(["-i", str(path), "-f", fmt, "-"]).stdout
    return array.array({"f64le": "d", "s16le": "h", "s32le": "i"}[fmt], raw)


def output_of(run, ext: str) -> Path:
    return next(p for p in run.outputs if p.suffix == f".{ext}")


# -- the plugin and the split ------------------------------------------------------------


def test_registered_through_its_entry_point_and_available() -> None:
    plugins = get_plugins()
    media = plugins.get("audio")
    assert plugins.owner("audio").module == "farm_audio"
    assert media.available() is None


def test_segments_cover_every_sample_once_with_aligned_reads() -> None:
    segments = list(plan(100_003, 10_000, lead_in=3_000, lead_out=500))
    assert len(segments) == 11
    assert segments[0].start == 0 and segments[-1].end == 100_003 and segments[-1].last
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))
    assert not any(s.last for s in segments[:-1])
    for s in segments:
        assert s.read_start % READ_ALIGN == 0
        assert s.start - 3_000 - READ_ALIGN < s.read_start <= max(0, s.start - 3_000)
        assert s.read_end == min(100_003, s.end + 500)


def test_split_yields_what_count_says_with_stable_keys(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "volume=0.5"\nsegment = 0.5\n')
    project = load_project(root)
    media = get_plugins().get("audio")
    jobs = list(media.split(project))
    assert media.count(project) == len(jobs) == 7  # 3.3 s in 0.5 s segments
    assert [j.key for j in jobs] == [j.key for j in media.split(load_project(root))]
    assert all(j.inputs == ("source.flac",) and j.deps == () for j in jobs)
    assert project.settings["samples"] == int(3.3 * RATE)


# -- equal to a whole-file run -----------------------------------------------------------

EXACT_CHAINS = {
    "volume": ("volume=0.5", ""),
    "highpass+lowpass": ("highpass=f=80,lowpass=f=6000", ""),
    "acompressor": ("acompressor=threshold=0.05:ratio=6:attack=20:release=250", "lead_in = 1.5\n"),
}


@pytest.mark.parametrize("name", list(EXACT_CHAINS))
def test_bit_exact_with_a_whole_file_run(tmp_path: Path, sources: Path, name: str) -> None:
    chain, extra = EXACT_CHAINS[name]
    table = f'filters = "{chain}"\nsegment = 0.4\noutputs = ["wav", "flac:24"]\n{extra}'
    root = make_project(tmp_path, sources, table)
    run = run_local(root)
    settings = run.project.settings
    assert len(run.jobs) == 9
    farm16 = output_of(run, "wav")
    ref16 = whole_file(run.project, settings["outputs"][0], tmp_path / "ref.wav")
    assert farm16.read_bytes() == ref16.read_bytes()
    assert len(decode(farm16, "s16le")) == settings["samples"] * 2  # stereo: exact total sample count
    farm24 = output_of(run, "flac")
    ref24 = whole_file(run.project, settings["outputs"][1], tmp_path / "ref.flac")
    assert farm24.read_bytes() == ref24.read_bytes()


def test_double_precision_pcm_equals_the_whole_file_run(tmp_path: Path, sources: Path) -> None:
    """Stateless and settled-state chains are exact in doubles too, not only once rounded to 16 bits."""
    root = make_project(tmp_path, sources, 'filters = "volume=0.3,acompressor=attack=5:release=100"\n'
                                           'segment = 0.3\noutputs = ["wav:f64"]\nlead_in = 1.0\n')
    run = run_local(root)
    ref = whole_file(run.project, run.project.settings["outputs"][0], tmp_path / "ref.wav")
    assert decode(run.outputs[0]) == decode(ref)


def test_iir_chains_stay_within_a_fraction_of_one_lsb_and_joins_are_no_worse(
    tmp_path: Path, sources: Path
) -> None:
    """Where bit-exactness is not promised (recursive filters restarted in doubles), the error is
    far below one 24-bit step, and no larger within 10 ms of a join than anywhere else."""
    chain = "highpass=f=40,bass=g=6:f=70:t=q:w=2,equalizer=f=2500:t=q:w=4:g=5"
    table = f'filters = "{chain}"\nsegment = 0.25\noutputs = ["wav:f64", "flac:24"]\n'
    root = make_project(tmp_path, sources, table)
    run = run_local(root)
    settings = run.project.settings
    farm = decode(output_of(run, "wav"))
    ref = decode(whole_file(run.project, settings["outputs"][0], tmp_path / "r.wav"))
    assert len(farm) == len(ref) == settings["samples"] * 2
    diffs = [abs(a - b) for a, b in zip(farm, ref, strict=True)]
    lsb24 = 2.0**-23
    assert max(diffs) <= lsb24
    near = set()
    window = int(0.010 * RATE)
    for seg in plan(settings["samples"], settings["segment"]):
        for i in range(max(0, seg.start - window), min(settings["samples"], seg.start + window)):
            near.update((2 * i, 2 * i + 1))
    near_max = max(diffs[i] for i in near)
    far_max = max(d for i, d in enumerate(diffs) if i not in near)
    assert near_max <= far_max, (near_max, far_max)
    farm24 = decode(output_of(run, "flac"), "s32le")
    ref24 = decode(whole_file(run.project, settings["outputs"][1], tmp_path / "r.flac"), "s32le")
    assert max(abs(a - b) for a, b in zip(farm24, ref24, strict=True)) <= 256  # one 24-bit LSB


def test_a_short_lead_in_is_caught_at_load_and_the_file_runs_whole(tmp_path: Path, sources: Path) -> None:
    """The lead-in matters: a compressor restarted with none would differ at the joins, so the
    split check at load sends the whole file to one job, which equals the whole-file run."""
    root = make_project(tmp_path, sources, 'filters = "acompressor=threshold=0.05:ratio=6:release=400"\n'
                                           'segment = 0.4\nlead_in = 0\noutputs = ["wav"]\n')
    run = run_local(root)
    settings = run.project.settings
    assert "does not split" in settings["whole_file"] and "lead-in 0 s" in settings["whole_file"]
    assert settings["segment"] == settings["samples"] and len(run.results) == 1
    ref = whole_file(run.project, settings["outputs"][0], tmp_path / "ref.wav")
    assert run.outputs[0].read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("keep", [True, False])
def test_echo_tail_is_kept_in_the_last_segment_or_dropped(tmp_path: Path, sources: Path, keep: bool) -> None:
    root = make_project(tmp_path, sources, f'filters = "aecho=0.8:0.7:700|250:0.4|0.3"\nsegment = 0.5\n'
                                           f'outputs = ["wav"]\ntail = {str(keep).lower()}\n')
    run = run_local(root)
    settings = run.project.settings
    assert settings["lead_in"] >= int(0.7 * RATE)  # the measured tail counts as history
    ref = whole_file(run.project, settings["outputs"][0], tmp_path / "ref.wav")
    assert run.outputs[0].read_bytes() == ref.read_bytes()
    total = len(decode(run.outputs[0], "s16le")) // 2
    assert total == settings["samples"] + (round(0.7 * RATE) if keep else 0)


def test_time_based_filters_see_the_true_position(tmp_path: Path, sources: Path) -> None:
    chain = "afade=t=in:st=0.2:d=1,afade=t=out:st=2.2:d=0.8,aeval=exprs='val(ch)*if(lt(t,1.7),0.5,1)':c=same"
    root = make_project(tmp_path, sources, f'filters = "{chain}"\nsegment = 0.3\noutputs = ["wav:f64"]\n')
    run = run_local(root)
    ref = whole_file(run.project, run.project.settings["outputs"][0], tmp_path / "ref.wav")
    assert decode(run.outputs[0]) == decode(ref)


@pytest.mark.parametrize("source", list(INPUTS))
def test_every_input_format_joins_exactly(tmp_path: Path, sources: Path, source: str) -> None:
    """Decoded once per worker, then read by offset: exact even where seeking is not (MP3, AAC, Opus)."""
    root = make_project(tmp_path, sources, 'filters = "volume=0.7"\nsegment = 0.6\noutputs = ["wav:f64"]\n',
                        source=source)
    run = run_local(root)
    decoded = len(decode(root / source)) // 2
    assert run.project.settings["samples"] == decoded
    ref = whole_file(run.project, run.project.settings["outputs"][0], tmp_path / "ref.wav")
    assert decode(run.outputs[0]) == decode(ref)


def test_no_filters_is_an_exact_transcode(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'segment = 0.7\noutputs = ["wav:24"]\n', source="source.wav")
    run = run_local(root)
    assert run.project.settings["filters"] == ""
    assert decode(run.outputs[0], "s16le") == decode(root / "source.wav", "s16le")


def test_an_input_whose_name_has_a_colon(tmp_path: Path, sources: Path) -> None:
    """ffmpeg reads "take:1.flac" as protocol "take" unless told it is a file."""
    shutil.copy(sources / "source.flac", sources / "take:1.flac")
    root = make_project(tmp_path, sources, 'filters = "volume=0.5"\nsegment = 1\noutputs = ["wav"]\n',
                        source="take:1.flac")
    run = run_local(root)
    assert [p.name for p in run.outputs] == ["take_1.wav"]  # output names stay portable
    assert len(decode(run.outputs[0], "s16le")) == run.project.settings["samples"] * 2


def test_rate_and_channels_are_converted_once_over_the_whole_file(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "lowpass=f=3000"\nsegment = 0.5\nsample_rate = 22050\n'
                                           'channels = 1\noutputs = ["wav"]\n')
    run = run_local(root)
    settings = run.project.settings
    assert (settings["sample_rate"], settings["channels"], settings["raw"]) == (22050, 1, "f64le")
    ref = whole_file(run.project, settings["outputs"][0], tmp_path / "ref.wav")
    assert run.outputs[0].read_bytes() == ref.read_bytes()
    assert len(decode(run.outputs[0], "s16le")) == settings["samples"] == round(3.3 * 22050)


def test_encoded_outputs_are_byte_identical_to_a_whole_file_encode(tmp_path: Path, sources: Path) -> None:
    """Encoded once from the joined PCM with bit-exact flags; Opus resamples 44.1 kHz itself."""
    outputs = ["flac", "mp3:128k", "aac:96k", "m4a", "opus:64k"]
    root = make_project(tmp_path, sources,
                        'filters = "highpass=f=100,acompressor=threshold=0.1:ratio=3,aecho=0.8:0.6:60:0.3"\n'
                        f'segment = 0.5\noutputs = {json.dumps(outputs)}\nname = "mix"\n')
    run = run_local(root)
    assert run.project.settings["pcm"] == "f64le"
    assert sorted(p.name for p in run.outputs) == ["mix.aac", "mix.flac", "mix.m4a", "mix.mp3", "mix.opus"]
    for output in run.project.settings["outputs"]:
        farm = root / "output" / f"mix.{output['extension']}"
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}")
        assert farm.read_bytes() == ref.read_bytes(), output["spec"]
    assert not list((root / "output").glob(".*"))  # the join file and its record are gone


def test_segments_render_in_the_narrowest_exact_pcm(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "equalizer=f=1000:t=q:w=1:g=4"\nsegment = 0.5\n'
                                           'outputs = ["mp3", "aac"]\n')
    run = run_local(root)
    assert run.project.settings["pcm"] == "f32le"  # both take floats at 44.1 kHz
    for output in run.project.settings["outputs"]:
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}")
        assert (root / "output" / f"source.{output['extension']}").read_bytes() == ref.read_bytes()


# -- loudnorm: an analysis job first ---------------------------------------------------


def test_loudnorm_analysis_runs_first_and_the_segments_render_beside_it(
    tmp_path: Path, sources: Path
) -> None:
    """With loudnorm last, the segments carry the chain before it and do not wait for the analysis;
    the encoders apply its linear pass (a constant gain) to the joined doubles."""
    root = make_project(tmp_path, sources, 'filters = "highpass=f=60,loudnorm=I=-20:TP=-1:LRA=15"\n'
                                           'segment = 0.5\noutputs = ["wav", "flac:24"]\n')
    run = run_local(root)
    assert run.jobs[0].key == ANALYSIS_KEY and run.jobs[0].deps == ()
    assert len(run.jobs) == 8 and all(j.deps == () for j in run.jobs[1:])
    assert run.project.settings["gain_at_encode"] and run.project.settings["pcm"] == "f64le"
    measured = run.results[ANALYSIS_KEY]
    assert measured["second_pass"] == "linear"
    # the analysis measures what a whole-file first pass measures
    first = ffmpeg.run(["-i", str(root / "source.flac"), "-af",
                        "aformat=sample_fmts=dbl,highpass=f=60,aformat=sample_fmts=dbl,"
                        "loudnorm=I=-20:TP=-1:LRA=15:print_format=json", "-f", "null", "-"], quiet=False)
    text = first.stderr.decode()
    reference = json.loads(text[text.rindex("{"): text.rindex("}") + 1])
    assert {k: measured[k] for k in MEASURED} == {k: reference[k] for k in MEASURED}
    # and the segments together equal the whole-file second pass
    for output in run.project.settings["outputs"]:
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}", measured)
        assert output_of(run, output["extension"]).read_bytes() == ref.read_bytes()
    assert json.loads((root / "output" / "source.loudnorm.json").read_text()) == measured


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_loudnorm_gain_at_the_encoders_in_any_collate_order_and_across_a_restart(
    tmp_path: Path, sources: Path, seed: int
) -> None:
    """The analysis may be collated before, among or after the segments, and before or after a
    controller restart (run_local restarts halfway): the outputs are the same whole-file bytes."""
    root = make_project(tmp_path, sources, 'filters = "volume=0.7,loudnorm=I=-20:TP=-1:LRA=15"\n'
                                           'segment = 0.5\noutputs = ["flac", "wav:f32"]\n')
    run = run_local(root, seed=seed)
    measured = {k: run.results[ANALYSIS_KEY][k] for k in MEASURED}
    for output in run.project.settings["outputs"]:
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}", measured)
        assert output_of(run, output["extension"]).read_bytes() == ref.read_bytes(), output["spec"]
    assert [p.name for p in (root / "output").iterdir() if p.name.startswith(".")] == []


def test_another_runs_analysis_is_never_applied(tmp_path: Path, sources: Path) -> None:
    """A controller that restarts reads the analysis it kept on disk, named by the settings: the
    record (and loudnorm.json) of a run with another chain, so another gain, is not applied."""
    from farm_audio.media import _analysis_record

    root = make_project(tmp_path, sources, 'filters = "volume=0.2,loudnorm=I=-20:TP=-1:LRA=15"\n'
                                           'segment = 0.5\noutputs = ["flac"]\n')
    first = run_local(root, restart=False)
    stale = _analysis_record(CollateContext(first.project, root / "output", {}))
    (root / "farm.toml").write_text((root / "farm.toml").read_text().replace("volume=0.2", "volume=0.9"))
    for seed in range(3):  # the analysis collated 5th, 6th, 8th: segments come before it
        # as a controller stopped for good before its finalize would leave it
        stale.write_text(json.dumps(first.results[ANALYSIS_KEY]))
        run = run_local(root, seed=seed, restart=False)
        measured = {k: run.results[ANALYSIS_KEY][k] for k in MEASURED}
        assert measured != {k: first.results[ANALYSIS_KEY][k] for k in MEASURED}
        ref = whole_file(run.project, run.project.settings["outputs"][0], tmp_path / "ref.flac", measured)
        assert output_of(run, "flac").read_bytes() == ref.read_bytes()


def test_loudnorm_not_last_keeps_its_gain_in_the_segments(tmp_path: Path, sources: Path) -> None:
    """Filters after loudnorm would run unsplit once per output: then the segments wait for the
    analysis and apply the gain themselves, as before."""
    root = make_project(tmp_path, sources, 'filters = "loudnorm=I=-20:TP=-1:LRA=15,highpass=f=60"\n'
                                           'segment = 0.5\noutputs = ["flac", "wav:24"]\n')
    run = run_local(root)
    assert not run.project.settings["gain_at_encode"]
    assert all(j.deps == (ANALYSIS_KEY,) for j in run.jobs[1:])
    measured = {k: run.results[ANALYSIS_KEY][k] for k in MEASURED}
    for output in run.project.settings["outputs"]:
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}", measured)
        assert output_of(run, output["extension"]).read_bytes() == ref.read_bytes(), output["spec"]


def test_loudnorm_second_pass_is_bit_exact_so_float_encoders_match(tmp_path: Path, sources: Path) -> None:
    """loudnorm's linear pass (measurements through deps, as strings) adds no difference of its own:
    with no recursive filter in the chain the doubles are exact, so MP3 and Opus, which take floats, match."""
    chain = ("acompressor=threshold=0.1:ratio=3:attack=5:release=100,aecho=0.8:0.6:60:0.3,"
             "loudnorm=I=-20:TP=-1:LRA=15")
    root = make_project(tmp_path, sources, f'filters = "{chain}"\nsegment = 0.4\nlead_in = 1.0\n'
                                           'outputs = ["wav:f64", "mp3:128k", "opus:64k"]\n')
    run = run_local(root)
    measured = {k: run.results[ANALYSIS_KEY][k] for k in MEASURED}
    assert all(isinstance(v, str) for v in measured.values())  # passed on exactly as loudnorm printed them
    for output in run.project.settings["outputs"]:
        ref = whole_file(run.project, output, tmp_path / f"ref.{output['extension']}", measured)
        assert output_of(run, output["extension"]).read_bytes() == ref.read_bytes(), output["spec"]


def test_recursive_filters_differ_in_doubles_so_float_outputs_are_not_promised(
    tmp_path: Path, sources: Path
) -> None:
    """Why the podcast chain's MP3 differs at 10 minutes: biquads restarted at a join keep a
    rounding-level difference (~1e-14) in doubles; rounding to float32 for an encoder then flips
    one value in ~1e5 of those, and the encoded frames around it differ. The docs promise
    byte-identical float outputs only for chains without recursive filters; this keeps it so."""
    chain = "highpass=f=80,equalizer=f=220:t=q:w=1:g=-2,loudnorm=I=-20:TP=-1:LRA=15"
    root = make_project(tmp_path, sources, f'filters = "{chain}"\nsegment = 0.25\noutputs = ["wav:f64"]\n')
    run = run_local(root)
    measured = {k: run.results[ANALYSIS_KEY][k] for k in MEASURED}
    ref = decode(whole_file(run.project, run.project.settings["outputs"][0], tmp_path / "ref.wav", measured))
    farm = decode(run.outputs[0])
    assert len(farm) == len(ref)
    diffs = [abs(a - b) for a, b in zip(farm, ref, strict=True)]
    assert 0 < max(diffs) < 1e-12  # not bit-exact, but far below any integer output's step


def test_loudnorm_that_would_not_be_linear_fails_clearly(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "loudnorm=I=-5:TP=-9:LRA=20"\nsegment = 1\n')
    with pytest.raises(RenderError, match="linear mode"):
        run_local(root)


# -- collation in any order, resuming, missing ranges -------------------------------------


def render_all(root: Path, tmp_path: Path) -> tuple[Project, list[tuple[Job, dict, dict[str, Path]]]]:
    """Render every job into its own folder, as agents would."""
    project = load_project(root)
    media = get_plugins().get("audio")
    rendered, results, cache = [], {}, {}
    for job in media.split(project):
        out = tmp_path / "agent" / job.key
        work = tmp_path / "work" / job.key
        out.mkdir(parents=True)
        work.mkdir(parents=True)
        ctx = RenderContext(project.root, out, work, project.settings, 1, cache,
                            {d: results[d] for d in job.deps})
        results[job.key] = media.render(job, ctx)
        rendered.append((job, results[job.key], {p.name: p for p in out.iterdir()}))
    return project, rendered


def test_collated_in_any_order_and_resumed_gives_the_same_bytes(tmp_path: Path, sources: Path) -> None:
    table = 'filters = "aecho=0.8:0.5:300:0.4"\nsegment = 0.3\noutputs = ["flac", "opus"]\n'
    expected = run_local(make_project(tmp_path, sources, table, folder="local"))
    root = make_project(tmp_path, sources, table)
    project, rendered = render_all(root, tmp_path)
    media = get_plugins().get("audio")
    order = list(reversed(rendered))
    random.Random(4).shuffle(order)
    ctx = CollateContext(project, project.output_dir, {})
    for job, result, outputs in order[:5]:
        media.collate(job, result, outputs, ctx)
    # the controller restarts: a fresh run state picks up what was already joined
    ctx = CollateContext(project, project.output_dir, {})
    for job, result, outputs in order[5:]:
        media.collate(job, result, outputs, ctx)
    outputs = media.finalize(ctx)
    assert [p.read_bytes() for p in outputs] == [p.read_bytes() for p in expected.outputs]


def test_a_missing_segment_fails_finalize_naming_its_samples(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "volume=2"\nsegment = 1\noutputs = ["wav"]\n')
    project, rendered = render_all(root, tmp_path)
    media = get_plugins().get("audio")
    ctx = CollateContext(project, project.output_dir, {})
    for job, result, outputs in rendered:
        if job.key != "segment-00002":
            media.collate(job, result, outputs, ctx)
    with pytest.raises(RenderError, match=f"samples {2 * RATE}-{3 * RATE} never arrived"):
        media.finalize(ctx)
    assert not (root / "output" / "source.wav").exists()


def test_a_truncated_segment_is_refused_at_collate(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "volume=2"\nsegment = 1\noutputs = ["wav"]\n')
    project, rendered = render_all(root, tmp_path)
    job, result, outputs = rendered[1]
    staged = next(iter(outputs.values()))
    staged.write_bytes(staged.read_bytes()[:-4])
    ctx = CollateContext(project, project.output_dir, {})
    with pytest.raises(RenderError, match=f"{job.key}: .* not the {RATE} samples the job rendered"):
        get_plugins().get("audio").collate(job, result, outputs, ctx)


# -- bad projects ---------------------------------------------------------------------


BAD_SETTINGS = [
    ('filters = "bogus=1"', "[audio] filters", "no audio filter named 'bogus'"),
    ('filters = "asplit"', "[audio] filters",
     "'asplit' is not a filter of one audio stream in and one out (ffmpeg -filters lists it as A->N)"),
    ('filters = "ebur128"', "[audio] filters", "'ebur128' is not a filter of one audio stream in and one"),
    ('filters = "volume=x"', "[audio] filters", "Undefined constant"),
    ('filters = "acompressor=ratio=99"', "[audio] filters", "out of range"),
    ('filters = "atempo=2"', "[audio] filters", "shortens the audio"),
    ('filters = "asetrate=22050"', "[audio] filters", "sample_rate instead"),
    ('filters = "apad"', "[audio] filters", "does not end"),
    ('filters = "areverse"', "[audio] filters", "reverses the whole file"),
    ('filters = "volume=1;anull"', "[audio] filters", "one chain"),
    ('filters = "[a]volume=1"', "[audio] filters", "one chain"),
    ('filters = "loudnorm,loudnorm"', "[audio] filters", "only one loudnorm"),
    ('filters = "loudnorm=measured_I=-20"', "[audio] filters", "measured_i"),
    ('segment = 0', "[audio] segment", "at least"),
    ('lead_in = -1', "[audio] lead_in", "at least"),
    ('channels = 9', "[audio] channels", "1 to 8"),
    ('channels = "sideways"', "[audio] channels", "unknown channel layout"),
    ('sample_rate = 100', "[audio] sample_rate", "at least"),
    ('outputs = ["ogg"]', "[audio] outputs", "unknown format"),
    ('outputs = ["mp3:fast"]', "[audio] outputs", "bitrate"),
    ('outputs = ["flac:12"]', "[audio] outputs", "flac takes one of"),
    ('outputs = ["aac", "aac:96k"]', "[audio] outputs", "both write a .aac"),
    ('outputs = []', "[audio] outputs", "at least one"),
    ('name = "../x"', "[audio] name", "plain file name"),
    ('tial = false', "[audio] tial", "unknown key"),
]


@pytest.mark.parametrize(("line", "key", "words"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_bad_settings_name_the_key(tmp_path: Path, sources: Path, line: str, key: str, words: str) -> None:
    root = make_project(tmp_path, sources, line + "\n")
    with pytest.raises(ProjectError) as caught:
        load_project(root)
    assert caught.value.key == key
    assert words in caught.value.message
    assert caught.value.line == 7  # the line of the bad key in farm.toml


@pytest.mark.parametrize(("source", "words"), [
    ("garbage.mp3", "cannot read 'garbage.mp3': ffmpeg cannot read it: "),
    ("empty.wav", "holds no audio (zero samples)"),
    ("picture.png", "has no audio stream"),
])
def test_unusable_inputs_are_refused(tmp_path: Path, sources: Path, source: str, words: str) -> None:
    root = make_project(tmp_path, sources, "", source=source)
    with pytest.raises(ProjectError, match=r"\[audio\] input") as caught:
        load_project(root)
    assert words in caught.value.message


def test_a_missing_input_is_refused(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, "")
    (root / "source.flac").unlink()
    with pytest.raises(ProjectError, match=r"\[audio\] input: file 'source.flac' does not exist"):
        load_project(root)


def test_an_input_changed_after_submit_fails_the_job(tmp_path: Path, sources: Path) -> None:
    root = make_project(tmp_path, sources, 'filters = "volume=1"\nsegment = 1\n')
    project = load_project(root)
    shutil.copy(sources / "source.mp3", root / "source.flac")  # same name, other length
    job = next(get_plugins().get("audio").split(project))
    ctx = RenderContext(root, tmp_path, tmp_path, project.settings, 1, {}, {})
    with pytest.raises(RenderError, match="has the file changed"):
        get_plugins().get("audio").render(job, ctx)


# -- on real agents --------------------------------------------------------------------


@pytest.mark.slow  # a controller and two agent processes: a few seconds
def test_submit_embedded_on_two_agents_equals_run_local(tmp_path: Path, sources: Path) -> None:
    from farm.embedded import submit_embedded

    table = ('filters = "highpass=f=80,acompressor=threshold=0.1:ratio=3,loudnorm=I=-20:TP=-1:LRA=15"\n'
             'segment = 0.5\noutputs = ["flac", "mp3"]\n')
    expected = run_local(make_project(tmp_path, sources, table, folder="local"))
    root = make_project(tmp_path, sources, table)
    summary = submit_embedded(root, agents=2)
    assert summary.ok, summary.failures
    assert summary.done == summary.total == 8
    for path in expected.outputs:
        assert (root / "output" / path.name).read_bytes() == path.read_bytes()
