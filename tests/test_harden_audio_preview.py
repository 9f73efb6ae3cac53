"""The audio preview shows the levels the outputs will have: where the encoders apply loudnorm's
gain, the joined audio (before it) is scaled by that gain once the analysis is known."""

from __future__ import annotations

import time
from types import MappingProxyType

import pytest
from farm_audio.media import AudioSegments
from test_audio_fast import Worker, make_project, make_source

from farm.mediatype import CollateContext
from farm.preview import PreviewContext, check_description
from farm.project import load_project


@pytest.mark.parametrize("amplitude", [0.05, 0.6])  # quiet: raised; loud: lowered
def test_the_waveform_before_the_encode_matches_the_encoded_levels(tmp_path, amplitude):
    root = make_project(tmp_path / "p", 'filters = "loudnorm=I=-20"\nsegment = 2\noutputs = ["flac"]\n')
    # a loudness that varies (loudnorm's linear mode needs a range), longer than its 3 s window
    make_source(root / "source.wav", f"{amplitude}*(0.55+0.45*sin(2*PI*0.25*t))*sin(2*PI*220*t)", seconds=8.0)
    project = load_project(root)
    assert project.settings["gain_at_encode"]  # loudnorm last: its gain is applied by the encoders
    media, worker = AudioSegments(), Worker(tmp_path / "worker")
    collate = CollateContext(project, project.output_dir, {})
    ctx = PreviewContext("t-1", "t", MappingProxyType(dict(project.settings)), project.output_dir,
                         time.time() - 5)
    jobs = list(media.split(project))
    segments = [job for job in jobs if job.params["kind"] == "segment"]
    for job in segments:  # the segments first: the join fills while the gain is unknown
        media.collate(job, *worker.render(project, job), collate)
    before_gain = check_description(media.preview(ctx))["peaks"]
    assert max(p[1] for p in before_gain) == pytest.approx(amplitude, rel=0.05)  # the join as it is
    [analysis] = [job for job in jobs if job.params["kind"] == "loudnorm"]
    media.collate(analysis, *worker.render(project, analysis), collate)
    shown = check_description(media.preview(ctx))["peaks"]
    media.finalize(collate)
    fresh = PreviewContext("t-1", "t", ctx.settings, project.output_dir, ctx.submitted)
    encoded = media.preview(fresh)["peaks"]  # measured from the encoded output
    top = max(p[1] for p in encoded if p)
    assert abs(top - amplitude) > 0.05  # loudnorm changed the level: the check below means something
    assert max(p[1] for p in shown) == pytest.approx(top, rel=0.1)
    assert min(p[0] for p in shown) == pytest.approx(min(p[0] for p in encoded if p), rel=0.1)
