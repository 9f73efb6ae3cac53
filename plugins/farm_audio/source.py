"""The decoded source on a render node: decoded once per worker, then read by sample offset.

Seeking in MP3, AAC or Opus is not sample-exact, and a decoder started mid-stream
gives different first samples; decoding the whole input once into raw PCM (in the
decoder's own sample format, so nothing is rounded) makes every job's read exact and
cheap. The file lives in a temporary folder for as long as the worker process does.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.errors import RenderError
from farm_audio import ffmpeg
from farm_audio.probe import RAW_BYTES

log = logging.getLogger(__name__)

_CACHE_KEY = "farm_audio.sources"
_TEMP_KEY = "farm_audio.tempdir"
READ_CHUNK = 1 << 20


class ScratchDir:
    """A temporary folder removed when this object goes (with the worker's cache, or at exit).

    It is made inside ``parent``: on an agent, the slot's own folder, which the agent
    removes when it stops, so a worker killed without running its exit handlers leaves
    nothing behind either.
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="farm-audio-", dir=parent))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, True)


@dataclass(frozen=True)
class Source:
    path: Path
    raw: str
    sample_rate: int
    layout: str
    channels: int
    samples: int
    scratch: ScratchDir | None = field(default=None, compare=False, repr=False)  # keeps the file alive

    @property
    def frame_bytes(self) -> int:
        return RAW_BYTES[self.raw] * self.channels

    def input_args(self) -> list[str]:
        return ["-f", self.raw, "-ar", str(self.sample_rate), "-ch_layout", self.layout]

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes of samples ``[start, end)``, in chunks."""
        fb = self.frame_bytes
        with open(self.path, "rb") as f:
            f.seek(start * fb)
            left = (end - start) * fb
            while left > 0:
                chunk = f.read(min(READ_CHUNK, left))
                if not chunk:
                    raise RenderError(f"decoded source {self.path} ends early")
                left -= len(chunk)
                yield chunk


def decoded_source(
    project_dir: Path, settings: Mapping[str, Any], cache: dict[str, Any], scratch_parent: Path | None = None
) -> Source:
    """The project's input decoded to raw PCM, decoding it on first use in this worker.

    ``scratch_parent`` is where its temporary folder goes (the job's work folder's parent).
    """
    path = project_dir / settings["input"]
    stat = path.stat()
    if stat.st_size != settings["input_size"]:
        raise RenderError(
            f"{settings['input']} is {stat.st_size} bytes here, but was {settings['input_size']} when the "
            "project was set up: has the file changed since it was submitted?"
        )
    ident = (settings["input"], stat.st_size, stat.st_mtime_ns, settings["convert"], settings["raw"])
    sources: dict[tuple[Any, ...], Source] = cache.setdefault(_CACHE_KEY, {})
    found = sources.get(ident)
    if found is not None and found.path.is_file():
        return found
    scratch = cache.get(_TEMP_KEY)
    if scratch is None:
        scratch = cache[_TEMP_KEY] = ScratchDir(scratch_parent)
    target = scratch.path / f"source-{len(sources)}.{settings['raw']}"
    args = ["-y", "-i", ffmpeg.file_arg(path), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if settings["convert"]:
        args += ["-af", settings["convert"]]
    log.info("decoding %s once for this worker", settings["input"])
    try:
        ffmpeg.run([*args, "-f", settings["raw"], ffmpeg.file_arg(target)])
    except ffmpeg.FfmpegFailed as exc:
        raise RenderError(f"ffmpeg cannot decode {settings['input']}: {exc.message}") from None
    source = Source(
        target, settings["raw"], settings["sample_rate"], settings["layout"], settings["channels"],
        settings["samples"], scratch,
    )
    got = target.stat().st_size // source.frame_bytes
    if got != settings["samples"]:
        target.unlink(missing_ok=True)
        raise RenderError(
            f"{settings['input']} decodes to {got} samples here, but the project was set up with "
            f"{settings['samples']}: has the file changed since it was submitted?"
        )
    sources[ident] = source
    return source
