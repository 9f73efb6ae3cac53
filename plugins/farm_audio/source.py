"""The source on a render node: read in place (FLAC, WAV), or decoded once per worker.

A FLAC or PCM input is read where it lies (`InPlace`): each of its frames decodes alone
and carries its sample position, so a job seeks to a frame before its range, decodes
from there and keeps exactly its samples (``atrim`` on the stream's own timestamps). Each
job then decodes its own range (plus lead-in) and nothing else, as one whole-file run
decodes each sample once; there is no per-worker copy to write and wait for.

Seeking in MP3, AAC or Opus is not sample-exact, and a decoder started mid-stream
gives different first samples; for those (and for inputs converted to another rate or
layout, whose resampler runs over the whole file) the whole input is decoded once into
raw PCM (in the decoder's own sample format, so nothing is rounded), which makes every
job's read exact and cheap. The decode runs in the background: a job waits only for its
own range. The file lives in a temporary folder for as long as the worker process does,
keyed by the input's content digest, so a source rewritten between runs is decoded again.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from farm.errors import RenderError
from farm.proc import child_dies_with_parent
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


class Decoding:
    """The input being decoded into ``target`` in the background; readers wait for their bytes.

    A thread copies ffmpeg's raw output from its stdout into the file and says how far it
    got, so the first job starts after its own range is decoded, not the whole file (and
    loudnorm's analysis reads while the decode runs).
    """

    def __init__(self, cmd: list[str], target: Path, frame_bytes: int, samples: int, what: str) -> None:
        self.target, self.what = target, what
        self.expected = samples * frame_bytes
        self.cond = threading.Condition()
        self.written = 0
        self.error: str | None = None  # set when the decode ended badly
        self.done = False
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the thread closes it)
        out = open(target, "wb")  # noqa: SIM115 (the thread closes it): there before any reader opens it
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr, preexec_fn=child_dies_with_parent())
        threading.Thread(target=self._pump, args=(out,), daemon=True, name="farm-audio-decode").start()

    def _pump(self, out: BinaryIO) -> None:
        assert self.proc.stdout is not None
        error = None
        try:
            with out:
                while chunk := self.proc.stdout.read(READ_CHUNK):
                    out.write(chunk)
                    out.flush()  # readers open the file by name
                    with self.cond:
                        self.written += len(chunk)
                        self.cond.notify_all()
        except OSError as exc:
            error = f"cannot write the decoded input: {exc}"
        finally:
            self.proc.stdout.close()
        code = self.proc.wait()
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace")
        self.stderr.close()
        if error is None and code != 0:
            error = f"ffmpeg cannot decode {self.what}: {ffmpeg.last_lines(text) or f'exit code {code}'}"
        elif error is None and self.written != self.expected:
            error = (f"{self.what} decodes to a different length here ({self.written} bytes of raw PCM, "
                     f"not {self.expected}) than when the project was set up: has the file changed since "
                     "it was submitted?")
        with self.cond:
            self.error, self.done = error, True
            self.cond.notify_all()

    def wait(self, end: int) -> None:
        """Return once the first ``end`` bytes are in the file; RenderError if they never will be."""
        with self.cond:
            while self.written < end and not self.done:
                self.cond.wait()
            if self.written < end or (self.done and self.error):
                raise RenderError(self.error or f"decoded source {self.target} ends early")

    @property
    def failed(self) -> bool:
        return self.done and self.error is not None


@dataclass(frozen=True)
class Source:
    path: Path
    raw: str
    sample_rate: int
    layout: str
    channels: int
    samples: int
    scratch: ScratchDir | None = field(default=None, compare=False, repr=False)  # keeps the file alive
    decoding: Decoding | None = field(default=None, compare=False, repr=False)  # None: all in the file

    @property
    def frame_bytes(self) -> int:
        return RAW_BYTES[self.raw] * self.channels

    def input_args(self) -> list[str]:
        return ["-f", self.raw, "-ar", str(self.sample_rate), "-ch_layout", self.layout]

    def feed(self, pipe: int, start: int, end: int, progress: Callable[[int], None] | None = None) -> None:
        """Write the bytes of samples ``[start, end)`` into ``pipe``, as soon as they are decoded.

        They go from the page cache to the pipe in the kernel (`ffmpeg.send`); ``progress``
        hears the bytes sent so far.
        """
        fb = self.frame_bytes
        offset, stop = start * fb, end * fb
        with open(self.path, "rb") as f:
            while offset < stop:
                step = min(READ_CHUNK, stop - offset)
                if self.decoding is not None:
                    self.decoding.wait(offset + step)
                offset += ffmpeg.send(pipe, f, offset, step)
                if progress is not None:
                    progress(offset - start * fb)


def content_digest(path: Path) -> str:
    """The file's blake3 digest, hex (about 10 ms for 20 MB)."""
    hasher = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass(frozen=True)
class InPlace:
    """A FLAC or PCM input that jobs read where it lies, each decoding just its own range."""

    path: Path
    sample_rate: int
    samples: int
    stamp: tuple[int, int] = (0, 0)  # size and mtime (ns) when its content digest was checked

    def input_args(self, start: int, end: int) -> tuple[list[str], str]:
        """ffmpeg's input options to read samples ``[start, end)``, and the filter that keeps exactly them.

        The seek goes `SEEK_MARGIN` samples early (ffmpeg lands on a frame at or before it);
        ``-copyts`` keeps the stream's timestamps, which count samples from the file's start,
        so ``atrim`` on them cuts at the exact sample whatever frame the seek found.
        """
        seek = max(0, start - SEEK_MARGIN)
        args = ["-ss", f"{seek / self.sample_rate:.6f}"] if seek else []
        args += ["-copyts", "-i", ffmpeg.file_arg(self.path)]  # the graph takes its first audio stream
        trim = []
        if start > 0:
            trim.append(f"start_pts={start}")
        if end < self.samples:
            trim.append(f"end_pts={end}")
        return args, f"atrim={':'.join(trim)}" if trim else ""


#: how early an in-place read seeks: more than a FLAC frame can hold (65535 samples)
SEEK_MARGIN = 1 << 17
#: containers whose FLAC or PCM frames start at sample 0 and are stamped in samples
_IN_PLACE_SUFFIXES = (".flac", ".wav")


def reads_in_place(settings: Mapping[str, Any]) -> bool:
    """Whether jobs read the input where it lies: FLAC or PCM in its own container, not converted."""
    codec = str(settings["codec"]).split(" ")[0]
    return (not settings["convert"] and (codec == "flac" or codec.startswith("pcm_"))
            and Path(settings["input"]).suffix.lower() in _IN_PLACE_SUFFIXES)


def job_source(
    project_dir: Path, settings: Mapping[str, Any], cache: dict[str, Any], scratch_parent: Path | None = None
) -> Source | InPlace:
    """The project's input as this worker's jobs read it: in place, or decoded (`decoded_source`).

    Either way the file is checked against the one the project was set up with (its size
    every job, its content digest once per worker). Raises RenderError when it differs.
    """
    if not reads_in_place(settings):
        return decoded_source(project_dir, settings, cache, scratch_parent)
    path = project_dir / settings["input"]
    _check_size(path, settings)
    ident = ("in place", settings["input"], settings["input_digest"])
    sources: dict[tuple[Any, ...], Any] = cache.setdefault(_CACHE_KEY, {})
    found = sources.get(ident)
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    # checked again when the file was touched since: jobs read it where it lies, so a file
    # rewritten during a run must fail the job, not mix two versions into one output
    if found is None or found.stamp != stamp:
        _check_digest(path, settings)
        found = sources[ident] = InPlace(path, settings["sample_rate"], settings["samples"], stamp)
    return found


def _check_size(path: Path, settings: Mapping[str, Any]) -> None:
    size = path.stat().st_size
    if size != settings["input_size"]:
        raise RenderError(
            f"{settings['input']} is {size} bytes here, but was {settings['input_size']} when the "
            "project was set up: has the file changed since it was submitted?"
        )


def _check_digest(path: Path, settings: Mapping[str, Any]) -> None:
    if content_digest(path) != settings["input_digest"]:
        raise RenderError(f"{settings['input']} differs here from the file the project was set up with: "
                          "has the file changed since it was submitted?")


def decoded_source(
    project_dir: Path, settings: Mapping[str, Any], cache: dict[str, Any], scratch_parent: Path | None = None
) -> Source:
    """The project's input decoded to raw PCM, decoding it on first use in this worker.

    ``scratch_parent`` is where its temporary folder goes (the job's work folder's parent).
    """
    path = project_dir / settings["input"]
    _check_size(path, settings)
    # by content: a source rewritten between runs with the same size and mtime is decoded again
    ident = (settings["input"], settings["input_digest"], settings["convert"], settings["raw"])
    sources: dict[tuple[Any, ...], Source] = cache.setdefault(_CACHE_KEY, {})
    found = sources.get(ident)
    if found is not None and found.path.is_file() and not (found.decoding and found.decoding.failed):
        return found
    _check_digest(path, settings)
    scratch = cache.get(_TEMP_KEY)
    if scratch is None:
        scratch = cache[_TEMP_KEY] = ScratchDir(scratch_parent)
    target = scratch.path / f"source-{len(sources)}.{settings['raw']}"
    args = ["-i", ffmpeg.file_arg(path), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if settings["convert"]:
        args += ["-af", settings["convert"]]
    cmd = [ffmpeg.ffmpeg_exe(), *ffmpeg.QUIET, *args, "-f", settings["raw"], "pipe:1"]
    log.info("decoding %s once for this worker", settings["input"])
    frame = RAW_BYTES[settings["raw"]] * settings["channels"]
    decoding = Decoding(cmd, target, frame, settings["samples"], settings["input"])
    source = Source(
        target, settings["raw"], settings["sample_rate"], settings["layout"], settings["channels"],
        settings["samples"], scratch, decoding,
    )
    sources[ident] = source
    return source
