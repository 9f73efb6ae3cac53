"""The agent's cache, job-folder materialisation, block assembly and fair scheduling (no sockets)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import as_nobody, nobody_folder

from farm.filesync import FileEntry, Manifest, Store, SyncError, UnsafeFile, build_manifest
from farm.filesync.assembly import Assembly, Outcome
from farm.filesync.fairqueue import FairQueue
from farm.filesync.hashing import MIN_BLOCK, block_size_for, hash_block
from farm.filesync.store import default_cache_dir


def flipped(byte: int) -> bytes:
    """One byte that is surely not ``byte``: random data can already hold any constant (1 in 256)."""
    return bytes([byte ^ 0xFF])


def entry_for(path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    size = len(data)
    block = block_size_for(size)
    hashes = b"".join(hash_block(data[i : i + block]) for i in range(0, size, block))
    return FileEntry(path, size, 1_600_000_000 * 10**9, mode, block, hashes)


def assemble(store: Store, entries: list[FileEntry], blobs: dict[str, bytes]) -> Assembly:
    """Build files in the store from in-memory data, as a transfer would."""
    assembly = store.assembly(entries)
    assembly.prepare()
    by_hash = {e.block_hash(i): blobs[e.path][o : o + n] for e in entries for i, _, o, n in e.blocks()}
    for block_hash, _ in assembly.missing():
        assert assembly.accept(block_hash, 0, by_hash[block_hash]) is Outcome.DONE
    for entry, path, st in assembly.take_ready():
        assert st is not None
        store.add(entry, path, st)
    assembly.close()
    return assembly


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "cache", max_bytes=None) as s:
        yield s


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "farm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "farm"


def test_stored_files_are_content_addressed_and_shared(store: Store) -> None:
    data = os.urandom(3 * MIN_BLOCK + 5)
    a, b = entry_for("project-a/x.bin", data), entry_for("other/y.bin", data)
    assert a.digest == b.digest
    assemble(store, [a], {a.path: data})
    assert store.check([b.digest]) == {b.digest: store.file_path(b.digest)}  # another project: no transfer
    assert store.file_path(a.digest).read_bytes() == data
    assert store.size() == len(data)


def test_blocks_of_stored_files_are_reused_not_fetched(store: Store) -> None:
    old = os.urandom(8 * MIN_BLOCK)
    new = old[: 3 * MIN_BLOCK] + flipped(old[3 * MIN_BLOCK]) + old[3 * MIN_BLOCK + 1 :]
    first = entry_for("f", old)
    assemble(store, [first], {"f": old})
    second = entry_for("f", new)
    assembly = store.assembly([second])
    assembly.prepare()
    assert assembly.reused == 7
    assert [h for h, _ in assembly.missing()] == [second.block_hash(3)]
    assembly.close()


def test_a_corrupt_source_block_is_not_reused(store: Store) -> None:
    data = os.urandom(4 * MIN_BLOCK)
    entry = entry_for("f", data)
    assemble(store, [entry], {"f": data})
    cached = store.file_path(entry.digest)
    os.chmod(cached, 0o644)
    with open(cached, "r+b") as f:
        f.write(flipped(data[0]))
    other = entry_for("g", data + b"tail")  # shares the first three blocks... one of them now rotten
    assembly = store.assembly([other])
    assembly.prepare()
    assert other.block_hash(0) in {h for h, _ in assembly.missing()}
    assert assembly.reused == 3
    assembly.close()


def test_assembly_rejects_bad_and_out_of_order_chunks(store: Store) -> None:
    data = os.urandom(MIN_BLOCK)
    entry = entry_for("f", data)
    with Assembly([entry], store.session_dir()) as assembly:
        assembly.prepare()
        block = entry.block_hash(0)
        assert assembly.accept(block, 0, flipped(data[0]) + data[1:]) is Outcome.BAD
        assert assembly.accept(block, 100, data[100:]) is Outcome.BAD  # no chunk at 0 first
        assert assembly.accept(block, 0, data[:100]) is Outcome.PARTIAL
        assert assembly.accept(block, 100, data[100:] + b"extra") is Outcome.BAD  # longer than the block
        assert assembly.take_ready() == []
        assert assembly.accept(block, 0, data[:100]) is Outcome.PARTIAL
        assert assembly.accept(block, 100, data[100:]) is Outcome.DONE
        assert assembly.accept(block, 0, data) is Outcome.IGNORED
        [(done, path, st)] = assembly.take_ready()
        assert st is None  # no mode_for: the file is left as written
        assert done == entry and path.read_bytes() == data


def test_identical_blocks_are_fetched_once(store: Store) -> None:
    block = os.urandom(MIN_BLOCK)
    data = block * 4
    entry = entry_for("f", data)
    copy = entry_for("g", data + b"!")
    with Assembly([entry, copy], store.session_dir()) as assembly:
        assembly.prepare()
        assert len(assembly.missing()) == 2  # the repeated block and g's tail
        assert assembly.accept(hash_block(block), 0, block) is Outcome.DONE
        assert assembly.accept(hash_block(b"!"), 0, b"!") is Outcome.DONE
        ready = dict((e.path, p.read_bytes()) for e, p, _ in assembly.take_ready())
        assert ready == {"f": data, "g": data + b"!"}


def test_a_modified_cache_file_fails_the_quick_check(store: Store) -> None:
    data = b"content"
    entry = entry_for("f", data)
    assemble(store, [entry], {"f": data})
    cached = store.file_path(entry.digest)
    assert not os.stat(cached).st_mode & 0o222  # read-only in the cache
    os.chmod(cached, 0o644)
    cached.write_bytes(b"CONTENT")
    assert store.check([entry.digest]) == {}
    assert not cached.exists()  # dropped, to be fetched again


def test_lru_eviction_removes_the_least_recently_used(tmp_path: Path) -> None:
    with Store(tmp_path / "cache", max_bytes=3000) as store:
        blobs = {name: os.urandom(1000) for name in "abcd"}
        entries = {name: entry_for(name, data) for name, data in blobs.items()}
        for name in "abc":
            assemble(store, [entries[name]], blobs)
        store.touch([entries["a"].digest])  # a is used again: b is now the oldest
        assemble(store, [entries["d"]], blobs)
        assert store.evict() == 1000
        assert store.size() <= 3000
        assert set(store.check(e.digest for e in entries.values())) == {entries[n].digest for n in "acd"}
        with store.pinned([entries["c"].digest]):
            store.max_bytes = 1000
            store.evict(keep=[entries["d"].digest])
        assert set(store.check(e.digest for e in entries.values())) == {
            entries["c"].digest,
            entries["d"].digest,
        }


def test_materialize_links_copies_and_prunes(store: Store, tmp_path: Path) -> None:
    blobs = {"bin/tool": b"#!/bin/sh\n", "data/a.txt": b"a", "data/b.txt": b"b"}
    entries = [entry_for(p, d, 0o755 if p.startswith("bin") else 0o644) for p, d in blobs.items()]
    assemble(store, entries, blobs)
    manifest = Manifest(entries)
    job = tmp_path / "job"
    stats = store.materialize(manifest, job)
    assert (stats.linked, stats.copied) == (3, 0)
    assert os.stat(job / "bin/tool").st_mode & 0o111
    again = store.materialize(manifest, job)
    assert again.unchanged == 3
    (job / "stale.txt").write_bytes(b"old")
    copies = store.materialize(manifest, tmp_path / "copies", copy=True, prune=True)
    assert copies.copied == 3
    assert os.stat(tmp_path / "copies" / "data/a.txt").st_mode & 0o777 == 0o644  # a writable copy
    pruned = store.materialize(manifest, job, prune=True)
    assert pruned.pruned == 1 and not (job / "stale.txt").exists()
    other = Manifest([entry_for("tool", b"#!/bin/sh\n", 0o644)])  # same bytes, not executable: a copy
    assert store.materialize(other, tmp_path / "job2").copied == 1


def test_materialize_refuses_to_write_through_a_symlink_out(store: Store, tmp_path: Path) -> None:
    entry = entry_for("data/a.txt", b"a")
    assemble(store, [entry], {"data/a.txt": b"a"})
    job = tmp_path / "job"
    job.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", job / "data")
    with pytest.raises(UnsafeFile, match="outside"):
        store.materialize(Manifest([entry]), job)
    assert not (tmp_path / "outside" / "a.txt").exists()
    os.unlink(job / "data")
    (job / "data").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"keep")
    os.symlink(tmp_path / "outside" / "secret", job / "data" / "a.txt")  # the file itself a link out
    with pytest.raises(UnsafeFile, match="outside"):
        store.materialize(Manifest([entry]), job)
    assert (tmp_path / "outside" / "secret").read_bytes() == b"keep"
    os.unlink(job / "data" / "a.txt")
    os.symlink("b.txt", job / "data" / "a.txt")  # a link inside is replaced, not followed
    store.materialize(Manifest([entry]), job)
    assert not (job / "data" / "a.txt").is_symlink() and (job / "data" / "a.txt").read_bytes() == b"a"


def test_materialize_needs_the_files_in_the_cache(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="not in the cache"):
        store.materialize(Manifest([entry_for("a", b"never fetched")]), tmp_path / "job")


def test_partials_of_a_dead_session_are_adopted(tmp_path: Path) -> None:
    data = os.urandom(4 * MIN_BLOCK)
    entry = entry_for("f", data)
    with Store(tmp_path / "cache") as first:
        assembly = Assembly([entry], first.session_dir())
        assembly.prepare()
        assembly.accept(entry.block_hash(1), 0, data[MIN_BLOCK : 2 * MIN_BLOCK])
        assembly.close()
        with Store(tmp_path / "cache") as alive:
            assert alive.adopt_partials([entry.digest]) == 0  # its owner is still running
    with Store(tmp_path / "cache") as second:
        assert second.adopt_partials([entry.digest]) == 1
        with Assembly([entry], second.session_dir()) as resumed:
            resumed.prepare()
            assert resumed.resumed == 1
            assert len(resumed.missing()) == 3


def unprivileged(scenario: Callable[[Path], None]) -> None:
    """Run ``scenario(folder)`` where file modes apply: as is for a normal user; for root
    (which ignores them) as the user nobody, in a folder it owns."""
    if os.geteuid() != 0:
        with tempfile.TemporaryDirectory() as folder:
            scenario(Path(folder))
        return
    with nobody_folder() as folder:
        as_nobody(scenario, folder)


def test_a_partial_left_read_only_by_a_crash_is_resumed() -> None:
    """A crash between finishing a file (mode 0400) and moving it into the cache leaves a
    read-only partial; resuming must make it writable again, not fail on it."""
    data = os.urandom(2 * MIN_BLOCK)
    entry = entry_for("f", data)

    def scenario(folder: Path) -> None:
        with Store(folder / "cache") as store:
            with store.assembly([entry]) as first:
                first.prepare()
                first.accept(entry.block_hash(0), 0, data[:MIN_BLOCK])
            os.chmod(store.session_dir() / f"{entry.digest.hex()}.part", 0o444)
            with store.assembly([entry]) as resumed:
                resumed.prepare()
                assert resumed.resumed == 1 and len(resumed.missing()) == 1
                assert resumed.accept(entry.block_hash(1), 0, data[MIN_BLOCK:]) is Outcome.DONE
                [(_, path, st)] = resumed.take_ready()
            assert path.read_bytes() == data and st is not None and stat.S_IMODE(st.st_mode) == 0o400

    unprivileged(scenario)


def test_build_and_cache_a_real_tree(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "tree"
    (root / "x").mkdir(parents=True)
    (root / "x" / "y.txt").write_bytes(b"y" * 10)
    manifest = build_manifest(root)
    assemble(store, list(manifest), {"x/y.txt": b"y" * 10})
    store.remember_tree("tcp://host:1#t", manifest)
    assert store.tree_manifest("tcp://host:1#t") == manifest
    assert store.tree_manifest("tcp://host:1#other") is None


# -- fair scheduling -------------------------------------------------------------------


def test_fair_queue_alternates_between_clients() -> None:
    queue: FairQueue[str] = FairQueue(quantum=100)
    for i in range(5):
        assert queue.push(b"greedy", f"g{i}", 100)
    assert queue.push(b"late", "l0", 100)
    order = []
    while queue:
        order += [item for _, item in queue.pop_round()]
    assert order[:4] == ["g0", "l0", "g1", "g2"]


def test_fair_queue_shares_bytes_not_requests() -> None:
    queue: FairQueue[int] = FairQueue(quantum=1000)
    for i in range(20):
        queue.push("small-chunks", i, 100)
    for i in range(20):
        queue.push("big-chunks", i, 1000)
    first = queue.pop_round()
    served = {c: sum(100 if c == "small-chunks" else 1000 for cc, _ in first if cc == c) for c, _ in first}
    assert served == {"small-chunks": 1000, "big-chunks": 1000}


def test_fair_queue_bounds_each_client() -> None:
    queue: FairQueue[int] = FairQueue(quantum=10, max_items=2, max_bytes=25)
    assert queue.push("c", 1, 10) and queue.push("c", 2, 10)
    assert not queue.push("c", 3, 1)  # too many requests
    assert not queue.push("d", 4, 26)  # too many bytes
    assert len(queue) == 2
    queue.drop("c")
    assert not queue


def test_mode_for_sets_mode_and_mtime_through_the_open_file(store: Store) -> None:
    data = os.urandom(3 * MIN_BLOCK + 5)
    entry = entry_for("tool", data, mode=0o755)
    with store.assembly([entry]) as assembly:
        assembly.prepare()
        for block_hash, length in assembly.missing():
            index = next(i for i, h, _, _ in entry.blocks() if h == block_hash)
            start = index * entry.block_size
            assert assembly.accept(block_hash, 0, data[start : start + length]) is Outcome.DONE
        [(done, path, st)] = assembly.take_ready()
    assert st is not None and st == os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o500 and st.st_mtime_ns == entry.mtime_ns
    target = store.add(done, path, st)
    assert os.stat(target).st_ino == st.st_ino
    assert store.check([entry.digest]) == {entry.digest: Path(target)}  # the recorded stat matches


def test_a_dead_sessions_folder_removed_by_another_store_meanwhile_is_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two local agents starting on one cache both clean up dead sessions' partial folders: one may
    remove a folder between the other's open of its lock file and its lock. That raised
    FileNotFoundError (listing the folder) out of the fetch, and the job failed."""
    cache = tmp_path / "cache"
    with Store(cache) as first:
        first.session_dir()  # our own folder, passed over
        folder = cache / "partial" / "4242-deadbeef"  # a session whose agent died, its lock let go
        folder.mkdir()
        (folder / ".lock").touch()
        real_open = os.open

        def open_then_the_other_store_cleans(path, *args, **kwargs):
            fd = real_open(path, *args, **kwargs)
            if Path(path) == folder / ".lock":  # the other Store takes the lock, removes the folder, lets go
                shutil.rmtree(folder)
            return fd

        monkeypatch.setattr(os, "open", open_then_the_other_store_cleans)
        assert first.adopt_partials([entry_for("f", b"data").digest]) == 0
        monkeypatch.setattr(os, "open", real_open)
        assert not folder.exists()
