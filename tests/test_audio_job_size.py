"""A job's PCM must fit in what one job may return (`[jobs] max_output_mib`): an audio project whose
segments (or whole file, for a chain that does not split) are larger is refused at load, naming the
key, the size and the longest that fits. Real ffmpeg reads the inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from farm_audio import ffmpeg

from farm.errors import ProjectError
from farm.project import load_project

RATE = 48000


def project(root: Path, table: str, *, seconds: float = 4.0, jobs: str = "max_output_mib = 1\n") -> Path:
    root.mkdir(parents=True)
    ffmpeg.run(["-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}:duration={seconds}",
                "-ac", "2", "-c:a", "flac", str(root / "in.flac")])
    (root / "farm.toml").write_text(f'[project]\nname = "t"\nmedia_type = "audio"\n\n[jobs]\n{jobs}\n'
                                    f'[audio]\ninput = "in.flac"\n{table}')
    return root


def refused(root: Path) -> ProjectError:
    with pytest.raises(ProjectError) as err:
        load_project(root)
    return err.value


def test_segments_over_the_job_limit_are_refused_with_the_longest_that_fits(tmp_path):
    # 2 channels x (16-bit for the FLAC + 32-bit float for the MP3) = 12 bytes a sample
    err = refused(project(tmp_path / "p", 'segment = 3\noutputs = ["flac", "mp3"]\n'))
    assert err.key == "[audio] segment", err
    assert ("a 3 s segment of 2 channels of s16le + f32le PCM (12 bytes a sample, all of which a job "
            "returns) is 1.6 MiB, over the 1.0 MiB a job may return") in err.message, err.message
    assert "use segments of at most 2 s" in err.message  # 1 MiB / 12 B / 48 kHz = 1.8 s


def test_a_short_input_is_sized_by_its_length_not_the_segment(tmp_path):
    # one 1 s job of 4 bytes a sample: 0.2 MiB, whatever the 30 s segment would be
    assert load_project(project(tmp_path / "p", "", seconds=1.0)).settings["segment"] >= RATE


def test_a_chain_that_cannot_split_is_refused_when_the_whole_file_is_over_the_limit(tmp_path):
    err = refused(project(tmp_path / "p", 'filters = "adeclick"\nsegment = 0.5\n', seconds=8.0))
    assert err.key == "[audio] filters", err
    assert "'adeclick' does not split into segments" in err.message
    assert "so the whole 8.0 s input is one job" in err.message and "is 1.5 MiB" not in err.message
    assert "come to 1.5 MiB, over the 1.0 MiB" in err.message
    assert "use an input of at most 5 s, or a chain that splits" in err.message  # 1 MiB / 4 B / 48 kHz


def test_within_the_limit_it_loads(tmp_path):
    root = project(tmp_path / "p", 'segment = 1\noutputs = ["flac", "mp3"]\n')
    assert load_project(root).settings["segment"] == RATE
