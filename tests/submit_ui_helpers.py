"""A real `farm submit --ui` process, and signals sent to it as a terminal (its process group) or
to one of its threads (the kernel may hand a process's signal to any thread that does not block it)."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())  # the futex system call's number


def submit_ui(tmp_path: Path, project: Path, agents: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    # a process group of its own, as a shell's foreground job: killpg is the terminal's Ctrl-C
    command = [sys.executable, "-P", "-m", "farm", "submit", str(project), "--agents", str(agents), "--ui"]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def ended_by(proc: subprocess.Popen[str], send: object = None) -> tuple[str, str]:
    """Send a signal (`send()`; default: Ctrl-C to its process group), then its stdout and stderr
    once it exited; it is killed if it does not exit within 90 s."""
    try:
        send() if callable(send) else os.killpg(proc.pid, signal.SIGINT)
        return proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def another_thread(pid: int, sig: int) -> int:
    """A thread of process `pid`, not its main one, that does not block `sig`: `os.kill` of its id
    hands the process that signal through this thread (Linux tries the thread named first)."""
    for tid in sorted(int(name) for name in os.listdir(f"/proc/{pid}/task")):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        if tid != pid and not blocked & 1 << (sig - 1):
            return tid
    raise AssertionError(f"no thread of {pid} but its main one takes signal {sig}")


def main_thread_waits(pid: int) -> bool:
    """Whether the main thread of `pid` sleeps on a futex (a lock, an event): a signal handed to
    another thread then reaches Python only once it wakes."""
    task = Path(f"/proc/{pid}/task/{pid}")
    if "futex" in (task / "wchan").read_text():
        return True
    call = (task / "syscall").read_text().split()
    return FUTEX is not None and (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "S" \
        and call[:1] == [str(FUTEX)]
