"""Benchmark the file synchroniser: an asset tree to agent caches over loopback, farm vs rsync.

    python bench/bench_filesync.py [--size-mb 1024] [--agents 2] [--curve] [--tmp /tmp] [--keep]
    python bench/bench_filesync.py --peers --agents 8 --size-mb 256 [--json]

``--peers`` (or ``--json``) measures agents fetching from each other instead (`filesync_peers.py`):
the bytes the controller sent over the tree's size, and the wall time against the controller
alone (``farm agent --no-peers``), in the same run.

The tree is made at bench time in a temporary folder under ``--tmp`` (removed after): half
of ``--size-mb`` as many small files (1 KiB to 256 KiB), half as one large file,
random bytes. A `FileServer` runs in this process; each agent is a real process with
its own `Store` and job folder, syncing over tcp://127.0.0.1 at the same time.
``--curve`` adds CURVE encryption with zmq.auth certificates and a ZAP authenticator.

Baselines, measured in the same run with the same number of destinations at once:
``rsync -a`` between local folders, ``rsync -a`` from an rsync daemon on a loopback
port (the fair "over loopback" comparison: it runs its delta algorithm, as farm does),
and ``cp -a`` (no network, no hashing: the floor of writing the bytes on this machine).
Whole-machine CPU-seconds (/proc/stat) per first sync compare the tools' cost however
they split their work between processes and the kernel.

Run it on a quiet filesystem: on ext4, file creation right after many deletions (the
previous run's clean-up, other test runs) is several times slower for a while.

Prints, for each phase (first sync, re-sync of the unchanged tree, one byte changed in
the large file): wall time, GiB/s, bytes on the wire, blocks fetched; and the agents'
peak memory. Dirty pages are flushed (os.sync) before each timed phase. Asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine
from filesync_peers import compare

from farm.filesync import FileClient, FileServer, HashCache, Store, build_manifest

GiB = 1 << 30
MiB = 1 << 20


# -- the tree --------------------------------------------------------------------------


def make_tree(root: Path, size: int, seed: int = 7) -> tuple[int, int]:
    """Half the bytes as small files, half as one large file; returns (files, bytes)."""
    rng = random.Random(seed)
    small_total, count, written = size // 2, 0, 0
    while written < small_total:
        n = min(rng.randrange(1024, 256 * 1024), small_total - written)
        path = root / f"assets/{count // 200:03d}/file{count:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(n))
        written += n
        count += 1
    with open(root / "large.bin", "wb") as f:
        left = size - written
        while left:
            n = min(16 * MiB, left)
            f.write(os.urandom(n))
            left -= n
    return count + 1, size


# -- agents: real processes --------------------------------------------------------------


def agent_main(
    index: int, endpoint: str, folder: str, keys: dict[str, str] | None, commands: Any, results: Any
) -> None:
    setup = None
    if keys is not None:
        import zmq.auth

        public, secret = zmq.auth.load_certificate(keys["client"])
        server_public, _ = zmq.auth.load_certificate(keys["server"])

        def setup(sock: zmq.Socket) -> None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public

    rounds: dict[str, tuple[FileClient, Store]] = {}  # a fresh cache and job folder per round
    results.put(("ready", index, None))
    while True:
        command = commands.get()
        if command == "stop":
            break
        if command not in rounds:
            store = Store(Path(folder) / command / "cache", max_bytes=None)
            rounds[command] = (FileClient(endpoint, store, socket_setup=setup), store)
        client, store = rounds[command]
        before = dict(vars(client.counters))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        client.sync("assets", Path(folder) / command / "job")
        elapsed = time.perf_counter() - start
        delta = {k: v - before[k] for k, v in vars(client.counters).items()}
        delta["elapsed"] = elapsed
        after = resource.getrusage(resource.RUSAGE_SELF)
        delta["user_s"] = after.ru_utime - usage.ru_utime
        delta["sys_s"] = after.ru_stime - usage.ru_stime
        delta["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.put(("done", index, delta))
    for client, store in rounds.values():
        client.close()
        store.close()


class Agents:
    def __init__(self, count: int, endpoint: str, base: Path, keys: dict[str, str] | None) -> None:
        ctx = mp.get_context("spawn")
        self.server_cpu: list[float] = []
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(
                target=agent_main,
                args=(i, endpoint, str(base / f"agent{i}"), keys, self.commands[i], self.results),
            )
            for i in range(count)
        ]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            assert self.results.get(timeout=120)[0] == "ready"

    def sync(self, round_name: str) -> tuple[float, list[dict[str, Any]]]:
        os.sync()
        usage = resource.getrusage(resource.RUSAGE_SELF)  # this process runs the FileServer thread
        start = time.perf_counter()
        for q in self.commands:
            q.put(round_name)
        out: list[dict[str, Any]] = [{} for _ in self.procs]
        for _ in self.procs:
            _, index, delta = self.results.get(timeout=1800)
            out[index] = delta
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.server_cpu.append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
        return elapsed, out

    def stop(self) -> None:
        for q in self.commands:
            q.put("stop")
        for p in self.procs:
            p.join(timeout=60)


# -- whole-machine CPU ------------------------------------------------------------------------


def machine_cpu() -> float:
    """CPU-seconds every process has used so far, kernel work included (from /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class CpuLog:
    """Whole-machine CPU-seconds per phase: a fair count across tools that split work differently."""

    def __init__(self) -> None:
        self.used: dict[str, float] = {}

    def run(self, name: str, phase: Any, *args: Any) -> Any:
        before = machine_cpu()
        result = phase(*args)
        self.used[name] = machine_cpu() - before
        return result


# -- rsync baselines -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RsyncDaemon:
    def __init__(self, base: Path, src: Path) -> None:
        self.port = free_port()
        conf = base / "rsyncd.conf"
        owner = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"use chroot = no\npid file = {base}/rsyncd.pid\nlog file = {base}/rsyncd.log\n"
            f"[assets]\npath = {src}\nread only = yes\n{owner}"
        )
        self.proc = subprocess.Popen(
            [
                "rsync",
                "--daemon",
                "--no-detach",
                f"--config={conf}",
                f"--port={self.port}",
                "--address=127.0.0.1",
            ]
        )
        deadline = time.monotonic() + 30
        while True:  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/assets/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def copy_many(source: Path, dests: list[Path]) -> float:
    """``cp -a`` to every destination at once: what merely writing the bytes costs on this machine."""
    os.sync()
    start = time.perf_counter()
    procs = [subprocess.Popen(["cp", "-a", str(source), str(d)]) for d in dests]
    for p in procs:
        p.wait()
    return time.perf_counter() - start


