"""Load-time checks kept on disk (`farm_audio.checkcache`): a worker loading a project the CLI already
loaded runs no ffmpeg for its checks; the findings follow the input's content and the chain; a refusal
is never kept. Real ffmpeg; the counting wrappers only watch the real functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from farm_audio import checkcache, ffmpeg, probe, splitcheck, validate

from farm.errors import ProjectError
from farm.project import load_project

RATE = 44100
ALL_ONCE = {"probe_stream": 1, "measure": 1, "check_chain": 1, "check_runs": 1, "audio_filters": 1}


def write_source(path: Path, expr: str, seconds: float) -> None:
    ffmpeg.run(["-y", "-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s={RATE}:c=mono:d={seconds}",
                "-c:a", "flac", str(path)])


def make_project(root: Path, filters: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_source(root / "source.flac", "0.5*sin(2*PI*440*t)", 2)
    (root / "farm.toml").write_text('[project]\nname = "t"\nmedia_type = "audio"\n\n[audio]\n'
                                    f'input = "source.flac"\nfilters = "{filters}"\nsegment = 0.5\n')
    return root


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A fresh cache folder, and how often each checking function really ran."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: dict[str, int] = {}

    def watch(module: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(module, name)

        def counting(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)

    for module, name in ((probe, "probe_stream"), (probe, "measure"), (validate, "check_chain"),
                         (validate, "check_runs"), (ffmpeg, "audio_filters")):
        watch(module, name)
    return calls


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new process (a worker) starts with: no in-process caches."""
    monkeypatch.setattr(splitcheck, "_cache", splitcheck.OrderedDict())


def test_a_second_process_runs_no_ffmpeg_for_the_checks(
    tmp_path: Path, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "highpass=f=80,loudnorm=I=-20")
    first = load_project(root).settings
    assert counted == ALL_ONCE
    fresh_process(monkeypatch)
    assert load_project(root).settings == first
    assert counted == ALL_ONCE
    assert len(list((tmp_path / "cache" / "farm" / checkcache.FOLDER).iterdir())) == 5


def test_the_findings_follow_the_inputs_content_and_the_chain(
    tmp_path: Path, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "volume=0.5")
    short = load_project(root).settings
    write_source(root / "source.flac", "0.1*sin(2*PI*300*t)", 3)  # another input: measured again
    fresh_process(monkeypatch)
    longer = load_project(root).settings
    assert (short["samples"], longer["samples"]) == (2 * RATE, 3 * RATE)
    assert counted["measure"] == counted["probe_stream"] == 2 and counted["check_chain"] == 1
    toml = root / "farm.toml"
    toml.write_text(toml.read_text().replace("volume=0.5", "aecho=0.8:0.7:200:0.3"))  # another chain
    fresh_process(monkeypatch)
    echo = load_project(root).settings
    assert counted["check_chain"] == 2 and counted["measure"] == 2
    assert echo["lead_in"] > longer["lead_in"]  # its own tail, not volume's


def test_a_refused_chain_is_refused_every_time_and_never_kept(
    tmp_path: Path, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "atempo=2")
    for attempt in (1, 2):
        fresh_process(monkeypatch)
        with pytest.raises(ProjectError, match="it shortens the audio"):
            load_project(root)
        assert counted["check_chain"] == attempt


def test_a_damaged_finding_is_checked_again(
    tmp_path: Path, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "p", "volume=0.5")
    first = load_project(root).settings
    for kept in (tmp_path / "cache" / "farm" / checkcache.FOLDER).iterdir():
        kept.write_text('{"not": "a fact"}')
    fresh_process(monkeypatch)
    assert load_project(root).settings == first
    assert counted["measure"] == counted["probe_stream"] == counted["check_chain"] == 2
