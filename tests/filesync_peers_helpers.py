"""A peer agent in a process of its own, for tests/test_filesync_peers.py.

    python tests/filesync_peers_helpers.py ENDPOINT TREE CACHE MODE [KEYS_DIR KEY]

MODE: ``honest`` syncs TREE from the controller's file service at ENDPOINT (with peers) and
serves it; ``slow`` does the same and then serves each block read 0.05 s late; ``liar`` syncs
nothing, registers with the tracker as holding every block and serves zeros of the right length
(a poisoning peer). Prints one JSON line ``{"serving": ENDPOINT, ...}`` when it serves, then
serves until its stdin closes or it is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_peer(endpoint: str, tree: str, cache: Path, mode: str, keys: tuple[Path, str] | None = None,
               timeout: float = 120.0) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start a peer process; returns it and its ``serving`` line once it serves."""
    cmd = [sys.executable, __file__, endpoint, tree, str(cache), mode,
           *([str(keys[0]), keys[1]] if keys else [])]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            return proc, json.loads(line)
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        pipe.close()  # type: ignore[union-attr]
    raise AssertionError(f"peer {mode} did not start serving (exit {proc.poll()})")


@contextlib.contextmanager
def running_peer(endpoint: str, tree: str, cache: Path, mode: str, keys: tuple[Path, str] | None = None,
                 ) -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    """`start_peer` for the length of a ``with`` block; stopped (or reaped, if killed) after."""
    proc, line = start_peer(endpoint, tree, cache, mode, keys)
    try:
        yield proc, line
    finally:
        stop_peer(proc)


def stop_peer(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.close()
    except BrokenPipeError:  # it was killed
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def main(argv: list[str]) -> None:
    from farm.agent.peering import PeerNode
    from farm.filesync import FileClient, Store, wire
    from farm.filesync.peerserver import PeerServer
    from farm.security import ClientSecurity

    endpoint, tree, cache, mode = argv[:4]
    security = ClientSecurity(argv[4], argv[5]) if len(argv) > 5 else None
    setup = security.socket_setup if security is not None else None
    store = Store(Path(cache))
    if mode == "liar":
        from farm.filesync.holdings import Holdings

        class Liar(PeerServer):
            def _read(self, block_hash: bytes, offset: int, length: int) -> bytes:
                return bytes(length)  # right length, wrong bytes

        holdings = Holdings()
        server = Liar("tcp://127.0.0.1:*", holdings, keys=security.keys if security else None).start()
        with FileClient(endpoint, socket_setup=setup) as client:
            manifest = client.fetch_manifest(tree)
            holdings.begin(manifest, lambda digest: Path("/nonexistent"), None)
            fields = {"tree": tree, "serve": server.endpoint, "members": None}
            body, payloads = client._call(wire.PEERS, fields)
        if payloads:
            server.members.update(body["members_id"], bytes(payloads[0]).decode().split())
        print(json.dumps({"serving": server.endpoint}), flush=True)
    else:
        node = PeerNode(setup)
        if mode == "slow":
            original = PeerServer._read

            def slow_read(self: PeerServer, block_hash: bytes, offset: int, length: int) -> bytes:
                time.sleep(0.05)
                return original(self, block_hash, offset, length)

            PeerServer._read = slow_read  # type: ignore[method-assign]
        with node.client(endpoint, store) as client:
            client.sync(tree, Path(cache).parent / f"{Path(cache).name}-job")
            counters = {"controller": client.counters.blocks_fetched,
                        "peers": client.peer_counters.blocks_fetched}  # type: ignore[attr-defined]
        assert node.server is not None
        print(json.dumps({"serving": node.server.endpoint, **counters}), flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
