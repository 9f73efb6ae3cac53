"""Encoding while the join fills: one ffmpeg encodes every output from the joined PCM as it arrives.

One whole-file ffmpeg encodes while it filters. Started only after the last segment, the
farm's encoders would add the slowest one's whole time (MP3: ~0.45 s per minute of audio
here) after the parallel part. So one ffmpeg, writing every output as the whole-file run
does, starts with the first segment and reads raw PCM on its stdin, fed by a thread from
the join file up to the end of its contiguous start (segments arrive about in order);
`Encoders.finish` gives where the audio ends. The encoders see the same samples in the
same order as when they read the finished file, so they write the same bytes (tests
compare them with one whole-file run). The bytes go from the page cache to the pipe with
``sendfile`` (`ffmpeg.send`): no copy through Python.
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
    """One ffmpeg encoding every output from raw PCM on its stdin, and what its feeder has done."""

    def __init__(self, outputs: Sequence[Output], cmd: list[str], temps: list[Path], finals: list[Path]) -> None:
        self.outputs, self.temps, self.finals = list(outputs), temps, finals
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
        specs = ", ".join(o.spec for o in self.outputs)
        return f"{specs}: {text or self.problem or f'exit code {self.proc.returncode}'}"

    def remove_partial(self) -> None:
        for temp in self.temps:
            temp.unlink(missing_ok=True)


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


def _stop(feed: _Feed, encoder: _Encoder | None) -> None:
    """Stop the feeder and the encoder of a run that ended without a finish (cancelled, failed, dropped)."""
    with feed.cond:
        feed.stopped = True
        feed.cond.notify_all()
    if encoder is None:
        return
    if encoder.proc.poll() is None:
        encoder.proc.kill()
    encoder.proc.wait()
    if encoder.thread is not None and encoder.thread is not threading.current_thread():
        encoder.thread.join()
    encoder.remove_partial()
    encoder.stderr.close()


def encode_command(raw: str, sample_rate: int, layout: str, outputs: Sequence[Output], temps: Sequence[Path],
                   filters: str = "") -> list[str]:
    """One ffmpeg that reads raw PCM on stdin once and writes every output, as one whole-file run does.

    With ``filters``, they run once and ``asplit`` hands their audio to each encoder;
    without, every output maps the input stream. Each encoder converts to its own
    sample format, as it would alone, so the bytes are those of a separate encode.
    """
    cmd = [ffmpeg.ffmpeg_exe(), *ffmpeg.QUIET, "-y", *input_args(raw, sample_rate, layout), "-i", "pipe:0"]
    labels = [f"[o{i}]" for i in range(len(outputs))]
    if filters:
        cmd += ["-filter_complex", f"[0:a:0]{filters},asplit={len(outputs)}{''.join(labels)}"]
    for label, out, temp in zip(labels, outputs, temps, strict=True):
        cmd += ["-map", label if filters else "0:a:0", *out.args, *ffmpeg.BITEXACT, ffmpeg.file_arg(temp)]
    return cmd


class Encoders:
    """One ffmpeg encoding every output, fed from ``pcm`` (a raw file that fills from its start).

    Call `advance` with the number of samples at the file's start that are final,
    as often as it grows, then `finish` with the total once every segment is in (or
    `abort`; dropping the object aborts too). ``filters`` (a filter chain, e.g. loudnorm's
    gain) runs once over the joined audio, before the encoders. One process reads the join
    once (one process per output read it once each and, with loudnorm's gain, ran the gain
    once each: 0.8 CPU-s per output for 10 minutes; ffmpeg runs each encoder in a thread of
    its own anyway). Outputs are written as ``.<name>.<ext>.part`` and renamed by `finish`.
    The encoder runs at the controller's own priority: at ``nice 10`` (as it once did) a
    machine with other work starved it, and the run waited for it (docs/media-audio.md,
    "Where a segment's time goes").
    """

    def __init__(self, pcm: Path, raw: str, sample_rate: int, layout: str, frame_bytes: int,
                 outputs: Sequence[Output], directory: Path, name: str, filters: str = "") -> None:
        self.frame_bytes = frame_bytes
        self._feed = _Feed(pcm)
        directory.mkdir(parents=True, exist_ok=True)
        temps = [directory / f".{name}.{out.extension}.part" for out in outputs]
        finals = [directory / f"{name}.{out.extension}" for out in outputs]
        cmd = encode_command(raw, sample_rate, layout, outputs, temps, filters)
        log.debug("encoding %s while the join fills: %s", ", ".join(o.spec for o in outputs), " ".join(cmd))
        self.encoder = _Encoder(outputs, cmd, temps, finals)
        self._cleanup = weakref.finalize(self, _stop, self._feed, self.encoder)
        self.encoder.thread = threading.Thread(target=self._feed.run, args=(self.encoder,), daemon=True,
                                               name="farm-audio-encode")
        self.encoder.thread.start()

    def advance(self, samples: int) -> None:
        """The first ``samples`` samples of the file are final: feed them."""
        feed = self._feed
        with feed.cond:
            if samples * self.frame_bytes > feed.ready:
                feed.ready = samples * self.frame_bytes
                feed.cond.notify_all()

    def finish(self, samples: int) -> list[Path]:
        """The audio is ``samples`` long and all in the file: encode the rest, wait, rename.

        Raises `ffmpeg.FfmpegFailed` naming the outputs (and ffmpeg's words) when encoding
        failed; then no output is left, not even the ones that may have been whole.
        """
        end = samples * self.frame_bytes
        enc = self.encoder
        if enc.fed > end:  # fed past the end (cannot happen with a checked join)
            self.abort()
            raise ffmpeg.FfmpegFailed(["encode"], 1, "the join shrank under its encoder")
        with self._feed.cond:
            self._feed.end = end
            self._feed.cond.notify_all()
        assert enc.thread is not None
        enc.thread.join()
        enc.proc.wait()
        if enc.proc.returncode != 0 or enc.problem or enc.fed != end:
            failed = enc.error()
            self._cleanup()
            raise ffmpeg.FfmpegFailed(["encode"], 1, failed)
        for temp, final in zip(enc.temps, enc.finals, strict=True):
            temp.replace(final)
        self._cleanup()  # closes the stderr file; the rest has already ended
        return list(enc.finals)

    def abort(self) -> None:
        """Stop the encoder and remove what it wrote."""
        self._cleanup()
