"""Paths confined at the moment of use (security case publish-swap) and the controller's files at rest.

The file service opens what it serves beneath the tree's root descriptor with no symlink
on the way and checks each block against the manifest, so swapping a published folder
for a link serves nothing new; the controller's state is private to its user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
from hostile_helpers import as_nobody, nobody_folder

from farm import safeopen
from farm.client import submit
from farm.filesync import FileServer, build_manifest, wire
from farm.filesync.errors import UnsafeFile
from farm.project import load_project
from farm.protocol import unpack

SECRET = b"the root-only secret, byte for byte\n" * 100


def get_block(endpoint: str, block_hash: bytes, length: int) -> tuple[dict, list[bytes]]:
    """One raw GET of a whole block, as a hostile client would send it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(wire.request_frames(wire.GET, 1, {"items": [[block_hash, 0, length]]}))
        assert sock.poll(20_000), "the file service did not answer"
        frames = sock.recv_multipart()
        body = unpack(frames[:2]).body
        return body, [bytes(f) for f in frames[2:]]
    finally:
        sock.close(0)


def _swap_for_link(folder: str, target: str) -> None:
    os.rename(folder, folder + ".old")
    os.symlink(target, folder)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    (folder / "shadow").write_bytes(SECRET)
    return folder


def decoy_tree(folder: Path, secret: Path) -> Path:
    """d/a.txt, and d/shadow: a decoy with the secret's size and mtime, as in the write-up."""
    tree = folder / "proj"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "a.txt").write_bytes(b"harmless\n")
    (tree / "d" / "shadow").write_bytes(b"x" * len(SECRET))
    st = os.stat(secret / "shadow")
    os.utime(tree / "d" / "shadow", ns=(st.st_atime_ns, st.st_mtime_ns))
    for path in (tree, tree / "d", tree / "d" / "a.txt", tree / "d" / "shadow"):
        os.chown(path, 65534, 65534)
    return tree


@pytest.mark.parametrize("swap", ["folder", "root"])
def test_a_published_folder_swapped_for_a_link_serves_nothing_of_its_target(secret, swap):
    with nobody_folder() as folder, FileServer() as server:
        tree = decoy_tree(folder, secret)
        manifest = build_manifest(tree)
        server.publish("attack", tree, manifest)
        first = manifest.get("d/a.txt")
        body, payloads = get_block(server.endpoint, first.block_hash(0), first.size)
        assert body["ok"] and payloads == [b"harmless\n"]
        if swap == "folder":  # d becomes a link to the secret's folder
            as_nobody(_swap_for_link, str(tree / "d"), str(secret))
        else:  # the whole project folder becomes a link to a copy of its layout holding the secret
            (secret / "d").mkdir()
            os.link(secret / "shadow", secret / "d" / "shadow")
            as_nobody(_swap_for_link, str(tree), str(secret))
        shadow = manifest.get("d/shadow")
        body, payloads = get_block(server.endpoint, shadow.block_hash(0), shadow.size)
        assert SECRET not in payloads, "the file service served the root-only file"
        if swap == "folder":
            assert not body["ok"] and "symlink" in body["error"], body
        else:  # the root was pinned when published: what is served is still the decoy
            assert body["ok"] and payloads == [b"x" * len(SECRET)], body


def test_a_published_file_changed_in_place_is_refused_by_its_digest(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"a" * 1000)
    manifest = build_manifest(tree)
    st = os.stat(tree / "f")
    (tree / "f").write_bytes(b"b" * 1000)  # same size and mtime: only the content differs
    os.utime(tree / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    with FileServer() as server:
        server.publish("t", tree, manifest)
        entry = manifest.get("f")
        body, payloads = get_block(server.endpoint, entry.block_hash(0), entry.size)
    assert not body["ok"] and "no longer holds what was published" in body["error"] and not payloads


def test_a_link_inside_the_tree_is_still_served(tmp_path):
    """Links that stay inside the tree are resolved first; only the open itself refuses links."""
    tree = tmp_path / "tree"
    (tree / "textures").mkdir(parents=True)
    (tree / "textures" / "wood.png").write_bytes(b"wood")
    os.symlink("textures", tree / "tex")
    os.symlink("wood.png", tree / "textures" / "oak.png")
    manifest = build_manifest(tree, ["tex/wood.png", "textures/oak.png"])
    with FileServer() as server:
        server.publish("t", tree, manifest)
        for rel in ("tex/wood.png", "textures/oak.png"):
            entry = manifest.get(rel)
            body, payloads = get_block(server.endpoint, entry.block_hash(0), entry.size)
            assert body["ok"] and payloads == [b"wood"], body


@pytest.mark.parametrize("fallback", [False, True])
def test_open_beneath_refuses_a_symlink_at_any_component(tmp_path, secret, monkeypatch, fallback):
    if fallback:  # as on a kernel without openat2
        monkeypatch.setattr(safeopen, "_have_openat2", False)
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"ok")
    os.symlink(secret, root / "a" / "link")
    os.symlink(secret / "shadow", root / "a" / "b" / "flink")
    os.symlink("b", root / "a" / "inside")  # even a link that stays inside: the caller resolves those first
    fd = safeopen.open_dir(str(root))
    try:
        with os.fdopen(safeopen.open_beneath(fd, "a/b/f"), "rb") as handle:
            assert handle.read() == b"ok"
        for rel in ("a/link/shadow", "a/b/flink", "a/inside/f", "a/link"):
            with pytest.raises(safeopen.SymlinkRefused):
                os.close(safeopen.open_beneath(fd, rel))
        for rel in ("../root-only/shadow", "/etc/passwd", "a/\x00"):
            with pytest.raises(safeopen.UnsafePath):
                os.close(safeopen.open_beneath(fd, rel))
    finally:
        os.close(fd)
    with pytest.raises(safeopen.SymlinkRefused):
        safeopen.open_dir(str(root / "a" / "link"))


def test_scanning_refuses_a_folder_that_became_a_link_out(tmp_path, secret):
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "shadow").write_bytes(b"decoy")
    os.rename(tree / "d", tmp_path / "d.old")
    os.symlink(secret, tree / "d")
    with pytest.raises(UnsafeFile):
        build_manifest(tree, ["d/shadow"])


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_controllers_files_at_rest_are_private(tmp_path, agents, synthetic):
    from farm.controller.server import Controller

    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # left open by an older version: tightened at start
    (state / "journal.sqlite").touch(mode=0o644)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4).start()
    try:
        agents(ctl.url, 1)
        project = load_project(synthetic(jobs=4, output_bytes=16, cache=True))
        assert submit(ctl.url, project, upload=True).ok  # through uploads/, staging/ and the job cache
        journal = sorted(state.glob("journal.sqlite*"))
        hashes = sorted(state.glob("hashes.sqlite*"))
        assert len(journal) >= 2 and hashes
        for path in journal + hashes:
            assert mode(path) == 0o600, f"{path.name} is {mode(path):o}"
        for folder in (state, state / "uploads", state / "staging", state / "cache"):
            assert mode(folder) == 0o700, f"{folder} is {mode(folder):o}"
        assert any((state / "uploads").iterdir()) and any((state / "cache").iterdir())
    finally:
        ctl.stop(shutdown_agents=True)
