"""`farm submit --watch`: a round only when what the jobs read changed, never for the run's own writes.

The case `watch-own-writes` (tests/cases/): `farm submit --json --watch . > ./log` re-rendered
again and again with no edit, because each round's JSON line changed ./log, a project file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import wait_for, write_project

from farm.cli.watch import ProjectInputs, watch

CASE = Path(__file__).parent / "cases" / "watch-own-writes"
FARM = [sys.executable, "-m", "farm"]
NO_ROUND = "nothing a job reads"


def rounds_in(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_case_redirected_json_log_and_touches_start_no_round(tmp_path: Path) -> None:
    project = tmp_path / "watchdata"
    shutil.copytree(CASE, project)
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace("[maptiles]", '[assets]\nexclude = ["*.tmp"]\n\n[maptiles]'))
    log, err = project / "log", tmp_path / "err"
    with open(log, "w") as out, open(err, "w") as errors:  # `> ./log`, as the case's run_loop.sh does
        proc = subprocess.Popen(
            [*FARM, "--log-level", "debug", "submit", "--agents", "1", "--json", "--watch", "."],
            cwd=project,
            stdout=out,
            stderr=errors,
        )
    try:

        def checks() -> int:
            return err.read_text().count(NO_ROUND)

        wait_for(lambda: rounds_in(log), 120, "the first round")
        # the first round's JSON line in ./log wakes the watcher once; it must find nothing changed
        wait_for(lambda: checks() >= 1, 60, "the check after the first round's own log line")

        def append_to_log() -> None:
            with log.open("a") as f:
                f.write("a redirect-like writer appends\n" * 100)

        def output_and_touch() -> None:
            (project / "output" / "extra.txt").write_text("in the output folder")  # wakes nothing
            (project / "points.csv").touch()

        for step, act in enumerate(
            [
                append_to_log,  # ./log, by inode
                lambda: os.utime(project / "style.xml"),  # mtime only
                lambda: (project / "notes.tmp").write_text("matches [assets] exclude"),
                lambda: (project / "style.xml").write_bytes(
                    (project / "style.xml").read_bytes()
                ),  # same bytes
                output_and_touch,
            ],
            start=2,
        ):
            act()
            wait_for(lambda step=step: checks() >= step, 60, f"the watcher's check after change {step}")
        assert len(rounds_in(log)) == 1, log.read_text()

        with open(project / "points.csv", "a") as f:  # a real edit still renders
            f.write('"POINT(10 10)",se\n')
        wait_for(lambda: len(rounds_in(log)) >= 2, 120, "a round after a real edit")
        assert [r["state"] for r in rounds_in(log)] == ["done", "done"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.read_text()[-2000:]
    assert len(rounds_in(log)) == 2
    assert "changed since it was published" not in err.read_text()  # ./log is no asset to fetch


def test_project_inputs_change_only_with_content(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p", "synthetic", "jobs = 2", extra='[assets]\nexclude = ["scratch/**"]'
    )
    (project / "data.txt").write_text("one")
    (project / "scratch").mkdir()
    log = project / "run.log"
    log.write_text("")
    st = log.stat()
    inputs = ProjectInputs(project, skip={(st.st_dev, st.st_ino)})
    first = inputs.fingerprint()

    os.utime(project / "data.txt", ns=(1, 1))  # mtime only
    (project / "scratch" / "x").write_text("excluded")  # [assets] exclude
    log.write_text("a log line\n")  # a redirect target
    (project / "output").mkdir()
    (project / "output" / "tile.png").write_text("an output")  # the run's outputs
    (project / ".farm").mkdir()
    (project / ".farm" / "journal").write_text("state")  # the run's state
    assert inputs.fingerprint() == first

    data = project / "data.txt"
    before = data.stat()
    data.write_text("two")  # same size, same mtime: still a change
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = inputs.fingerprint()
    assert changed != first
    (project / "new.txt").write_text("")  # a new asset
    assert inputs.fingerprint() != changed

    good = (project / "farm.toml").read_text()
    (project / "farm.toml").write_text(good + "[broken\n")
    broken = inputs.fingerprint()
    assert broken[0] == "invalid" and "farm.toml" in broken[1]
    (project / "farm.toml").write_text(good)
    assert inputs.fingerprint() != broken


def test_watch_ignores_a_writer_appending_all_along(tmp_path: Path) -> None:
    """A log appended to while rounds run, as `> ./log` does, wakes the watcher but starts no round."""
    project = write_project(tmp_path / "p", "synthetic", "jobs = 1")
    log = project / "log"
    log.write_text("")
    st = log.stat()
    inputs = ProjectInputs(project, skip={(st.st_dev, st.st_ino)})
    checks, rounds = [], []
    stop, writing = threading.Event(), threading.Event()

    def fingerprint() -> object:
        checks.append(1)
        return inputs.fingerprint()

    def writer() -> None:
        writing.set()
        with open(log, "a") as f:
            while not stop.is_set():
                f.write("progress\n")
                f.flush()
                stop.wait(0.01)  # never a pause as long as the debounce

    def run_round() -> None:
        rounds.append(1)
        if len(rounds) == 1:
            threading.Thread(target=writer, daemon=True).start()
            writing.wait()

    watcher = threading.Thread(
        target=watch,
        args=(project, "output", run_round),
        kwargs={"fingerprint": fingerprint, "stop": stop, "debounce": 0.05, "settle_limit": 0.3},
    )
    watcher.start()
    try:
        wait_for(lambda: len(checks) >= 6, 60, "five checks while the log grows")
        assert len(rounds) == 1
        (project / "input.txt").write_text("an edit")
        wait_for(lambda: len(rounds) == 2, 60, "a round after a real edit")
    finally:
        stop.set()
        watcher.join(30)
    assert not watcher.is_alive()


def test_json_watch_prints_one_object_per_round_bad_edits_included(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2")
    out, err = tmp_path / "out.jsonl", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", "--agents", "1", "--json", "--watch", str(project)],
                                stdout=stdout, stderr=stderr)
    try:
        wait_for(lambda: rounds_in(out), 120, "the first round")
        good = (project / "farm.toml").read_text()
        (project / "farm.toml").write_text(good.replace("jobs = 2", 'jobs = "two"'))
        wait_for(lambda: len(rounds_in(out)) >= 2, 60, "the round of the bad edit")
        (project / "farm.toml").write_text(good.replace("jobs = 2", "jobs = 3"))
        wait_for(lambda: len(rounds_in(out)) >= 3, 120, "the round after the fix")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.read_text()[-2000:]
    first, bad, fixed = rounds_in(out)
    assert first["state"] == "done" and fixed["state"] == "done" and fixed["jobs"]["total"] == 3
    assert bad["state"] == "invalid" and "[synthetic] jobs" in bad["error"]
    assert len(out.read_text().splitlines()) == 3  # nothing else on standard output
