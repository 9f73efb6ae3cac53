"""The per-job path made cheap keeps its checks: results of projects placed in place, scratch
folders watched instead of listed. Real agents' parts, real files, real inotify."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm.agent.agent import Agent
from farm.agent.emptydir import Folder, Watch
from farm.filesync import build_manifest
from farm.filesync.localview import LocalView, local_hint
from farm.protocol import JobResult


def test_every_result_of_a_turn_fails_when_its_placed_files_changed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello")
    view = LocalView.make(local_hint(src), build_manifest(src), tmp_path / "dest")
    assert view is not None
    if not view.linked:
        pytest.skip("this filesystem reflinks: an edit of the source never reaches the job")
    agent = Agent("tcp://127.0.0.1:9", slots=1, scratch=tmp_path / "scratch")
    try:
        agent.sync.views["p1"] = view
        for i in range(5):  # all delivered within one loop turn
            agent.deliver(JobResult(f"lease-{i}", True, {"i": i}), [], "p1")
        with open(src / "a.txt", "r+b") as f:  # in place: the hard link shares the inode
            f.write(b"J")
        agent._check_placed()
        assert [(r.lease, r.ok) for r, _ in agent.outgoing] == [(f"lease-{i}", False) for i in range(5)]
        assert all("a.txt was modified" in (r.error or "") for r, _ in agent.outgoing)
        assert "p1" not in agent.sync.views  # placed afresh before its next job
    finally:
        agent.zctx.term()
        agent.scratch_hold.release()


@pytest.fixture
def watch():
    found = Watch()
    yield found
    found.close()


def test_a_watched_folder_is_empty_until_anything_appears_in_it(tmp_path, watch):
    folder = Folder(tmp_path / "out", watch)
    assert folder.is_empty() and folder.is_empty()
    if watch.fd < 0:
        pytest.skip("no inotify here: every answer is a listing")
    assert folder.known_empty  # the second answer came from the event queue
    (folder.path / "a.bin").write_bytes(b"x")
    assert not folder.is_empty() and folder.files() == [folder.path / "a.bin"]
    folder.clear()
    assert folder.is_empty()
    for make in (lambda p: (p / "sub").mkdir(),  # a folder, then a file in it
                 lambda p: os.link(tmp_path / "outside", p / "linked"),  # a hard link
                 lambda p: os.rename(tmp_path / "moved", p / "moved"),  # a file moved in
                 lambda p: os.symlink("/etc/passwd", p / "symlink")):
        (tmp_path / "outside").write_bytes(b"o")
        (tmp_path / "moved").write_bytes(b"m")
        assert folder.is_empty()
        make(folder.path)
        assert not folder.is_empty(), make
        folder.clear()
        (tmp_path / "outside").unlink()


def test_a_folder_replaced_behind_the_watch_is_listed_again(tmp_path, watch):
    folder = Folder(tmp_path / "work", watch)
    assert folder.is_empty() and folder.is_empty()
    os.rename(folder.path, tmp_path / "old")  # the watched folder moves away; another takes its name
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "left.txt").write_text("x")
    assert not folder.is_empty()
    folder.clear()
    assert folder.is_empty()
    os.rename(tmp_path / "old", tmp_path / "old2")  # the old folder's events no longer concern it
    assert folder.is_empty()
    (folder.path / "new.txt").write_text("y")  # the new folder is watched
    assert not folder.is_empty()


def test_a_lost_event_queue_trusts_no_folder(tmp_path, watch):
    if watch.fd < 0:
        pytest.skip("no inotify here")
    a, b = Folder(tmp_path / "a", watch), Folder(tmp_path / "b", watch)
    assert a.is_empty() and b.is_empty() and a.known_empty and b.known_empty
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queue > 200_000:
        pytest.skip("the event queue is too long to overflow quickly here")
    for i in range(queue + 10):  # more events than the queue holds: it overflows
        (b.path / f"{i}").touch()
        os.unlink(b.path / f"{i}")
    assert b.is_empty()  # listed again: every file is gone
    assert not a.known_empty  # its events may be among the lost: its next answer is a listing
    (a.path / "x").touch()
    assert not a.is_empty()


def test_a_folder_a_job_removed_is_made_again(tmp_path, watch):
    folder = Folder(tmp_path / "out", watch)
    assert folder.is_empty() and folder.is_empty()
    (folder.path / "a.bin").write_bytes(b"x")
    folder.path.joinpath("a.bin").unlink()
    folder.path.rmdir()  # a render that removed its output folder
    assert folder.is_empty() and folder.path.is_dir()
    (folder.path / "b.bin").write_bytes(b"y")  # the new folder is watched
    assert folder.files() == [folder.path / "b.bin"]
