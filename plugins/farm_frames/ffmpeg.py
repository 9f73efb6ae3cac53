"""Running ffmpeg: finding it, feeding it a frame sequence, reading back what it made."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import RendererMissing, RenderError
from farm.proc import child_dies_with_parent

log = logging.getLogger(__name__)

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FRAME = re.compile(r"frame=\s*(\d+)")


def ffmpeg_exe() -> str:
    """imageio-ffmpeg's static ffmpeg (it has libx264 and libvpx), else ``ffmpeg`` on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise RendererMissing(
            f"ffmpeg is needed to encode the video: {exc}; install imageio-ffmpeg"
        ) from None


def run_ffmpeg(args: Sequence[str], *, what: str) -> str:
    """Run ffmpeg quietly; return its stderr (where it reports), raise `RenderError` on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    log.debug("running %s", subprocess.list2cmdline(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False,
                          preexec_fn=child_dies_with_parent())
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RenderError(f"ffmpeg failed to {what} (exit {done.returncode}):\n{tail}")
    return done.stderr


def sequence_input(frames: Sequence[Path], *, link_dir: Path) -> list[str]:
    """ffmpeg input arguments that read ``frames`` in order as one image sequence.

    A contiguous run named ``frame_%06d`` is read in place with ``-start_number`` where no
    frame follows it in its folder; anything else (gaps, a subset, a run followed by frames of
    an earlier, longer range) is linked into ``link_dir`` as 000000, 000001, ... so ffmpeg's
    image2 reader, which reads on to the first missing number, sees these frames and no others.
    """
    if not frames:
        raise ValueError("no frames to read")
    suffix = frames[0].suffix
    numbers = [_frame_number(p) for p in frames]
    same_dir = all(p.parent == frames[0].parent for p in frames)
    if (same_dir and None not in numbers and numbers == list(range(numbers[0], numbers[0] + len(frames)))
            and not (frames[0].parent / f"frame_{numbers[-1] + 1:06d}{suffix}").exists()):
        return ["-start_number", str(numbers[0]), "-i", str(frames[0].parent / f"frame_%06d{suffix}")]
    link_dir.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        link = link_dir / f"{index:06d}{suffix}"
        try:
            os.symlink(frame.resolve(), link)
        except OSError:  # no symlinks here (some Windows setups): copy instead
            shutil.copyfile(frame, link)
    return ["-start_number", "0", "-i", str(link_dir / f"%06d{suffix}")]


def _frame_number(path: Path) -> int | None:
    found = re.fullmatch(r"frame_(\d{6})", path.stem)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    duration: float  # seconds, from the container
    codec: str


def probe_video(path: Path) -> VideoInfo:
    """Count a video's frames by reading every packet (no decode), plus its size and duration."""
    args = ["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    text = run_ffmpeg(args, what=f"read {path.name}")
    stream = _VIDEO_STREAM.search(text)
    duration = _DURATION.search(text)
    frames = _FRAME.findall(text)
    if not (stream and duration and frames):
        raise RenderError(f"could not read the frame count, size or duration of {path}:\n{text[-1500:]}")
    h, m, s = duration.groups()
    return VideoInfo(
        frames=int(frames[-1]),
        width=int(stream.group(2)),
        height=int(stream.group(3)),
        duration=int(h) * 3600 + int(m) * 60 + float(s),
        codec=stream.group(1),
    )
