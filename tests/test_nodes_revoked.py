"""A revoked agent is cut off and shown as refused at once: its jobs go to the others."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Background, wait_for

from farm.client import Client, submit
from farm.controller.server import Controller
from farm.keys import KeyStore, SecurityError
from farm.project import load_project
from farm.security import ClientSecurity, ServerSecurity

NODES = ("render-07", "render-08")


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.create("controller")
    for name in NODES:
        keys.create(name)
        keys.allow(name)
    return keys


@pytest.fixture
def secured(store: KeyStore, tmp_path: Path) -> Iterator[Controller]:
    security = ServerSecurity(store.root)
    controller = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                            security=security)
    controller.start()
    yield controller
    controller.stop(shutdown_agents=True)
    security.stop()


def _status(url: str, store: KeyStore, *, text: bool = False) -> dict | str:
    """`farm status` as a user runs it, with the controller's own key (a local client's)."""
    cmd = [sys.executable, "-m", "farm", "status", "--controller", url, "--keys-dir", str(store.root),
           "--key", "controller", *(() if text else ("--json",))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout if text else json.loads(done.stdout)


class KeyedRun(Background):
    """`Background`, submitting with keys."""

    def __init__(self, url: str, project: Path, keys: ClientSecurity) -> None:
        self.keys = keys
        super().__init__(url, project)

    def _run(self, url: str, project: Path) -> None:
        try:
            self.summary = submit(url, load_project(project), socket_setup=self.keys.socket_setup)
        except BaseException as exc:
            self.error = exc


def test_a_revoked_agent_is_shown_refused_at_once_and_its_jobs_move(secured, store, agents, synthetic):
    url = secured.url
    for name in NODES:
        keys = ["--keys-dir", str(store.root), "--key", name, "--server-key", "controller"]
        agents(url, 1, slots=2, extra=keys)
    wait_for(lambda: len(secured.status()["agents"]) == 2, 60, "both agents to join")
    project = synthetic(jobs=40, sleep=0.2, name="revoked")
    client = ClientSecurity(store.root, "controller", "controller")
    run = KeyedRun(url, project, client)
    by_key = {}
    wait_for(lambda: by_key.update({a["key"]: a for a in secured.status()["agents"]}) or
             all(by_key.get(n, {}).get("jobs") for n in NODES), 60, "both agents to hold jobs")
    revoked = by_key["render-07"]

    store.revoke("render-07")
    report = _status(url, store)  # the very next look, with no wait
    assert [a["key"] for a in report["agents"]] == ["render-08"]
    (refused,) = report["refused"]
    assert (refused["id"], refused["key"], refused["reason"]) == (revoked["id"], "render-07",
                                                                   "key render-07 revoked")
    assert refused["public_key"] == store.load("render-07").public.decode()
    assert "REFUSED: key render-07 revoked" in _status(url, store, text=True)

    wait_for(run.done, 120, "the run to finish on the agent still allowed")
    assert run.error is None and run.summary.ok, run.summary
    assert run.summary.done == 40
    with Client(url, socket_setup=client.socket_setup) as look:
        assert [a["key"] for a in look.status()["agents"]] == ["render-08"]  # it never came back


def test_an_agent_with_an_unlisted_key_is_shown_refused(secured, store, agents):
    store.create("stranger")  # a key pair, never allowed
    agents(secured.url, 1, extra=["--keys-dir", str(store.root), "--key", "stranger"])
    stranger = store.load("stranger").public.decode()
    wait_for(lambda: stranger in secured.status()["refused_keys"], 60, "the handshake to be refused")
    assert _status(secured.url, store)["agents"] == []
    text = _status(secured.url, store, text=True)
    assert f"REFUSED at the handshake: key {stranger} is not allowed" in text


def test_a_revoked_key_refused_at_the_handshake_is_named(secured, store):
    """A client (or node) that dials in again after its key was revoked is listed by the name its key
    had, not as an unknown key."""
    store.create("laptop")
    store.allow("laptop", role="client")
    laptop = ClientSecurity(store.root, "laptop", "controller")
    with Client(secured.url, socket_setup=laptop.socket_setup) as allowed:
        allowed.status()
    store.revoke("laptop")
    key = store.load("laptop").public.decode()
    with Client(secured.url, socket_setup=laptop.socket_setup, timeout=30) as refused:
        with pytest.raises(SecurityError, match="revoked there"):  # the CLI's --json code: security
            refused.status()
    # (STATUS is answered from a snapshot up to 0.25 s old: the one taken before the revoke, at first)
    report = wait_for(lambda: (r := _status(secured.url, store))["refused_keys"] and r, 30, "the refusal")
    assert report["revoked_keys"] == {key: "laptop"} and report["refused_keys"] == [key]
    text = _status(secured.url, store, text=True)
    assert f"REFUSED at the handshake: key laptop was revoked ({key})" in text
