"""Finding and running ffmpeg, with its error message kept for the user."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from typing import BinaryIO

from farm.proc import child_dies_with_parent

log = logging.getLogger(__name__)

#: an ffmpeg executable to use instead of imageio-ffmpeg's or the system's
FFMPEG_ENV = "FARM_FFMPEG"
#: flags every ffmpeg call gets: quiet, never reads the terminal
QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error")
#: output flags that make muxers and encoders write the same bytes for the same input
BITEXACT = ("-fflags", "+bitexact", "-flags:a", "+bitexact")


class FfmpegMissing(RuntimeError):
    pass


class FfmpegFailed(RuntimeError):
    """ffmpeg exited non-zero; ``message`` is the tail of what it printed."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        self.message = last_lines(stderr) or f"exit code {returncode}"
        super().__init__(self.message)
        self.args_run = list(args)


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg to run: $FARM_FFMPEG, else imageio-ffmpeg's static build, else ``ffmpeg`` on PATH.

    imageio-ffmpeg comes first so that every node of a farm runs the same build,
    which the bit-exact joins rely on.
    """
    override = os.environ.get(FFMPEG_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise FfmpegMissing(f"${FFMPEG_ENV}={override} is not an executable file")
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # not installed, or its binary is missing for this platform
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise FfmpegMissing(f"no ffmpeg: imageio-ffmpeg failed ({exc}) and none is on PATH") from None


_CONTEXT = re.compile(r"^\[[^\]]*@ ?(0x)?[0-9a-f]+\] ")
_GENERIC = (
    "Error opening output file", "Error opening output files", "Conversion failed!",
    "Error parsing filterchain", "Error parsing a filter description", "Error initializing filters",
    "Error while filtering", "Task finished with error", "Terminating thread",
)


def file_arg(path: os.PathLike[str] | str) -> str:
    """A path as an ffmpeg URL: ``file:`` first, so a name with a colon is never read as a protocol."""
    return f"file:{os.fspath(path)}"


def last_lines(text: str, count: int = 4) -> str:
    """The last meaningful lines of ffmpeg's stderr: usually the real error.

    Progress lines, ffmpeg's generic closing lines and ``[filter @ 0x...]`` prefixes go.
    """
    lines = []
    for raw in text.replace("\r", "\n").splitlines():
        line = _CONTEXT.sub("", raw.strip())
        if line and not line.startswith(_GENERIC) and not line.startswith("size="):
            lines.append(line)
    return "\n".join(lines[-count:])


def run(
    args: Sequence[str],
    *,
    input: bytes | None = None,
    quiet: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with ``args``; raise `FfmpegFailed` on a non-zero exit."""
    cmd = [ffmpeg_exe(), *(QUIET if quiet else ("-hide_banner", "-nostdin")), *args]
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False,
                          preexec_fn=child_dies_with_parent())
    if proc.returncode != 0:
        raise FfmpegFailed(cmd, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc


def send(pipe: int, src: BinaryIO, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes at ``offset`` of ``src`` into ``pipe`` (ffmpeg's stdin); returns how many.

    ``sendfile`` moves them in the kernel, without a copy through Python; where it cannot
    write into a pipe, they are read and written.
    """
    try:
        sent = os.sendfile(pipe, src.fileno(), offset, count)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        src.seek(offset)
        data = memoryview(src.read(count))
        sent = len(data)
        while data:
            data = data[os.write(pipe, data):]
    if sent == 0 and count:
        raise OSError(f"{src.name} ends at byte {offset}")
    return sent


@lru_cache(maxsize=1)
def filter_kinds() -> dict[str, str]:
    """Every filter this ffmpeg has -> its inputs and outputs as ``ffmpeg -filters`` shows them
    (``A->A``: one audio stream in, one out; ``A->N``: a variable number out; ``|->A``: a source)."""
    listing = run(["-filters"]).stdout.decode("utf-8", "replace")
    kinds = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "->" in parts[2]:
            kinds[parts[1]] = parts[2]
    return kinds


def audio_filters() -> frozenset[str]:
    """Names of the filters this ffmpeg has that take audio in and give audio out."""
    return frozenset(name for name, kind in filter_kinds().items() if kind == "A->A")
