"""The agent's sync line accounts for every block of the tree: fetched, resumed, reused.

Real file services on 127.0.0.1 and real caches; a fetch is cut off mid-way (its progress
callback raises, as a killed agent would stop) and the next one resumes its partial files.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from conftest import wait_for
from test_filesync_peers import WAIT_S, farm_agents, make_tree  # noqa: F401 (fixture)

from farm.agent.sync import sync_summary
from farm.client import Client
from farm.filesync import FileClient, Store, build_manifest
from farm.filesync.holdings import Holdings
from farm.filesync.swarm import SwarmClient
from farm.filesync.tracker import SwarmFileServer
from farm.project import load_project

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


def test_an_agent_killed_mid_sync_and_restarted_counts_what_it_resumed(controller, farm_agents, tmp_path):  # noqa: F811
    folder = tmp_path / "project"
    make_tree(folder / "assets", files=8, size=8 << 20, seed=5)  # 64 MiB: time to be caught mid-fetch
    (folder / "farm.toml").write_text('[project]\nname = "resume"\nmedia_type = "synthetic"\n\n'
                                      "[synthetic]\njobs = 2\nsleep = 0.1\n")
    a1 = farm_agents.start(controller.url)
    wait_for(lambda: len(controller.status()["agents"]) == 1, WAIT_S, "agent a1")
    partial = tmp_path / f"cache-{a1}" / "partial"

    def written() -> bool:  # blocks of a partial file are on disk
        return any(p.stat().st_blocks > 0 for p in partial.rglob("*.part")) if partial.exists() else False

    with Client(controller.url, timeout=WAIT_S) as client:
        run = client.submit(load_project(folder))
        wait_for(written, WAIT_S, "a1 to be part-way through the fetch")
        os.kill(farm_agents.procs[a1].pid, signal.SIGKILL)
        farm_agents.procs[a1].wait()
        again = farm_agents.start(controller.url, "--id", f"agent-{a1}", "--cache-dir",
                                  str(tmp_path / f"cache-{a1}"))
        assert client.follow(run).ok
    found = SUMMARY.search(farm_agents.log(again))
    assert found, farm_agents.log(again)
    *parts, total = map(int, found.groups())
    assert parts[2] > 0 and sum(parts) == total, found.group(0)  # resumed, and nothing uncounted
