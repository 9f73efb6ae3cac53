"""The ``audio`` media type (ffmpeg): filter chains rendered in sample-exact segments, encoded once.

Modules, one job each: `ffmpeg` (finding and running it), `probe` (stream format and
exact length), `chain` (reading a filter chain, writing it for ffmpeg, sizing lead-ins),
`allow` (the filters and options allowed to run), `validate` (running a chain on a
generated signal), `splitcheck` (does it split: segments against a whole run),
`loudnorm` (its two passes and what a measurement means), `config` (the ``[audio]``
table), `segments` (sample ranges), `source` (the input: FLAC and WAV read in place, each
job its own range; others decoded once per worker, in the background), `render` (one
segment's PCM streams, loudnorm's analysis), `join` (a stream's segments into one PCM file
as they arrive), `encode` (output formats, the segments' PCM streams), `stream` (one
ffmpeg encoding every output, fed while the joins fill),
`failedrun` (what a run with failed jobs leaves and says),
`verdicts` (split-check verdicts kept on disk), `checkcache` (the other load checks' findings
kept on disk), `facts` (the renderer facts a submitter sends, checked), `preview` (the
dashboard's live preview), `media` (the MediaType).
"""

from __future__ import annotations

from farm.hookspecs import hookimpl
from farm_audio.media import AudioSegments

__version__ = "1.1.0"
__all__ = ["AudioSegments"]


@hookimpl
def farm_register_media_types(register):  # type: ignore[no-untyped-def]
    register(AudioSegments)
