"""A job's outputs as an agent sends them: checked (names, sizes, digests, the job's limit), then staged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blake3 import blake3

from farm.errors import ProtocolError
from farm.ids import BadIdentifier, check_key
from farm.paths import UnsafePath, safe_relpath


def stage(folder: Path, names: list[list[Any]], payloads: list[bytes]) -> dict[str, Path]:
    """Write a result's files to a staging folder, verified, refusing names that leave it."""
    if len(names) != len(payloads):
        raise ProtocolError(f"result lists {len(names)} files but carries {len(payloads)}")
    outputs: dict[str, Path] = {}
    for entry, data in zip(names, payloads, strict=True):
        if len(entry) != 3 or not isinstance(entry[0], str) or entry[1] != len(data):
            raise ProtocolError(f"bad file entry {str(entry)[:80]} (or size mismatch)")
        if blake3(data).digest() != entry[2]:
            raise ProtocolError(f"output {entry[0]!r} failed verification (its digest does not match)")
        try:
            rel = check_key(safe_relpath(entry[0]), "output name")
        except (UnsafePath, BadIdentifier) as exc:
            raise ProtocolError(str(exc)) from None
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        outputs[rel] = path
    return outputs


def oversize(names: list[list[Any]], payloads: list[bytes], limit: int) -> str | None:
    """Why a result's outputs are over its job's limit, if they are (checked before staging)."""
    declared = sum(max(e[1], 0) for e in names if len(e) > 1 and isinstance(e[1], int))
    declared = max(declared, sum(map(len, payloads)))
    if declared <= limit:
        return None
    return (f"its outputs are {declared / 2**20:.1f} MiB, over the job's limit of {limit / 2**20:.1f} MiB "
            "([jobs] max_output_mib)")

