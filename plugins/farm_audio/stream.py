"""Encoding while the join fills: every output's encoder reads the joined PCM as it arrives.

One whole-file ffmpeg encodes while it filters. Started only after the last segment, the
farm's encoders would add the slowest one's whole time (MP3: ~0.45 s per minute of audio
here) after the parallel part. So each output's ffmpeg starts with the first segment and
reads raw PCM on its stdin, fed by a thread of its own from the join file up to the end of
its contiguous start (segments arrive about in order); `Encoders.finish` gives where the
audio ends. An encoder sees the same samples in the same order as when it reads the
finished file, so it writes the same bytes (tests compare them with one whole-file run).
The bytes go from the page cache to the pipe with ``sendfile`` (`ffmpeg.send`): no copy through Python.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from farm.proc import child_dies_with_parent
from farm_audio import ffmpeg
from farm_audio.encode import Output, input_args

log = logging.getLogger(__name__)

#: bytes per sendfile call: a progress step, not a buffer (nothing is copied into Python)
FEED_CHUNK = 1 << 20
#: Linux's F_SETPIPE_SZ: a 1 MiB pipe lets an encoder read in large steps
_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class _Encoder:
    """One output's ffmpeg reading raw PCM on stdin, and what its feeder has done."""

    def __init__(self, out: Output, cmd: list[str], temp: Path, final: Path) -> None:
        self.out, self.temp, self.final = out, temp, final
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _stop)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, preexec_fn=child_dies_with_parent())
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # a smaller pipe only costs more wake-ups
            fcntl.fcntl(self.proc.stdin.fileno(), _SETPIPE_SZ, 1 << 20)
        self.fed = 0  # bytes written to its stdin
        self.problem = ""  # why feeding it stopped early (a closed pipe: its exit code and stderr say why)
        self.thread: threading.Thread | None = None

    def error(self) -> str:
        self.stderr.seek(0)
        text = ffmpeg.last_lines(self.stderr.read().decode("utf-8", "replace"), 3)
        return f"{self.out.spec}: {text or self.problem or f'exit code {self.proc.returncode}'}"


class _Feed:
    """What the feeder threads share (not the `Encoders` itself, so that dropping it stops them)."""

    def __init__(self, pcm: Path) -> None:
        self.pcm = pcm
        self.cond = threading.Condition()
        self.ready = 0  # bytes at the start of pcm that may be read
        self.end: int | None = None  # total bytes, once known
        self.stopped = False

    def run(self, enc: _Encoder) -> None:
        """Feed ``enc`` from the file as it fills, until the end (or a stop)."""
        assert enc.proc.stdin is not None
        pipe = enc.proc.stdin.fileno()
        try:
            with open(self.pcm, "rb") as src:
                while True:
                    with self.cond:
                        while not self.stopped and self.end is None and enc.fed >= self.ready:
                            self.cond.wait()
                        limit = self.ready if self.end is None else self.end
                        if self.stopped or enc.fed >= limit:
                            return
                    enc.fed += ffmpeg.send(pipe, src, enc.fed, min(FEED_CHUNK, limit - enc.fed))
        except OSError as exc:  # BrokenPipeError: the encoder stopped reading; finish reports why
            enc.problem = str(exc)
        finally:
            with contextlib.suppress(OSError):
                enc.proc.stdin.close()


def _stop(feed: _Feed, encoders: list[_Encoder]) -> None:
    """Stop feeders and encoders whose run ended without a finish (cancelled, failed, dropped)."""
    with feed.cond:
        feed.stopped = True
        feed.cond.notify_all()
    for enc in encoders:
        if enc.proc.poll() is None:
            enc.proc.kill()
        enc.proc.wait()
        if enc.thread is not None and enc.thread is not threading.current_thread():
            enc.thread.join()
        enc.temp.unlink(missing_ok=True)
        enc.stderr.close()


class Encoders:
    """Encoders of every output, fed from ``pcm`` (a raw file that fills from its start).

    Call `advance` with the number of samples at the file's start that are final,
    as often as it grows, then `finish` with the total once every segment is in (or
    `abort`; dropping the object aborts too). ``filters`` (an ``-af`` chain, e.g. loudnorm's
    gain) runs in every encoder over the joined audio. Outputs are written as
    ``.<name>.<ext>.part`` and renamed by `finish`. Encoders run at the controller's own
    priority: at ``nice 10`` (as they once did) a machine with other work starved them, and
    the run waited for its slowest encoder (docs/media-audio.md, "Where a segment's time goes").
    """

    def __init__(self, pcm: Path, raw: str, sample_rate: int, layout: str, frame_bytes: int,
                 outputs: Sequence[Output], directory: Path, name: str, filters: str = "") -> None:
        self.frame_bytes = frame_bytes
        self._feed = _Feed(pcm)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoders: list[_Encoder] = []
        self._cleanup = weakref.finalize(self, _stop, self._feed, self.encoders)
        for out in outputs:
            temp = directory / f".{name}.{out.extension}.part"
            cmd = [ffmpeg.ffmpeg_exe(), *ffmpeg.QUIET, "-y", *input_args(raw, sample_rate, layout),
                   "-i", "pipe:0", *(("-af", filters) if filters else ()), *out.args, *ffmpeg.BITEXACT,
                   ffmpeg.file_arg(temp)]
            log.debug("encoding %s while the join fills: %s", out.spec, " ".join(cmd))
            enc = _Encoder(out, cmd, temp, directory / f"{name}.{out.extension}")
            self.encoders.append(enc)
            enc.thread = threading.Thread(target=self._feed.run, args=(enc,), daemon=True,
                                          name=f"farm-audio-encode-{out.extension}")
            enc.thread.start()

    def advance(self, samples: int) -> None:
        """The first ``samples`` samples of the file are final: feed them."""
        feed = self._feed
        with feed.cond:
            if samples * self.frame_bytes > feed.ready:
                feed.ready = samples * self.frame_bytes
                feed.cond.notify_all()

    def finish(self, samples: int) -> list[Path]:
        """The audio is ``samples`` long and all in the file: encode the rest, wait, rename.

        Raises `ffmpeg.FfmpegFailed` naming each output whose encoder failed.
        """
        end = samples * self.frame_bytes
        if any(e.fed > end for e in self.encoders):  # fed past the end (cannot happen with a checked join)
            self.abort()
            raise ffmpeg.FfmpegFailed(["encode"], 1, "the join shrank under its encoders")
        with self._feed.cond:
            self._feed.end = end
            self._feed.cond.notify_all()
        failed = []
        for enc in self.encoders:
            assert enc.thread is not None
            enc.thread.join()
            enc.proc.wait()
            if enc.proc.returncode == 0 and not enc.problem and enc.fed == end:
                enc.temp.replace(enc.final)
            else:
                enc.temp.unlink(missing_ok=True)
                failed.append(enc.error())
        self._cleanup()  # closes the stderr files; the rest has already ended
        if failed:
            raise ffmpeg.FfmpegFailed(["encode"], 1, "\n".join(failed))
        return [e.final for e in self.encoders]

    def abort(self) -> None:
        """Stop every encoder and remove what they wrote."""
        self._cleanup()
