"""Manifests: scanning, block sizes, the quick-check hash cache, and the untrusted decoder."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.filesync import FileEntry, HashCache, Limits, Manifest, ManifestError, UnsafeFile, build_manifest
from farm.filesync.hashing import MAX_BLOCK, MIN_BLOCK, block_size_for, hash_block
from farm.paths import UnsafePath

OLD_NS = 1_600_000_000 * 10**9  # 2020: far from "racily clean"


def write(root: Path, rel: str, data: bytes, *, old: bool = True) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    write(root, "a.txt", b"alpha")
    write(root, "sub/b.bin", bytes(range(256)) * 2000)  # 512000 bytes: 4 blocks of 128 KiB
    write(root, "sub/deeper/empty", b"")
    os.chmod(root / "a.txt", 0o755)
    return root


def test_block_size_grows_with_file_size() -> None:
    assert block_size_for(0) == MIN_BLOCK
    assert block_size_for(MIN_BLOCK * 1999) == MIN_BLOCK
    assert block_size_for(MIN_BLOCK * 2000) == 2 * MIN_BLOCK
    assert block_size_for(1 << 30) == 1 << 20  # 1 GiB: 1024 blocks of 1 MiB
    assert block_size_for(1 << 50) == MAX_BLOCK


def test_manifest_lists_paths_sizes_modes_and_block_hashes(tree: Path) -> None:
    manifest = build_manifest(tree)
    assert [e.path for e in manifest] == ["a.txt", "sub/b.bin", "sub/deeper/empty"]
    a, b, empty = manifest.entries
    assert (a.size, a.mode, a.mtime_ns, a.block_count) == (5, 0o755, OLD_NS, 1)
    assert a.block_hash(0) == hash_block(b"alpha")
    data = (tree / "sub/b.bin").read_bytes()
    assert b.block_count == 4
    assert [b.block_hash(i) for i in range(4)] == [
        hash_block(data[i * MIN_BLOCK : (i + 1) * MIN_BLOCK]) for i in range(4)
    ]
    assert empty.size == 0 and empty.block_count == 0
    assert manifest.total_size == 5 + 512000


def test_manifest_id_is_stable_and_follows_content(tree: Path) -> None:
    first = build_manifest(tree)
    assert build_manifest(tree).id == first.id
    assert Manifest.from_bytes(first.to_bytes()) == first
    write(tree, "a.txt", b"alphA")
    assert build_manifest(tree).id != first.id


def test_unchanged_files_are_not_rehashed(tree: Path, tmp_path: Path) -> None:
    with HashCache.in_dir(tmp_path / "state") as cache:
        first = build_manifest(tree, hash_cache=cache)
        assert (cache.hits, cache.misses) == (0, 3)
    with HashCache.in_dir(tmp_path / "state") as cache:  # persistent: a new process would see the same
        again = build_manifest(tree, hash_cache=cache)
        assert (cache.hits, cache.misses) == (3, 0)
        assert again == first
        write(tree, "sub/b.bin", b"changed")
        changed = build_manifest(tree, hash_cache=cache)
        assert (cache.hits, cache.misses) == (5, 1)
        assert changed.get("sub/b.bin").size == 7  # type: ignore[union-attr]
        assert changed.get("sub/b.bin").block_hash(0) == hash_block(b"changed")  # type: ignore[union-attr]


def test_recently_modified_files_are_hashed_again(tmp_path: Path) -> None:
    """A file written in the same timestamp tick as its hashing could change unseen: not cached."""
    root = tmp_path / "tree"
    write(root, "fresh", b"new", old=False)
    with HashCache.in_dir(tmp_path / "state") as cache:
        build_manifest(root, hash_cache=cache)
        build_manifest(root, hash_cache=cache)
        assert cache.hits == 0 and cache.misses == 2


def test_explicit_paths_are_normalised_and_checked(tree: Path) -> None:
    assert [e.path for e in build_manifest(tree, ["./a.txt", "sub//b.bin"])] == ["a.txt", "sub/b.bin"]
    for bad in ("../x", "/etc/passwd", "sub/../../x"):
        with pytest.raises(UnsafeFile, match=r"outside|absolute"):
            build_manifest(tree, [bad])


def test_symlink_leading_outside_is_refused(tree: Path, tmp_path: Path) -> None:
    secret = write(tmp_path, "secret", b"do not ship")
    os.symlink(secret, tree / "link")
    with pytest.raises(UnsafeFile, match=r"link: symlink leads outside") as info:
        build_manifest(tree)
    assert isinstance(info.value, UnsafePath)
    os.unlink(tree / "link")
    os.symlink(tmp_path, tree / "folder-link")
    with pytest.raises(UnsafeFile, match="folder-link"):
        build_manifest(tree)
    os.unlink(tree / "folder-link")
    os.symlink("../../secret", tree / "sub" / "relative")
    with pytest.raises(UnsafeFile, match="sub/relative"):
        build_manifest(tree)


def test_symlink_inside_the_tree_is_followed(tree: Path) -> None:
    os.symlink("a.txt", tree / "alias")
    manifest = build_manifest(tree)
    assert manifest.get("alias").digest == manifest.get("a.txt").digest  # type: ignore[union-attr]


def test_fifo_socket_and_device_files_are_refused(tree: Path, tmp_path: Path) -> None:
    os.mkfifo(tree / "pipe")
    with pytest.raises(UnsafeFile, match="pipe: a fifo"):
        build_manifest(tree)
    os.unlink(tree / "pipe")
    sock_path = tree / "sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_path))
        with pytest.raises(UnsafeFile, match="sock: a socket"):
            build_manifest(tree)
    finally:
        server.close()
        sock_path.unlink()
    try:
        os.mknod(tree / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        os.symlink("/dev/null", tree / "null")  # unprivileged: a link to a device, outside the tree
    with pytest.raises(UnsafeFile, match="null"):
        build_manifest(tree)


# -- the decoder: everything from the network ------------------------------------------


def entry_wire(path: str = "a", data: bytes = b"x", **over: object) -> list[object]:
    size = len(data)
    fields = {
        "path": path,
        "size": size,
        "mtime_ns": 1,
        "mode": 0o644,
        "block_size": block_size_for(size),
        "hashes": hash_block(data) if size else b"",
    }
    fields.update(over)
    return list(fields.values())


def raw(*entries: list[object], **top: object) -> bytes:
    doc = {"v": 1, "files": list(entries)}
    doc.update(top)
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (raw(entry_wire("../x")), "outside"),
        (raw(entry_wire("/etc/passwd")), "absolute"),
        (raw(entry_wire("a/../b")), "outside|normalised"),
        (raw(entry_wire("a//b")), "not normalised"),
        (raw(entry_wire("./a")), "not normalised"),
        (raw(entry_wire("a\\b")), "forbidden"),
        (raw(entry_wire("x" * 300)), "longer than 255"),
        (raw(entry_wire("a"), entry_wire("a")), "twice"),
        (raw(entry_wire("a"), entry_wire("a/b")), "both a file and the folder"),
        (raw(entry_wire(size=-1)), "size"),
        (raw(entry_wire(size=True)), "integer"),
        (raw(entry_wire(size=MIN_BLOCK + 1)), "do not fit"),
        (raw(entry_wire(mode=0o4755)), "mode"),
        (raw(entry_wire(block_size=1 << 20)), "block size"),
        (raw(entry_wire(hashes=b"short")), "do not fit"),
        (raw(entry_wire(hashes="text")), "bytes"),
        (raw(entry_wire()[:5]), "6 fields"),
        (raw(entry_wire(), v=2), "version"),
        (raw(entry_wire(), extra=1), "keys"),
        (msgpack.packb([1, 2]), "map"),
        (b"\xc1", "undecodable"),
        (msgpack.packb({"v": 1, "files": [msgpack.ExtType(1, b"")]}), "extension"),
    ],
)
def test_decoder_refuses_malformed_manifests(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(data)


def test_decoder_applies_limits() -> None:
    small = Limits(max_files=2, max_file_size=10, max_total_size=15, max_manifest_bytes=4096)
    three = raw(entry_wire("a"), entry_wire("b"), entry_wire("c"))
    with pytest.raises(ManifestError, match="more than 2"):
        Manifest.from_bytes(three, small)
    with pytest.raises(ManifestError, match=r"outside 0\.\.10"):
        Manifest.from_bytes(raw(entry_wire("a", b"x" * 11)), small)
    with pytest.raises(ManifestError, match="more than 15"):
        Manifest.from_bytes(raw(entry_wire("a", b"x" * 10), entry_wire("b", b"y" * 10)), small)
    with pytest.raises(ManifestError, match="exceeds"):
        Manifest.from_bytes(b"\x00" * 5000, small)


def test_digests_are_recomputed_not_trusted() -> None:
    manifest = Manifest.from_bytes(raw(entry_wire("a", b"abc")))
    local = FileEntry("a", 3, 1, 0o644, block_size_for(3), hash_block(b"abc"))
    assert manifest.entries[0].digest == local.digest


safe_names = st.text(st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)), min_size=1)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=80)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        Manifest.from_bytes(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_like)
def test_fuzz_random_documents_never_crash_the_decoder(doc: object) -> None:
    for candidate in (doc, {"v": 1, "files": doc}, {"v": 1, "files": [doc]}):
        with contextlib.suppress(ManifestError):
            Manifest.from_bytes(msgpack.packb(candidate, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(safe_names, min_size=1, max_size=3).map("/".join),
            st.binary(max_size=40),
            st.integers(-(2**63), 2**64 - 1),  # all msgpack can carry
            st.integers(-5, 0o1000),
        ),
        max_size=5,
    ),
    st.integers(0, 5),
    st.binary(min_size=1, max_size=3),
)
def test_fuzz_mutated_manifests_are_refused_or_safe(
    files: list[tuple[str, bytes, int, int]], flip_at: int, junk: bytes
) -> None:
    entries = [entry_wire(path, data, mtime_ns=mtime, mode=mode) for path, data, mtime, mode in files]
    encoded = raw(*entries)
    cut = min(len(encoded), flip_at * 7)
    for data in (encoded, encoded[:cut] + junk + encoded[cut + len(junk) :]):
        try:
            manifest = Manifest.from_bytes(data)
        except ManifestError:
            continue
        for entry in manifest:
            assert not entry.path.startswith("/") and ".." not in entry.path.split("/")
            assert 0 <= entry.mode <= 0o777 and len(entry.hashes) == 32 * entry.block_count
        assert Manifest.from_bytes(manifest.to_bytes()) == manifest
