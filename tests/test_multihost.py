"""Several hosts: a controller and agents in separate network namespaces, over tcp, with CURVE.

Needs root and iproute2 (CI runs as root and installs iproute2); elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI

FARM = [sys.executable, "-m", "farm"]


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def hosts() -> Iterator[tuple[list[str], list[str], str]]:
    """Two namespaces joined by a veth pair: (controller host prefix, node host prefix, controller ip)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        if IN_CI:
            raise RuntimeError("the multi-host test needs root and iproute2 in CI")
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = f"{os.getpid() % 10000}"
    ctl_ns, node_ns = f"farmc{tag}", f"farmn{tag}"
    net = f"10.231.{os.getpid() % 250}"
    try:
        run("ip", "netns", "add", ctl_ns)
        run("ip", "netns", "add", node_ns)
        run("ip", "link", "add", f"fc{tag}", "type", "veth", "peer", "name", f"fn{tag}")
        run("ip", "link", "set", f"fc{tag}", "netns", ctl_ns)
        run("ip", "link", "set", f"fn{tag}", "netns", node_ns)
        for ns, dev, ip in ((ctl_ns, f"fc{tag}", f"{net}.1"), (node_ns, f"fn{tag}", f"{net}.2")):
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for ns in (ctl_ns, node_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if IN_CI:
            raise
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.decode().strip()}")
    try:
        yield ["ip", "netns", "exec", ctl_ns], ["ip", "netns", "exec", node_ns], f"{net}.1"
    finally:
        for ns in (ctl_ns, node_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_controller(prefix: list[str], *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*prefix, *FARM, "controller", *args], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            return proc, line.split("listening on ")[1].strip()
    proc.wait()
    raise AssertionError(f"controller did not start (exit {proc.returncode})")


def test_controller_and_agents_on_separate_hosts_over_curve(hosts, tmp_path, synthetic):
    on_controller, on_node, ip = hosts
    keys = str(tmp_path / "keys")
    for name in ("controller", "node", "client"):
        run(*FARM, "keys", "create", name, "--keys-dir", keys)
    for name in ("node", "client"):
        run(*FARM, "keys", "allow", name, "--keys-dir", keys)

    # Beyond loopback, a controller without keys refuses to start, and says what to do.
    refused = subprocess.run([*on_controller, *FARM, "controller", "--bind", f"tcp://{ip}:0"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "FARM_KEYS": str(tmp_path / "no-keys")})
    assert refused.returncode == 1
    assert "needs keys" in refused.stderr and "--insecure" in refused.stderr, refused.stderr

    controller, url = start_controller(on_controller, "--bind", f"tcp://{ip}:0", "--keys-dir", keys,
                                       "--state-dir", str(tmp_path / "state"))
    caches = [tmp_path / f"cache-n{i}" for i in range(2)]
    agents = [subprocess.Popen([*on_node, *FARM, "agent", "--controller", url, "--keys-dir", keys, "--key", "node",
                                "--slots", "1", "--id", f"n{i}", "--cache-dir", str(caches[i])]) for i in range(2)]
    try:
        # The project travels: uploaded by the client, fetched by each agent into its own cache,
        # outputs downloaded back; nobody reads another host's folders.
        project = synthetic(jobs=60, inputs="in", output_bytes=32)
        (project / "in").mkdir()
        for i in range(60):
            (project / "in" / f"job-{i:07d}.txt").write_text(f"asset {i}")
        done = subprocess.run([*on_node, *FARM, "submit", "--controller", url, "--keys-dir", keys, "--key", "client",
                               "--json", str(project)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["jobs"]["done"] == 60
        assert all(o.startswith(str(project)) for o in summary["outputs"])
        assert len(list(Path(project, "output").glob("*.bin"))) == 60
        assert Path(project, "output", "job-0000042.txt").read_text() == "asset 42"
        uploaded = list((tmp_path / "state" / "uploads").iterdir())
        assert len(uploaded) == 1 and (uploaded[0] / "in" / "job-0000042.txt").is_file()
        for cache in caches:  # each agent fetched into its own cache
            assert any(p.is_file() for p in (cache / "files").rglob("*")), cache

        # A client without an allowed key gets nowhere.
        run(*FARM, "keys", "create", "stranger", "--keys-dir", keys)
        stranger = subprocess.run([*on_node, *FARM, "status", "--controller", url, "--keys-dir", keys, "--key",
                                   "stranger"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "FARM_CLIENT_TIMEOUT": "3"})
        assert stranger.returncode == 1 and "refused the secure handshake" in stranger.stderr, stranger.stderr
    finally:
        for proc in [*agents, controller]:
            proc.terminate()
        for proc in [*agents, controller]:
            proc.wait(30)
        assert controller.stderr is not None
        controller.stderr.close()
