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
import os
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from farm.proc import child_dies_with_parent
from farm_audio import ffmpeg
from farm_audio.encode import Output, input_args, stream_of

log = logging.getLogger(__name__)

#: bytes per sendfile call: a progress step, not a buffer (nothing is copied into Python)
FEED_CHUNK = 1 << 20
#: Linux's F_SETPIPE_SZ: a 1 MiB pipe lets an encoder read in large steps
_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class _Pipe:
    """One stream of the joined PCM on its way into the encoder: its file, its pipe, how far it got."""

    def __init__(self, pcm: Path, raw: str, frame_bytes: int, write_fd: int) -> None:
        self.pcm, self.raw, self.frame_bytes, self.fd = pcm, raw, frame_bytes, write_fd
        with contextlib.suppress(OSError):  # a smaller pipe only costs more wake-ups
            fcntl.fcntl(write_fd, _SETPIPE_SZ, 1 << 20)
        self.fed = 0  # bytes written into the pipe
        self.problem = ""  # why feeding stopped early (a closed pipe: the exit code and stderr say why)
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Encoder:
    """One ffmpeg encoding every output from raw PCM streams on pipes, and what its feeders have done."""

    def __init__(self, outputs: Sequence[Output], streams: Sequence[tuple[Path, str, int]],
                 command: Callable[[list[str]], list[str]], temps: list[Path], finals: list[Path]) -> None:
        self.outputs, self.temps, self.finals = list(outputs), temps, finals
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _stop)
        fds = [os.pipe() for _ in streams]
        # the first stream on stdin, the others on their own descriptors (ffmpeg's pipe:N)
        cmd = command(["pipe:0", *(f"pipe:{r}" for r, _ in fds[1:])])
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=fds[0][0], stdout=subprocess.DEVNULL, stderr=self.stderr,
                pass_fds=[r for r, _ in fds[1:]], preexec_fn=child_dies_with_parent(),
                start_new_session=True)  # a terminal's Ctrl-C stops the controller, which ends the encoder
        except BaseException:
            for _, w in fds:
                os.close(w)
            raise
        finally:
            for r, _ in fds:
                os.close(r)
        self.pipes = [_Pipe(pcm, raw, frame, w)
                      for (pcm, raw, frame), (_, w) in zip(streams, fds, strict=True)]

    @property
    def fed(self) -> int:
        """Samples every stream has been fed."""
        return min(p.fed // p.frame_bytes for p in self.pipes)

    def error(self) -> str:
        self.stderr.seek(0)
        text = ffmpeg.last_lines(self.stderr.read().decode("utf-8", "replace"), 3)
        problem = next((p.problem for p in self.pipes if p.problem), "")
        specs = ", ".join(o.spec for o in self.outputs)
        return f"{specs}: {text or problem or f'exit code {self.proc.returncode}'}"

    def remove_partial(self) -> None:
        for temp in self.temps:
            temp.unlink(missing_ok=True)


class _Feed:
    """What the feeder threads share (not the `Encoders` itself, so that dropping it stops them)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ready = 0  # samples at the start of the joins that may be read
        self.end: int | None = None  # total samples, once known
        self.stopped = False

    def run(self, pipe: _Pipe) -> None:
        """Feed one stream from its file as it fills, until the end (or a stop)."""
        fb = pipe.frame_bytes
        try:
            with open(pipe.pcm, "rb") as src:
                while True:
                    with self.cond:
                        while not self.stopped and self.end is None and pipe.fed >= self.ready * fb:
                            self.cond.wait()
                        limit = (self.ready if self.end is None else self.end) * fb
                        if self.stopped or pipe.fed >= limit:
                            return
                    pipe.fed += ffmpeg.send(pipe.fd, src, pipe.fed, min(FEED_CHUNK, limit - pipe.fed))
        except OSError as exc:  # BrokenPipeError: the encoder stopped reading; finish reports why
            pipe.problem = str(exc)
        finally:
            pipe.close()


def _stop(feed: _Feed, encoder: _Encoder | None) -> None:
    """Stop the feeders and the encoder of a run that ended without a finish (cancelled, failed, dropped)."""
    with feed.cond:
        feed.stopped = True
        feed.cond.notify_all()
    if encoder is None:
        return
    if encoder.proc.poll() is None:
        encoder.proc.kill()
    encoder.proc.wait()
    for pipe in encoder.pipes:
        if pipe.thread is not None and pipe.thread is not threading.current_thread():
            pipe.thread.join()
        pipe.close()
    encoder.remove_partial()
    encoder.stderr.close()


def encode_command(streams: Sequence[str], inputs: Sequence[str], sample_rate: int, layout: str,
                   outputs: Sequence[Output], temps: Sequence[Path], filters: str = "") -> list[str]:
    """One ffmpeg that reads each raw PCM stream once and writes every output, as one whole-file run does.

    ``streams`` are the raw formats of ``inputs`` (ffmpeg URLs such as ``pipe:0``); each
    output reads the stream its sample format comes from (`encode.stream_of`). With
    ``filters`` (one stream of doubles), they run once and ``asplit`` hands their audio to
    each encoder. Each encoder converts to its own sample format, as it would alone, so the
    bytes are those of a separate encode.
    """
    cmd = [ffmpeg.ffmpeg_exe(), *ffmpeg.QUIET, "-y"]
    for raw, url in zip(streams, inputs, strict=True):
        cmd += [*input_args(raw, sample_rate, layout), "-i", url]
    labels = [f"[o{i}]" for i in range(len(outputs))]
    if filters:
        cmd += ["-filter_complex", f"[0:a:0]{filters},asplit={len(outputs)}{''.join(labels)}"]
    for label, out, temp in zip(labels, outputs, temps, strict=True):
        source = label if filters else f"{stream_of(out, streams)}:a:0"
        cmd += ["-map", source, *out.args, *ffmpeg.BITEXACT, ffmpeg.file_arg(temp)]
    return cmd


class Encoders:
    """One ffmpeg encoding every output, fed from the joins (raw files that fill from their start).

    ``streams``: (file, raw format, bytes per sample) of each join, in the order of the
    project's ``streams`` setting. Call `advance` with the number of samples at the files'
    start that are final, as often as it grows, then `finish` with the total once every
    segment is in (or `abort`; dropping the object aborts too). ``filters`` (a filter chain,
    e.g. loudnorm's gain) runs once over the joined audio, before the encoders. One process
    reads each join once (one process per output read it once each and, with loudnorm's
    gain, ran the gain once each: 0.8 CPU-s per output for 10 minutes; ffmpeg runs each
    encoder in a thread of its own anyway). Outputs are written as ``.<name>.<ext>.part``
    and renamed by `finish`. The encoder runs at the controller's own priority: at
    ``nice 10`` (as it once did) a machine with other work starved it, and the run waited
    for it (docs/media-audio.md, "Where a segment's time goes").
    """

    def __init__(self, streams: Sequence[tuple[Path, str, int]], sample_rate: int, layout: str,
                 outputs: Sequence[Output], directory: Path, name: str, filters: str = "") -> None:
        self._feed = _Feed()
        directory.mkdir(parents=True, exist_ok=True)
        temps = [directory / f".{name}.{out.extension}.part" for out in outputs]
        finals = [directory / f"{name}.{out.extension}" for out in outputs]
        formats = [raw for _, raw, _ in streams]

        def command(inputs: list[str]) -> list[str]:
            cmd = encode_command(formats, inputs, sample_rate, layout, outputs, temps, filters)
            specs = ", ".join(o.spec for o in outputs)
            log.debug("encoding %s while the join fills: %s", specs, " ".join(cmd))
            return cmd

        self.encoder = _Encoder(outputs, streams, command, temps, finals)
        self._cleanup = weakref.finalize(self, _stop, self._feed, self.encoder)
        for pipe in self.encoder.pipes:
            pipe.thread = threading.Thread(target=self._feed.run, args=(pipe,), daemon=True,
                                           name=f"farm-audio-encode-{pipe.raw}")
            pipe.thread.start()

    def advance(self, samples: int) -> None:
        """The first ``samples`` samples of the joins are final: feed them."""
        feed = self._feed
        with feed.cond:
            if samples > feed.ready:
                feed.ready = samples
                feed.cond.notify_all()

    def finish(self, samples: int) -> list[Path]:
        """The audio is ``samples`` long and all in the file: encode the rest, wait, rename.

        Raises `ffmpeg.FfmpegFailed` naming the outputs (and ffmpeg's words) when encoding
        failed; then no output is left, not even the ones that may have been whole.
        """
        enc = self.encoder
        if any(p.fed > samples * p.frame_bytes for p in enc.pipes):  # cannot happen with a checked join
            self.abort()
            raise ffmpeg.FfmpegFailed(["encode"], 1, "the join shrank under its encoder")
        with self._feed.cond:
            self._feed.end = samples
            self._feed.cond.notify_all()
        for pipe in enc.pipes:
            assert pipe.thread is not None
            pipe.thread.join()
        enc.proc.wait()
        short = any(p.problem or p.fed != samples * p.frame_bytes for p in enc.pipes)
        if enc.proc.returncode != 0 or short:
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
