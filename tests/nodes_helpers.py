"""Looking at processes from tests: who is whose child, who is gone (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()  # [state, ppid, pgrp, ...]; the name may hold spaces


def gone(pid: int) -> bool:
    """Whether process `pid` no longer runs (a zombie is gone for our purposes)."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def workers_of(agent_pid: int) -> list[int]:
    """The `farm.agent.worker` processes an agent started."""
    return [pid for pid in children(agent_pid) if "farm.agent.worker" in command_line(pid)]
