"""SQLite files that several processes create and open at the same moment (`farm.sqlitewal`).

Two local agents of one ``farm submit`` share the user's cache folder: on a fresh one they create
its index (and hash cache) together. ``PRAGMA journal_mode=WAL`` then answered one of them
"database is locked" at once, never waiting out its timeout, and its first fetch failed.

Real processes, released together by one write to a pipe they all wait on (one pipe a round, so a
quick one cannot take a slow one's turn), each opening the same fresh file and writing to it first
thing. Every write must land, in the file (not in a memory fallback). In the first test another
connection holds the fresh file's write lock, as an agent creating it does, until every process
says it waits for it: the old answer came at once, every time. The second is the race itself,
repeated over fresh folders, since on a loaded machine one round may not overlap.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from farm.filesync import Store
from farm.filesync.hashcache import HashCache

PROCESSES = 16
ROUNDS = 24
BLOCK = 4096
HASHES = b"h" * 32
WAITING = "waiting\n"  # a process's line when it waits for another's set-up (farm.sqlitewal says so)

# argv: kind, base folder, own name, the fds of the pipes that release each round (comma-separated)
CHILD = r"""
import json, logging, os, sys
from pathlib import Path
from farm.filesync import Manifest, Store
from farm.filesync.hashcache import RACY_NS, HashCache

kind, base, me, gos = sys.argv[1], Path(sys.argv[2]), sys.argv[3], [int(fd) for fd in sys.argv[4].split(",")]
said = []
class Keep(logging.Handler):
    def emit(self, record):
        said.append(f"{record.levelname} {record.name}: {record.getMessage()}")
class Waiting(logging.Handler):
    def emit(self, record):
        if not waited:
            waited.append(record)
            print("waiting", flush=True)
logging.getLogger("farm").addHandler(Keep(logging.INFO))
logging.getLogger("farm").setLevel(logging.INFO)
logging.getLogger("farm.sqlitewal").addHandler(Waiting())
logging.getLogger("farm.sqlitewal").setLevel(logging.DEBUG)
st = os.stat(base / "hashed")
for r, go in enumerate(gos):
    waited = []
    print("ready", flush=True)
    if not os.read(go, 1):
        break  # the test stopped early
    folder = base / str(r)
    try:
        if kind == "store":
            with Store(folder / "cache") as store:
                store.remember_tree(me, Manifest([]))
        else:
            with HashCache.in_dir(folder) as cache:
                cache.put(me, st, 4096, b"h" * 32, st.st_mtime_ns + 2 * RACY_NS)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"error": error, "said": said}), flush=True)
    said.clear()
"""


def _file(kind: str, folder: Path) -> Path:
    return folder / "cache" / "index.sqlite" if kind == "store" else folder / "hashcache.sqlite"


def _missing(kind: str, folder: Path, names: list[str], st: os.stat_result) -> list[str]:
    """The names whose write is not in the file."""
    if kind == "store":
        with Store(folder / "cache") as store:
            return [n for n in names if store.tree_manifest(n) is None]
    with HashCache.in_dir(folder) as cache:
        return [n for n in names if cache.get(n, st, BLOCK) != HASHES]


class Processes:
    """`PROCESSES` children doing one open-and-write a round, released together."""

    def __init__(self, kind: str, base: Path, rounds: int) -> None:
        self.kind, self.base = kind, base
        (base / "hashed").write_bytes(b"x")
        self.st = os.stat(base / "hashed")
        self.names = [f"process-{i}" for i in range(PROCESSES)]
        gos = [os.pipe() for _ in range(rounds)]
        self.unsent = [w for _, w in gos]
        reads = [r for r, _ in gos]
        self.children: list[subprocess.Popen[str]] = []
        try:
            for name in self.names:
                with open(base / f"{name}.err", "wb") as err:
                    self.children.append(subprocess.Popen(
                        [sys.executable, "-c", CHILD, kind, str(base), name, ",".join(map(str, reads))],
                        stdout=subprocess.PIPE, stderr=err, pass_fds=reads, text=True))
        finally:
            for fd in reads:
                os.close(fd)

    def line(self, name: str, child: subprocess.Popen[str]) -> str:
        line = child.stdout.readline()
        assert line, f"{name} died: {(self.base / f'{name}.err').read_text()}"
        return line

    def release(self) -> None:
        """Wait until every child is ready, then let them all go at once (one byte each)."""
        for name, child in zip(self.names, self.children):
            assert self.line(name, child) == "ready\n"
        go = self.unsent.pop(0)
        os.write(go, b"g" * PROCESSES)
        os.close(go)

    def answers(self) -> list[str]:
        """Each child's failure this round, if any (a wait said before its answer is no failure)."""
        failed = []
        for name, child in zip(self.names, self.children):
            while (line := self.line(name, child)) == WAITING:
                pass
            answer = json.loads(line)
            if answer["error"] or answer["said"]:
                failed.append(f"{name}: {answer['error']} {answer['said']}")
        return failed

    def close(self) -> None:
        for fd in self.unsent:
            os.close(fd)  # children still waiting read the end and stop
        for child in self.children:
            child.wait()
            child.stdout.close()


@contextmanager
def processes(kind: str, base: Path, rounds: int) -> Iterator[Processes]:
    procs = Processes(kind, base, rounds)
    try:
        yield procs
    finally:
        procs.close()


@pytest.mark.parametrize("kind", ["store", "hashcache"])
def test_processes_opening_a_fresh_file_another_is_setting_up_wait_for_it(tmp_path: Path, kind: str) -> None:
    path = _file(kind, tmp_path / "0")
    path.parent.mkdir(mode=0o700, parents=True)
    path.touch(mode=0o600)
    with processes(kind, tmp_path, rounds=1) as procs:
        creator = sqlite3.connect(path, isolation_level=None)
        try:  # closed before the children are waited for: its lock released, whatever failed
            creator.execute("BEGIN IMMEDIATE")  # the write lock, as an agent creating the file holds it
            procs.release()
            for name, child in zip(procs.names, procs.children):
                line = procs.line(name, child)
                assert line == WAITING, f"{name} did not wait for the file's creator: {line}"
            creator.execute("COMMIT")
        finally:
            creator.close()
        failed = procs.answers()
        assert not failed, failed
        missing = _missing(kind, tmp_path / "0", procs.names, procs.st)
        assert not missing, f"the writes of {missing} are not in the file"

@pytest.mark.parametrize("kind", ["store", "hashcache"])
def test_processes_creating_one_file_at_once_all_write_to_it(tmp_path: Path, kind: str) -> None:
    with processes(kind, tmp_path, ROUNDS) as procs:
        for r in range(ROUNDS):
            procs.release()
            failed = procs.answers()
            missing = _missing(kind, tmp_path / str(r), procs.names, procs.st)
            assert not missing, f"round {r}: the writes of {missing} are not in the file; {failed}"
            assert not failed, f"round {r}: {failed}"
