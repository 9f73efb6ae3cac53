"""Load-time checks' findings kept on disk, so that every process loading a project does not run ffmpeg again.

The CLI and every worker load each project they see (a worker trusts no one's settings),
and each load used to run ffmpeg five times: the filter list, the input's header, its exact
length, and the chain twice on a generated signal (0.5 to 0.8 s here under load, before a
worker's first job could start). What those runs find depends only on what the key names
(the input's content digest, the chain's text, the format), this ffmpeg build and the
checking code, so the answers are kept as the split check's verdicts are
(`farm_audio.verdicts`), in ``$XDG_CACHE_HOME/farm/audio-checks/``. Only successes are
kept: a chain ffmpeg refuses is run (and refused, with ffmpeg's words) every time. The
allowlist, the formats and the input's path are never cached: `read_settings` checks them
afresh on every load. (These are not the renderer facts a submitter sends, `farm_audio.facts`:
`farm_audio.config` measures those through this cache.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from farm_audio import ffmpeg, probe, validate, verdicts

T = TypeVar("T")
FOLDER = "audio-checks"


def _remembered(key: tuple[Any, ...], compute: Callable[[], T], build: Callable[[dict[str, Any]], T]) -> T:
    exe = ffmpeg.ffmpeg_exe()
    stored = verdicts.load(exe, key, FOLDER)
    if stored is not None:
        try:
            return build(stored)
        except (KeyError, TypeError, ValueError):  # not what this code wrote: check again
            pass
    found = compute()
    verdicts.store(exe, key, asdict(found) if found is not None else {}, FOLDER)  # type: ignore[call-overload]
    return found


def audio_filters() -> frozenset[str]:
    """`ffmpeg.audio_filters`, remembered per ffmpeg build."""
    exe = ffmpeg.ffmpeg_exe()
    stored = verdicts.load(exe, ("filters",), FOLDER)
    names = stored.get("names") if stored else None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return frozenset(names)
    found = ffmpeg.audio_filters()
    verdicts.store(exe, ("filters",), {"names": sorted(found)}, FOLDER)
    return found


def probe_stream(path: Path, digest: str) -> probe.StreamInfo:
    """`probe.probe_stream` of the file whose content has ``digest``."""
    return _remembered(("probe", digest), lambda: probe.probe_stream(path), lambda d: probe.StreamInfo(**d))


def measure(path: Path, digest: str, audio_filter: str, codec: str) -> probe.Measured:
    """`probe.measure` of the file whose content has ``digest``."""
    return _remembered(("measure", digest, audio_filter, codec),
                       lambda: probe.measure(path, audio_filter, codec), lambda d: probe.Measured(**d))


def check_chain(chain: str, sample_rate: int, layout: str) -> validate.ChainShape:
    """`validate.check_chain`, its shape remembered when the chain passes."""
    return _remembered(("shape", 2, chain, sample_rate, layout),  # 2: non-finite output refused too
                       lambda: validate.check_chain(chain, sample_rate, layout),
                       lambda d: validate.ChainShape(**d))


def check_runs(chain: str, sample_rate: int, layout: str) -> None:
    """`validate.check_runs`, remembered when ffmpeg accepts the chain."""
    _remembered(("runs", chain, sample_rate, layout), lambda: validate.check_runs(chain, sample_rate, layout),
                lambda d: None)
