"""Discovery on a LAN and the two fixed ports behind a firewall: hosts are network namespaces on one bridge.

Real `farm controller`, `farm agent` and `farm submit` processes, mDNS over the bridge, nftables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from join_helpers import farm_processes
from netns_helpers import Host, firewall, make_lan
from test_join import project_with_assets

from farm.keys import KeyStore


@pytest.fixture
def lan() -> Iterator[list[Host]]:
    yield from make_lan(3)


def keys(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "farm", "keys", *args], check=True, capture_output=True)


def test_discovery_finds_the_controller_rejects_an_impostor_and_syncs_through_a_firewall(lan, tmp_path, synthetic):
    ctl_host, node_host, impostor_host = lan
    ctl, node, impostor = (str(tmp_path / name) for name in ("ctl", "node", "impostor"))
    keys("create", "controller", "--keys-dir", ctl)
    keys("create", "controller", "--keys-dir", impostor)
    keys("create", "node", "--keys-dir", node)
    keys("import", "--keys-dir", node, "--", "controller", KeyStore(ctl).load("controller").public.decode())
    keys("allow", "--keys-dir", ctl, "--name", "n1", "--", KeyStore(node).load("node").public.decode())
    # The controller's host lets in its two ports (and mDNS) and nothing else.
    firewall(ctl_host, 5555, 5556)

    with farm_processes(tmp_path) as farm:
        # Only an impostor announces itself: its key is not the one the node knows, so nobody is dialled.
        farm.controller("--bind", "tcp://0.0.0.0:5555", prefix=impostor_host.prefix, keys="impostor")
        alone = farm.run("agent", "--keys-dir", node, "--id", "n1", prefix=node_host.prefix)
        assert alone.returncode == 1, alone.stderr
        assert f"ignoring the controller announced at tcp://{impostor_host.ip}:5555" in alone.stderr
        assert KeyStore(impostor).load("controller").public.decode() in alone.stderr
        assert "found no controller with a key we know" in alone.stderr

        # The real one: found, its key checked, its two ports printed at start-up.
        proc, _, _ = farm.controller("--bind", "tcp://0.0.0.0:5555", prefix=ctl_host.prefix, keys="ctl")
        said = proc.wait_line("file service on")
        assert "file service on tcp://0.0.0.0:5556 (a firewall must let both ports in)" in said
        agent = farm.agent("n1", "--keys-dir", node, prefix=node_host.prefix)
        assert f"found controller tcp://{ctl_host.ip}:5555" in agent.wait_line("found controller")
        agent.wait_line(f"connected to tcp://{ctl_host.ip}:5555 as n1")

        # A client finds it too (opt-in: --controller auto), and the project's files sync over the file port.
        keys("create", "client", "--keys-dir", node)
        keys("allow", "--keys-dir", ctl, "--name", "laptop", "--", KeyStore(node).load("client").public.decode())
        project = project_with_assets(synthetic)
        done = farm.run("submit", "--controller", "auto", "--keys-dir", node, "--json", str(project),
                        prefix=node_host.prefix, timeout=240)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["jobs"]["done"] == 6
        assert (project / "output" / "job-0000003.txt").read_text() == "asset 3"  # fetched by the agent

        # The firewall is real: a third port on the controller's host is not reachable from the node.
        listener = subprocess.Popen([*ctl_host.prefix, sys.executable, "-c",
                                     "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 5557)); s.listen();"
                                     "print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
            probe = subprocess.run([*node_host.prefix, sys.executable, "-c",
                                    f"import socket; socket.create_connection(('{ctl_host.ip}', 5557), timeout=2)"],
                                   capture_output=True, text=True, timeout=60)
            assert probe.returncode != 0 and "timed out" in probe.stderr, probe.stderr
        finally:
            listener.kill()
            listener.wait()
            if listener.stdout is not None:
                listener.stdout.close()
