"""`farm submit --watch` watches only the folders that can hold an asset, each once, with few watches.

A user's `farm submit --watch` of the world map printed three watchdog RuntimeWarnings per edit
("Callback with id ... already exists for watch ... It will be Overwritten", each listing every
watched folder: ~18 KB of stderr): the watcher watched the project recursively, so every folder
the run wrote (output/tiles/z/x, .farm/cache/xx) got an inotify watch, and watchdog registered
some twice when they appeared faster than it walked them. The watches are read here from the
kernel (/proc/PID/fdinfo), not from farm.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from conftest import wait_for, write_project
from test_watch_own_writes import CASE, FARM, rounds_in

from farm.cli.watch import ProjectInputs, watch


def watched_inodes(pid: int | str = "self") -> set[int]:
    """The inodes the process's inotify instances watch."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:  # closed meanwhile
            continue
        inodes |= {int(ino, 16) for ino in re.findall(r"^inotify wd:[0-9a-f]+ ino:([0-9a-f]+)", text, re.M)}
    return inodes


def folder_inodes(top: Path) -> set[int]:
    return {Path(folder).stat().st_ino for folder, _, _ in os.walk(top)}


def files_of(project: Path) -> dict[str, str]:
    return {p.relative_to(project).as_posix(): p.read_text() for p in project.rglob("*.txt")
            if not p.relative_to(project).as_posix().startswith(("output/", ".farm/"))}


def test_only_asset_folders_are_watched_new_ones_included(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "synthetic", "jobs = 1", extra='[assets]\nexclude = ["scratch/"]')
    (project / "data" / "sub").mkdir(parents=True)
    (project / "data" / "sub" / "a.txt").write_text("a")
    (project / "scratch" / "deep").mkdir(parents=True)
    (project / "scratch" / "deep" / "x.txt").write_text("x")
    inputs = ProjectInputs(project)
    rounds: list[dict[str, str]] = []  # what each round saw
    stop = threading.Event()

    def run_round() -> None:
        if not rounds:  # a run's own writes: many folders, made fast
            for z in range(5):
                for x in range(2**z):
                    (project / "output" / "tiles" / str(z) / str(x)).mkdir(parents=True)
                    (project / "output" / "tiles" / str(z) / str(x) / "0.png").write_text("tile")
            for xx in range(16):
                (project / ".farm" / "cache" / f"{xx:02x}" / "tmp").mkdir(parents=True)
        rounds.append(files_of(project))

    def saw(rel: str, text: str | None) -> bool:
        return bool(rounds) and rounds[-1].get(rel) == text

    def watched(folder: Path) -> bool:
        return folder.stat().st_ino in watched_inodes()

    watcher = threading.Thread(target=watch, args=(project, "output", run_round), kwargs={
        "fingerprint": inputs.fingerprint, "rules": lambda: inputs.rules, "stop": stop, "debounce": 0.05})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watcher.start()
        try:
            wait_for(lambda: rounds and watched(project / "data" / "sub"), 60, "the first round")
            assert watched(project) and watched(project / "data")

            deep = project / "data" / "new" / "a" / "b" / "c"  # a tree made at once, later
            deep.mkdir(parents=True)
            (deep / "f.txt").write_text("1")
            wait_for(lambda: saw("data/new/a/b/c/f.txt", "1"), 60, "a round for a file in a new tree")
            wait_for(lambda: watched(deep), 60, "a watch on the new tree's deepest folder")
            (deep / "f.txt").write_text("2")  # only the new folder's watch can see this
            wait_for(lambda: saw("data/new/a/b/c/f.txt", "2"), 60, "a round for an edit in the new folder")

            sub = project / "data" / "sub"  # removed and made again: the old watch is gone with it
            shutil.rmtree(sub)
            sub.mkdir()
            (sub / "a.txt").write_text("b")
            wait_for(lambda: saw("data/sub/a.txt", "b"), 60, "a round for the remade folder")
            wait_for(lambda: watched(sub), 60, "a watch on the remade folder")
            (sub / "a.txt").write_text("c")
            wait_for(lambda: saw("data/sub/a.txt", "c"), 60, "a round for an edit in the remade folder")

            never = folder_inodes(project / "output") | folder_inodes(project / ".farm")
            assert not never & watched_inodes(), "the run's own folders are watched"
            assert not folder_inodes(project / "scratch") & watched_inodes(), "an excluded folder is watched"

            toml = project / "farm.toml"  # no longer excluded: watched from now on
            before = len(rounds)
            toml.write_text(toml.read_text().replace('exclude = ["scratch/"]', 'exclude = ["*.tmp"]'))
            wait_for(lambda: len(rounds) > before, 60, "a round for the farm.toml edit")
            wait_for(lambda: watched(project / "scratch" / "deep"), 60, "a watch on scratch/deep")
            (project / "scratch" / "deep" / "x.txt").write_text("y")
            wait_for(lambda: saw("scratch/deep/x.txt", "y"), 60, "a round for an edit in scratch/deep")
        finally:
            stop.set()
            watcher.join(30)
    assert not watcher.is_alive()
    assert not [str(w.message)[:300] for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_big_asset_tree_costs_a_few_watches_not_one_per_folder(tmp_path: Path) -> None:
    """Each watch costs watchdog a thread: a tree with no left-out folder in it is one recursive
    watch, the project folder one of its own (2,000 folders were 2,003 threads, one watch each)."""
    project = write_project(tmp_path / "p", "synthetic", "jobs = 1")
    for a in range(10):
        for b in range(20):
            (project / "textures" / f"set{a}" / f"v{b}").mkdir(parents=True)
    (project / "textures" / "set0" / "v0" / "t.txt").write_text("0")
    inputs, stop, rounds = ProjectInputs(project), threading.Event(), []
    before = threading.active_count()
    watcher = threading.Thread(target=watch, args=(project, "output", lambda: rounds.append(1)), kwargs={
        "fingerprint": inputs.fingerprint, "rules": lambda: inputs.rules, "stop": stop, "debounce": 0.05})
    watcher.start()
    try:
        wait_for(lambda: rounds and folder_inodes(project) <= watched_inodes(), 60, "every folder watched")
        # the watcher, watchdog's observer, and an emitter and its reader per watch: not one per folder
        assert threading.active_count() - before <= 8, [t.name for t in threading.enumerate()]
        (project / "textures" / "set9" / "v19" / "t.txt").write_text("1")  # deep in the recursive watch
        wait_for(lambda: len(rounds) == 2, 60, "a round for an edit deep in the tree")
    finally:
        stop.set()
        watcher.join(30)
    assert not watcher.is_alive()


def test_cli_watch_of_a_tile_set_watches_no_output_and_warns_nothing(tmp_path: Path) -> None:
    project = tmp_path / "watchdata"
    shutil.copytree(CASE, project)
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace('zoom = "1"', 'zoom = "0-3"'))  # tiles/z/x: 15 folders
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([*FARM, "submit", "--agents", "1", "--json", "--watch", "."],
                                cwd=project, stdout=stdout, stderr=stderr)
    try:
        wait_for(lambda: rounds_in(out), 120, "the first round")
        with open(project / "points.csv", "a") as f:
            f.write('"POINT(10 10)",se\n')
        wait_for(lambda: len(rounds_in(out)) >= 2, 120, "a round after an edit")
        assert [r["state"] for r in rounds_in(out)] == ["done", "done"]
        assert len(folder_inodes(project / "output")) > 15
        # its one asset folder and the project folder; the agents' own watches are outside the project
        assert watched_inodes(proc.pid) & folder_inodes(project) == folder_inodes(project / "icons") | {
            project.stat().st_ino}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.read_text()[-2000:]
    assert "Warning" not in err.read_text(), err.read_text()[:2000]


