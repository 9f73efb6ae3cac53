"""Bounds on what one side accepts from the other: sizes, counts, path lengths."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class Limits:
    """Limits applied to manifests and transfers, on both sides.

    The defaults fit large render projects; a controller facing untrusted clients can
    pass tighter ones to `FileServer`.
    """

    max_files: int = 200_000
    max_file_size: int = 1 * TiB
    max_total_size: int = 4 * TiB
    max_path_bytes: int = 4096
    max_manifest_bytes: int = 64 * MiB  # an encoded manifest travels as one raw frame
    max_chunk: int = 4 * MiB  # the most bytes one request may ask for or carry
    max_items: int = 1024  # blocks or chunks named in one request


DEFAULT_LIMITS = Limits()