def rsync_many(source: str, dests: list[Path]) -> tuple[float, int, tuple[float, float]]:
    """rsync -a to every destination at once; returns (seconds, bytes on the wire summed,
    (user, system) CPU-seconds of the receiving rsync processes, to set beside farm's agents)."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(["rsync", "-a", "--stats", source, f"{d}/"], stdout=subprocess.PIPE, text=True)
        for d in dests
    ]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wire = 0
    for out in outs:
        for key in ("Total bytes sent", "Total bytes received"):
            found = re.search(rf"{key}: ([\d,.]+)", out)
            wire += int(found.group(1).replace(",", "").replace(".", "")) if found else 0
    return elapsed, wire, (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)


# -- CURVE -------------------------------------------------------------------------------


def curve_setup(base: Path) -> tuple[Any, dict[str, str], Any]:
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    keys = base / "keys"
    public_dir = keys / "public"
    public_dir.mkdir(parents=True)
    server_pub, server_sec = zmq.auth.create_certificates(keys, "server")
    client_pub, client_sec = zmq.auth.create_certificates(keys, "client")
    shutil.copy(client_pub, public_dir)
    auth = ThreadAuthenticator(zmq.Context.instance())
    auth.start()
    auth.configure_curve(domain="*", location=str(public_dir))
    public, secret = zmq.auth.load_certificate(server_sec)

    def server_setup(sock: zmq.Socket) -> None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_server = public, secret, True

    return server_setup, {"client": str(client_sec), "server": str(server_pub)}, auth


# -- main --------------------------------------------------------------------------------


def gib_s(size: int, seconds: float) -> str:
    return f"{size / GiB / seconds:.2f} GiB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--curve", action="store_true", help="encrypt with CURVE (zmq.auth keys, ZAP)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--peers", action="store_true",
                        help="agents fetch from each other, against the controller alone")
    parser.add_argument("--json", action="store_true", help="with --peers: one JSON object per comparison")
    parser.add_argument(
        "--tmp", default="/tmp", help="where the temporary folder goes (its filesystem matters)"
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="farm-bench-filesync-", dir=args.tmp))
    src = base / "src"
    if args.peers or args.json:
        try:
            make_tree(src, args.size_mb * MiB)
            compare(src, build_manifest(src), args.agents, base, args.json)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}, folder {base}")
    try:
        files, size = make_tree(src, args.size_mb * MiB)
        print(f"tree: {files} files, {size / GiB:.2f} GiB (half in one large file), {args.agents} agents")

        cpu = CpuLog()
        copy_a = cpu.run("cp -a", copy_many, src, [base / f"cp-a{i}" for i in range(args.agents)])
        dests = [base / f"rsync-local{i}" for i in range(args.agents)]
        local_first, _, _ = rsync_many(f"{src}/", dests)
        daemon = RsyncDaemon(base, src)
        ddests = {r: [base / f"rsync-daemon-{r}{i}" for i in range(args.agents)] for r in "ab"}
        # Nothing is deleted until the end (on ext4, creating files near recently deleted inodes
        # is slow), and first syncs run in the order rsync, farm, farm, rsync: on this VM a
        # phase writing later into fresh memory or disk pays more, so each tool gets both turns.

        setup, keys, auth = curve_setup(base) if args.curve else (None, None, None)
        state = base / "controller-state"
        start = time.perf_counter()
        with HashCache.in_dir(state) as cache:
            manifest = build_manifest(src, hash_cache=cache)
        scan = time.perf_counter() - start
        server = FileServer(socket_setup=setup).start()
        server.publish("assets", src, manifest)
        agents = Agents(args.agents, server.endpoint, base, keys)
        try:
            rsync_a, rsync_first_wire, rsync_cpu_a = cpu.run("rsyncd 1", rsync_many, daemon.url, ddests["a"])
            first_a, first_stats_a = cpu.run("farm 1", agents.sync, "a")
            first_b, first_stats = cpu.run("farm 2", agents.sync, "b")
            rsync_b, _, rsync_cpu_b = cpu.run("rsyncd 2", rsync_many, daemon.url, ddests["b"])
            first, rsync_first = (first_a + first_b) / 2, (rsync_a + rsync_b) / 2
            again, again_stats = agents.sync("b")
            rsync_again, rsync_again_wire, _ = rsync_many(daemon.url, ddests["b"])

            # one byte changed in the large file: rescan (the hash cache skips the rest), republish, sync
            with open(src / "large.bin", "r+b") as f:
                f.seek(size // 4 + 12345)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))
            start = time.perf_counter()
            with HashCache.in_dir(state) as cache:
                manifest2 = build_manifest(src, hash_cache=cache)
                rehashed = cache.misses
            rescan = time.perf_counter() - start
            server.publish("assets", src, manifest2)
            changed, changed_stats = agents.sync("b")
            rsync_changed, rsync_changed_wire, _ = rsync_many(daemon.url, ddests["b"])
            copy_b = cpu.run("cp -a again", copy_many, src, [base / f"cp-b{i}" for i in range(args.agents)])
        finally:
            agents.stop()
            server.close()
            daemon.stop()
            if auth is not None:
                auth.stop()

        large_block = manifest.get("large.bin").block_size  # type: ignore[union-attr]
        n = args.agents

        def wire(stats: list[dict[str, Any]]) -> int:
            return sum(s["bytes_sent"] + s["bytes_received"] for s in stats)

        def fetched(stats: list[dict[str, Any]]) -> str:
            return "/".join(str(s["blocks_fetched"]) for s in stats)

        mode = "CURVE" if args.curve else "plaintext"
        print(
            f"\nfarm ({mode}) vs rsync -a, {n} destinations at once; GiB/s = tree size x destinations / time"
        )
        print(f"controller scan (cold, hashes {size / GiB:.2f} GiB): {scan:.2f} s ({gib_s(size, scan)})")
        copy = (copy_a + copy_b) / 2
        print(
            f"cp -a, no network, no hashing (the floor): {copy:6.2f} s  {gib_s(n * size, copy)}"
            f" (first {copy_a:.2f} s, last {copy_b:.2f} s); farm takes {first / copy:.2f}x as long"
        )
        print(
            f"rsync -a local folders, first copy:      {local_first:6.2f} s  {gib_s(n * size, local_first)}"
        )
        print(
            "whole-machine CPU-seconds per GiB delivered, first syncs: "
            + ", ".join(f"{name} {used / (n * size / GiB):.2f}" for name, used in cpu.used.items())
        )
        print(
            f"first syncs in turn: rsyncd {rsync_a:.2f} s, farm {first_a:.2f} s, farm {first_b:.2f} s,"
            f" rsyncd {rsync_b:.2f} s (the table gives the means)"
        )
        rows = [
            ("first sync", first, rsync_first, wire(first_stats), rsync_first_wire, fetched(first_stats)),
            (
                "re-sync, unchanged",
                again,
                rsync_again,
                wire(again_stats),
                rsync_again_wire,
                fetched(again_stats),
            ),
            (
                "one byte changed",
                changed,
                rsync_changed,
                wire(changed_stats),
                rsync_changed_wire,
                fetched(changed_stats),
            ),
        ]
        print(
            f"{'phase':<20} {'farm s':>8} {'farm GiB/s':>11} {'farm wire':>12} {'blocks':>11}"
            f" {'rsyncd s':>9} {'rsyncd GiB/s':>13} {'rsyncd wire':>12} {'speed-up':>9}"
        )
        for name, t, rt, w, rw, blocks in rows:
            print(
                f"{name:<20} {t:8.3f} {n * size / GiB / t:11.2f} {w:12,d} {blocks:>11}"
                f" {rt:9.3f} {n * size / GiB / rt:13.2f} {rw:12,d} {rt / t:8.2f}x"
            )
        print(
            f"one byte changed: controller rescan {rescan:.2f} s ({rehashed} file rehashed),"
            f" blocks fetched per agent {fetched(changed_stats)} of {large_block // 1024} KiB,"
            f" reused locally {'/'.join(str(s['blocks_reused']) for s in changed_stats)}"
        )
        memory = ", ".join(f"{s['maxrss_mb']:.0f} MB" for s in changed_stats)
        print(f"agent peak memory (RSS): {memory}")
        for name, stats in (("first", first_stats), ("re-sync", again_stats), ("one byte", changed_stats)):
            usage = ", ".join(f"{s['user_s']:.2f} user + {s['sys_s']:.2f} sys" for s in stats)
            print(f"agent CPU, {name}: {usage}")
        receivers = ", ".join(f"{u:.2f} user + {s:.2f} sys" for u, s in (rsync_cpu_a, rsync_cpu_b))
        print(f"rsync receivers' CPU (all {n} together), first syncs: {receivers}")
        # what the receivers did not use: the sending side, the kernel's network work, anything else
        farm_agents = [sum(a["user_s"] + a["sys_s"] for a in st) for st in (first_stats_a, first_stats)]
        rest = [cpu.used[f"farm {i}"] - used for i, used in enumerate(farm_agents, 1)]
        rest += [cpu.used[f"rsyncd {i}"] - sum(c) for i, c in enumerate((rsync_cpu_a, rsync_cpu_b), 1)]
        print(
            "first syncs, whole-machine CPU-s beyond the receivers (sender, network, the rest):"
            f" farm {rest[0]:.2f} and {rest[1]:.2f}, rsyncd {rest[2]:.2f} and {rest[3]:.2f}"
        )
        print(
            "controller (file server thread) CPU, per farm phase in order: "
            + ", ".join(f"{c:.2f} s" for c in agents.server_cpu)
        )
        print(
            "targets: first sync >= 1 GiB/s and faster than rsync; re-sync < 0.5 s and < 1 MB on the wire;"
            " one byte changed: at most one block re-sent"
        )
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
