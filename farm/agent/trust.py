"""What an agent checks before it acts on its controller's word.

A controller may be an impostor or broken, so the agent takes from it only what it must:
jobs of the media types this node advertised, identifiers that cannot name a path outside
the agent's folders, and projects whose files it fetches itself into its own folder (never a
folder of the controller's choosing). The plugin's own checks on the settings run in the
worker (`farm.project.Project.reconfigure`), since the agent itself never runs plugin code.
Each function returns why it refuses, or None; the agent fails the affected jobs with it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from farm.errors import ProtocolError
from farm.ids import BadIdentifier, check_key, check_name
from farm.project import Project

MAX_TIMEOUT_S = 7 * 24 * 3600.0


def project_refusal(project_id: Any, description: Any, media_types: Collection[str]) -> str | None:
    """Why this node will not work on a project its controller described, or None."""
    try:
        check_name(project_id, "project id")
        project = Project.from_wire(description)
    except (BadIdentifier, ProtocolError) as exc:
        return str(exc)
    if project.media_type not in media_types:
        return (f"media type {project.media_type!r} is not one this agent advertised "
                f"({', '.join(sorted(media_types)) or 'none'})")
    assets = description.get("assets")
    if not isinstance(assets, dict) or not isinstance(assets.get("tree"), str) or not assets["tree"]:
        return ("the controller did not publish the project's files; "
                "an agent renders only files it fetched itself")
    return None


def job_refusal(key: Any, deps: Any, timeout: Any) -> str | None:
    """Why a job (its key, its dependencies' results, its timeout; shape already checked by
    `farm.protocol`) cannot run here, or None."""
    try:
        check_key(key)
        if deps is not None and not isinstance(deps, dict):
            return f"job {key!r}: its dependencies' results must be a map, got {type(deps).__name__}"
        for dep in deps or ():
            check_key(dep, "dependency key")
    except BadIdentifier as exc:
        return str(exc)
    if isinstance(timeout, bool) or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        return f"job {key!r}: timeout {timeout!r} is not a number of seconds in (0, {MAX_TIMEOUT_S:g}]"
    return None


def project_folder(scratch: Path, project_id: str) -> Path:
    """The agent's own folder for a project: named from a digest of its id, never from the id."""
    return scratch / "projects" / hashlib.sha256(project_id.encode()).hexdigest()[:24]