LIMITED = """
import logging, signal, sys, threading
from pathlib import Path
from farm.cli.watch import ProjectInputs, watch
logging.basicConfig(format="%(levelname)s %(message)s")
logging.getLogger("farm").setLevel(logging.DEBUG)
root, stop = Path(sys.argv[1]), threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
inputs = ProjectInputs(root)
watch(root, "output", lambda: print("round", flush=True), fingerprint=inputs.fingerprint,
      rules=lambda: inputs.rules, stop=stop, debounce=0.05)
"""


def test_watch_limit_is_said_once_and_edits_there_still_render(tmp_path: Path) -> None:
    """With room for 3 inotify watches (a user namespace's own limit), 6 folders to watch."""
    project = write_project(tmp_path / "p", "synthetic", "jobs = 1")
    for i in range(5):
        (project / f"d{i}").mkdir()
        (project / f"d{i}" / "f.txt").write_text("0")
    limit = 'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"'
    if subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", limit, "sh", "true"],
                      capture_output=True).returncode:
        pytest.skip("no user namespace with its own inotify limit here")
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "sh", "-c", limit, "sh",
                                 sys.executable, "-c", LIMITED, str(project)], stdout=stdout, stderr=stderr)
    try:
        def rounds() -> int:
            return out.read_text().count("round")

        wait_for(lambda: rounds() == 1 and "cannot watch" in err.read_text(), 60, "the first round")
        assert "cannot watch 3 of the 6 project folders (inotify watch limit reached" in err.read_text()
        watched = watched_inodes(proc.pid)
        assert len(watched) == 3 and project.stat().st_ino in watched
        unwatched = next(f for f in project.glob("d*") if f.stat().st_ino not in watched)
        (unwatched / "f.txt").write_text("1")
        wait_for(lambda: rounds() == 2, 60, "a round for an edit in an unwatched folder")
        checks = err.read_text().count("no round")
        wait_for(lambda: err.read_text().count("no round") >= checks + 2, 60, "two more checks")
        assert err.read_text().count("cannot watch") == 1, err.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.read_text()[-2000:]
