"""Assembling the finished frames: the video, and a contact sheet to eyeball it."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from farm.errors import RenderError
from farm_frames.ffmpeg import VideoInfo, probe_video, run_ffmpeg, sequence_input


@dataclass(frozen=True)
class Codec:
    encoder: str
    suffix: str
    default_crf: int
    max_crf: int
    extra: tuple[str, ...] = ()


CODECS: dict[str, Codec] = {
    # +faststart puts the index first, so a browser plays it before it has it all
    "h264": Codec("libx264", ".mp4", 18, 51, ("-movflags", "+faststart")),
    # -b:v 0 makes -crf a pure quality target (constant quality mode) for libvpx
    "vp9": Codec("libvpx-vp9", ".webm", 31, 63, ("-b:v", "0", "-row-mt", "1")),
}

#: EXR frames are scene-linear; the video is a preview, so a plain sRGB transfer will do. zscale
#: is pinned to planar float RGB on both sides: left free it negotiates a subsampled YUV output,
#: which it cannot make for an odd width or height (the pad to even sizes only comes after it).
_EXR_TO_SRGB = (
    "format=gbrpf32le,"
    "zscale=transferin=linear:transfer=iec61966-2-1:primariesin=bt709:primaries=bt709,"
    "format=gbrpf32le"
)
#: yuv420p needs even sizes: pad odd ones by a pixel rather than fail
_EVEN_PAD = "pad=ceil(iw/2)*2:ceil(ih/2)*2"


def _input_filters(frames: Sequence[Path]) -> list[str]:
    return [_EXR_TO_SRGB] if frames[0].suffix.lower() == ".exr" else []


def encode_video(frames: Sequence[Path], out: Path, *, fps: float, codec: str, crf: int) -> VideoInfo:
    """Encode ``frames`` in order into ``out`` and check it holds exactly that many frames."""
    spec = CODECS[codec]
    vf = ",".join([*_input_filters(frames), _EVEN_PAD, "format=yuv420p"])
    with _partial(out) as partial, tempfile.TemporaryDirectory(prefix="farm-frames-") as tmp:
        source = sequence_input(frames, link_dir=Path(tmp))
        report = run_ffmpeg(
            ["-y", "-framerate", f"{fps:g}", *source, "-vf", vf, "-c:v", spec.encoder,
             "-pix_fmt", "yuv420p", "-crf", str(crf), *spec.extra, "-an", str(partial)],
            what=f"encode {out.name}",
        )
        info = probe_video(partial)
        if info.frames != len(frames):
            # ffmpeg skips a frame it cannot decode and exits 0: say why, in its words
            errors = [line for line in report.splitlines() if "error" in line.lower()][-5:]
            why = ("; ffmpeg said:\n" + "\n".join(errors)) if errors else ""
            raise RenderError(f"{out.name}: ffmpeg wrote {info.frames} frames, expected {len(frames)}{why}")
    return info


def contact_sheet(frames: Sequence[Path], out: Path, *, count: int = 16, thumb_width: int = 240) -> Path:
    """A grid of up to ``count`` frames spread evenly over the sequence, first and last included."""
    picked = pick_evenly(frames, count)
    columns = math.ceil(math.sqrt(len(picked)))
    rows = math.ceil(len(picked) / columns)
    filters = [
        *_input_filters(frames),
        f"scale='min({thumb_width},iw)':-2",
        f"tile={columns}x{rows}:padding=2:margin=2:color=white",
    ]
    with _partial(out) as partial, tempfile.TemporaryDirectory(prefix="farm-frames-") as tmp:
        source = sequence_input(picked, link_dir=Path(tmp))
        run_ffmpeg(
            ["-y", *source, "-vf", ",".join(filters), "-frames:v", "1", "-update", "1", str(partial)],
            what=f"make the contact sheet {out.name}",
        )
    return out


@contextmanager
def _partial(out: Path) -> Iterator[Path]:
    """A hidden temporary name beside ``out`` (same file system, so the rename is atomic).

    ``out`` gets the file only if the block succeeds; on any failure the partial file is
    removed, so a failed finalize leaves no half-written video behind.
    """
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        yield partial
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def pick_evenly(items: Sequence[Path], count: int) -> list[Path]:
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]
