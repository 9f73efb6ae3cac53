"""`bench_filesync.py --peers`: N agents sync one tree with peers, against the controller alone.

Each round starts fresh agent processes (real `Store`s, real sockets on 127.0.0.1) that sync one
published tree at once; the controller is a `SwarmFileServer` in this process, and what it sent
(every frame) is divided by the tree's size. Rounds run in the order controller-only, peers,
peers, controller-only (each mode gets an early and a late turn), each on a tree name of its own
so no round finds another's swarm. Prints the means; ``--json`` prints one object per comparison.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from farm.filesync import FileClient, Manifest, Store
from farm.filesync.tracker import SwarmFileServer


def agent_main(index: int, endpoint: str, tree: str, folder: str, peers: bool, results: Any, go: Any,
               finish: Any) -> None:
    from farm.agent.peering import PeerNode

    node = PeerNode(None) if peers else None
    store = Store(Path(folder) / "cache", max_bytes=None)
    client = node.client(endpoint, store) if node is not None else FileClient(endpoint, store)
    results.put(("ready", index, None))
    go.wait()
    start = time.perf_counter()
    client.sync(tree, Path(folder) / "job")
    elapsed = time.perf_counter() - start
    from_peers = getattr(client, "peer_counters", None)
    results.put(("done", index, {"elapsed": elapsed, "controller_blocks": client.counters.blocks_fetched,
                                 "peer_blocks": from_peers.blocks_fetched if from_peers else 0}))
    finish.wait(timeout=1800)  # keep serving until every agent is done
    client.close()
    store.close()
    if node is not None:
        node.close()


def one_round(server: SwarmFileServer, src: Path, manifest: Manifest, tree: str, agents: int, base: Path,
              peers: bool) -> dict[str, Any]:
    server.publish(tree, src, manifest)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go, finish = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=agent_main, args=(i, server.endpoint, tree, str(base / f"{tree}-{i}"), peers,
                                                  results, go, finish)) for i in range(agents)]
    for p in procs:
        p.start()
    for _ in procs:
        assert results.get(timeout=300)[0] == "ready"
    os.sync()
    sent = server.counters.bytes_out
    start = time.perf_counter()
    go.set()
    stats = [results.get(timeout=1800)[2] for _ in procs]
    elapsed = time.perf_counter() - start
    sent = server.counters.bytes_out - sent
    finish.set()
    for p in procs:
        p.join(timeout=120)
    server.unpublish(tree)
    return {"elapsed": elapsed, "ratio": sent / manifest.total_size, "stats": stats}


def compare(src: Path, manifest: Manifest, agents: int, base: Path, as_json: bool) -> None:
    server = SwarmFileServer().start()
    try:
        rounds = {}
        for name, peers in (("alone-1", False), ("peers-1", True), ("peers-2", True), ("alone-2", False)):
            rounds[name] = one_round(server, src, manifest, name, agents, base, peers)
            r = rounds[name]
            if not as_json:
                from_peers = sum(s["peer_blocks"] for s in r["stats"])
                from_ctl = sum(s["controller_blocks"] for s in r["stats"])
                print(f"{name:<8} {r['elapsed']:7.2f} s  controller sent {r['ratio']:.2f}x the tree;"
                      f" blocks from the controller {from_ctl}, from peers {from_peers}")
    finally:
        server.close()
    farm_s = (rounds["peers-1"]["elapsed"] + rounds["peers-2"]["elapsed"]) / 2
    baseline_s = (rounds["alone-1"]["elapsed"] + rounds["alone-2"]["elapsed"]) / 2
    ratio = max(rounds["peers-1"]["ratio"], rounds["peers-2"]["ratio"])
    baseline_ratio = (rounds["alone-1"]["ratio"] + rounds["alone-2"]["ratio"]) / 2
    result = {
        "name": f"peers, {agents} agents, {manifest.total_size >> 20} MiB",
        "agents": agents,
        "tree_mib": manifest.total_size >> 20,
        "farm_s": round(farm_s, 3),
        "baseline_s": round(baseline_s, 3),
        "speedup": round(baseline_s / farm_s, 3),
        "controller_bytes_ratio": round(ratio, 3),
        "baseline_controller_bytes_ratio": round(baseline_ratio, 3),
        "load_average": round(os.getloadavg()[0], 2),
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"peers: {farm_s:.2f} s, controller sent {ratio:.2f}x the tree (worst round; goal <= 1.5);"
              f" controller alone: {baseline_s:.2f} s, {baseline_ratio:.2f}x;"
              f" speed-up {baseline_s / farm_s:.2f}x;"
              f" load average {os.getloadavg()[0]:.1f}")
