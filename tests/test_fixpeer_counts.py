"""The agent's sync line accounts for every block of the tree: fetched, resumed, reused.

Real file services on 127.0.0.1 and real caches; a fetch is cut off mid-way (its progress
callback raises, as a killed agent would stop) and the next one resumes its partial files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_filesync_peers import make_tree

from farm.agent.sync import sync_summary
from farm.filesync import FileClient, Store, build_manifest
from farm.filesync.holdings import Holdings
from farm.filesync.swarm import SwarmClient
from farm.filesync.tracker import SwarmFileServer

SUMMARY = re.compile(r"(\d+) blocks fetched from the controller, (\d+) from peers, (\d+) resumed from a "
                     r"partial download, (\d+) reused from the cache, of the tree's (\d+)")


class Cut(Exception):
    """Stops a fetch part-way, leaving its partial files behind."""


def parts(client: FileClient, manifest) -> tuple[list[int], int]:
    *counts, total = map(int, SUMMARY.fullmatch(sync_summary(client, manifest)).groups())
    return counts, total


@pytest.mark.parametrize("swarm", [False, True], ids=["plain", "swarm"])
def test_blocks_resumed_from_a_partial_download_are_counted_and_the_parts_add_up(tmp_path: Path, swarm):
    src = make_tree(tmp_path / "src", files=4, size=3 << 20, seed=11)  # several blocks per file
    server = SwarmFileServer().start()
    server.publish("t", src, build_manifest(src))

    def client(store: Store) -> FileClient:
        if swarm:
            return SwarmClient(server.endpoint, store, holdings=Holdings())
        return FileClient(server.endpoint, store)

    def cut(progress) -> None:
        if progress.blocks_done >= progress.blocks_total // 3:
            raise Cut

    try:
        store = Store(tmp_path / "cache")
        with client(store) as first, pytest.raises(Cut):
            first.sync("t", tmp_path / "job1", progress=cut)
        store.close()
        store = Store(tmp_path / "cache")
        with client(store) as second:
            manifest = second.sync("t", tmp_path / "job2")
            (fetched, peers, resumed, reused), total = parts(second, manifest)
        store.close()
        assert resumed > 0 and fetched > 0, (fetched, resumed)
        assert fetched + peers + resumed + reused == total
        # the whole tree in the cache already: every block reused
        store = Store(tmp_path / "cache")
        with client(store) as third:
            manifest = third.sync("t", tmp_path / "job3")
            assert parts(third, manifest) == ([0, 0, 0, total], total)
        store.close()
    finally:
        server.close()
