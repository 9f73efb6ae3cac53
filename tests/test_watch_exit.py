"""`farm submit --watch` ends as a single submit does: Ctrl-C in a round says how far it got and
exits 130; Ctrl-C between rounds exits with the last round's status (1 after a failed round or an
edit that does not load), never a silent 0. Real processes, real SIGINT to the process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_for, write_project

FARM = [sys.executable, "-m", "farm"]


class Watching:
    """A `farm submit --watch --json` of `project`, its stdout (one object per round) read as it comes."""

    def __init__(self, project: Path, tmp_path: Path) -> None:
        self.out, self.err = tmp_path / "out", tmp_path / "err"
        with open(self.out, "w") as stdout, open(self.err, "w") as stderr:
            command = [*FARM, "--log-level", "info", "submit", "--watch", "--json", "-n", "1", str(project)]
            self.proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True)

    def rounds(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.endswith("}")]

    def wait_rounds(self, n: int) -> list[dict]:
        return wait_for(lambda: len(self.rounds()) >= n and self.rounds(), 180, f"{n} rounds")

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the agents get it too
        try:
            return self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_ctrl_c_in_a_round_says_so_and_exits_130(tmp_path):
    project = write_project(tmp_path / "slow", "synthetic", "jobs = 4\nsleep = 60\n", name="slow")
    watching = Watching(project, tmp_path)
    wait_for(lambda: "accepted project slow-" in watching.err.read_text(), 120, "the round under way")
    assert watching.ctrl_c() == 130, watching.err.read_text()
    [said] = watching.rounds()
    assert said["state"] == "interrupted" and said["code"] == "interrupted" and said["done"] == 0, said


def test_ctrl_c_after_a_failed_round_exits_1(tmp_path):
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2\n", name="p")
    watching = Watching(project, tmp_path)
    assert watching.wait_rounds(1)[0]["state"] == "done"
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace("jobs = 2", 'jobs = 2\nfail = ["job-0000001"]'))
    assert watching.wait_rounds(2)[1]["state"] == "failed"
    assert watching.ctrl_c() == 1, watching.err.read_text()


def test_ctrl_c_after_an_edit_that_does_not_load_exits_1_and_after_a_good_round_0(tmp_path):
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2\n", name="p")
    watching = Watching(project, tmp_path)
    watching.wait_rounds(1)
    toml = project / "farm.toml"
    good = toml.read_text()
    toml.write_text("[project\n")
    assert watching.wait_rounds(2)[1]["code"] == "invalid"
    toml.write_text(good.replace("jobs = 2", "jobs = 3"))
    assert watching.wait_rounds(3)[2]["state"] == "done"
    toml.write_text("[project\n")
    assert watching.wait_rounds(4)[3]["code"] == "invalid"
    assert watching.ctrl_c() == 1, watching.err.read_text()

    toml.write_text(good)
    (tmp_path / "again").mkdir()
    again = Watching(project, tmp_path / "again")
    assert again.wait_rounds(1)[0]["state"] == "done"
    assert again.ctrl_c() == 0, again.err.read_text()
