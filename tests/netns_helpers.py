"""A small LAN in network namespaces: hosts on one bridge, for discovery and firewall tests.

Needs root and iproute2 (CI has both); elsewhere the tests using it are skipped. The bridge
lives in a namespace of its own, so the machine's own network is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import IN_CI


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    ip: str
    dev: str

    @property
    def prefix(self) -> list[str]:
        """Run a command on this host: prefix + command."""
        return ["ip", "netns", "exec", self.name]


def make_lan(count: int) -> Iterator[list[Host]]:
    """`count` hosts on one bridge (10.232.X.1, .2, ...), with multicast, as a generator for a fixture."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        if IN_CI:
            raise RuntimeError("the LAN tests need root and iproute2 in CI")
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = f"{os.getpid() % 100000}"
    net = f"10.232.{os.getpid() % 250}"
    switch = f"fsw{tag}"
    hosts = [Host(f"fh{i}-{tag}", f"{net}.{i + 1}", f"e{i}") for i in range(count)]
    made = [switch]
    try:
        sh("ip", "netns", "add", switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts):
            sh("ip", "netns", "add", host.name)
            made.append(host.name)
            sh("ip", "link", "add", f"fl{i}-{tag}", "type", "veth", "peer", "name", f"fp{i}-{tag}")
            sh("ip", "link", "set", f"fl{i}-{tag}", "netns", host.name)
            sh("ip", "link", "set", f"fp{i}-{tag}", "netns", switch)
            sh("ip", "-n", switch, "link", "set", f"fp{i}-{tag}", "master", "br0")
            sh("ip", "-n", switch, "link", "set", f"fp{i}-{tag}", "up")
            sh("ip", "-n", host.name, "link", "set", f"fl{i}-{tag}", "name", host.dev)
            sh("ip", "-n", host.name, "addr", "add", f"{host.ip}/24", "dev", host.dev)
            sh("ip", "-n", host.name, "link", "set", host.dev, "up", "multicast", "on")
            sh("ip", "-n", host.name, "link", "set", "lo", "up")
            # mDNS goes to 224.0.0.251: a namespace without a default route needs a multicast one
            sh("ip", "-n", host.name, "route", "add", "224.0.0.0/4", "dev", host.dev)
    except subprocess.CalledProcessError as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if IN_CI:
            raise
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.decode().strip()}")
    try:
        yield hosts
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def firewall(host: Host, *tcp_ports: int) -> None:
    """Drop every new inbound connection to `host` except to `tcp_ports` (and mDNS), with nftables."""
    nft = shutil.which("nft")
    if nft is None:
        if IN_CI:
            raise RuntimeError("the firewall test needs nftables (scripts/setup.sh installs it)")
        pytest.skip("needs nftables (nft)")
    ports = ", ".join(map(str, tcp_ports))
    rules = f"""
table inet farmtest {{
  chain input {{
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    udp dport 5353 accept
    tcp dport {{ {ports} }} accept
  }}
}}
"""
    subprocess.run([*host.prefix, nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
