"""A revoked key cuts its holder off, and says so at once.

A revoke refuses new handshakes and a connected peer's requests, but a follower or an event
subscriber sends nothing while it listens: the controller went on pushing it a run's updates
for as long as the run lasted. A follower whose restarted controller refused its key waited
out its whole reconnect window (ten minutes) "for the controller". A revoked agent was dropped
without a word, learnt it seconds later from a refused reconnect, and then idled for ever.

Real secured controller (CURVE keys, ZAP), real client sockets, real agent processes; waits on
conditions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from farm.cli.agent import JOIN_REFUSED_EXIT
from farm.client import Client
from farm.controller.server import Controller
from farm.errors import ConnectionLost
from farm.handshake import HandshakeRefused
from farm.keys import SecurityError
from farm.project import load_project
from farm.security import ClientSecurity, KeyStore, ServerSecurity

ENDS_WITHIN_S = 60  # generous on a loaded machine; without the fix the client never ends


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    for name in ("controller", "alice", "bob", "node"):
        store.create(name)
    store.allow("alice")
    store.allow("bob")
    store.allow("node", role="agent")
    return store


class SecuredController:
    """An in-process controller with keys, stopped and started again on the same address."""

    def __init__(self, keys: KeyStore, state: Path) -> None:
        self.keys, self.state = keys, state
        self.url = "tcp://127.0.0.1:0"
        self.security: ServerSecurity | None = None
        self.controller: Controller | None = None

    def start(self) -> Controller:
        self.security = ServerSecurity(self.keys.root)
        self.controller = Controller(self.url, state_dir=self.state, heartbeat=0.5, liveness=4,
                                     security=self.security).start()
        assert self.controller.url is not None
        self.url = self.controller.url
        return self.controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.security is not None:
            self.security.stop()
        self.controller = self.security = None


@pytest.fixture
def secured(keys: KeyStore, tmp_path: Path) -> Iterator[SecuredController]:
    farm = SecuredController(keys, tmp_path / "state")
    farm.start()
    yield farm
    farm.stop()


def client_as(farm: SecuredController, name: str) -> Client:
    return Client(farm.url, socket_setup=ClientSecurity(farm.keys.root, name, "controller").socket_setup,
                  timeout=30)


def in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # read by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_follower_whose_key_is_revoked_is_cut_off_and_told_why(secured, keys, synthetic):
    project = synthetic(jobs=5, sleep=0.1)  # no agents: the run goes on, its followers hear of it
    updates: list[dict] = []
    with client_as(secured, "alice") as alice, client_as(secured, "bob") as bob:
        run_id = alice.submit(load_project(project))
        thread, outcome = in_thread(lambda: alice.follow(run_id, updates.append))
        bob_heard: list[dict] = []
        bob_thread, _ = in_thread(lambda: bob.attach(run_id, bob_heard.append))
        wait_for(lambda: updates and bob_heard, 30, "both followers hearing of the run")
        keys.revoke("alice")
        thread.join(ENDS_WITHIN_S)
        assert not thread.is_alive(), "the revoked follower went on hearing of the run"
        error = outcome.get("error")
        assert isinstance(error, SecurityError), outcome
        assert "the key this client proved was revoked here" in str(error)
        controller = secured.controller
        assert all(len(f) == 1 for f in controller.followers.values())  # bob only
        heard = len(bob_heard)
        wait_for(lambda: len(bob_heard) > heard, 30, "the follower whose key stands hearing on")
        assert bob_thread.is_alive()


def test_an_event_subscriber_whose_key_is_revoked_is_cut_off(secured, keys, synthetic):
    with client_as(secured, "alice") as alice, client_as(secured, "bob") as bob:
        events: list[dict] = []
        thread, outcome = in_thread(lambda: [events.append(e) for e in alice.events(since=0)])
        bob.submit(load_project(synthetic(jobs=3)))
        wait_for(lambda: any(e["type"] == "run.submitted" for e in events), 30, "the subscriber's event")
        keys.revoke("alice")
        thread.join(ENDS_WITHIN_S)
        assert not thread.is_alive(), "the revoked subscriber went on getting events"
        assert isinstance(outcome.get("error"), SecurityError), outcome
        assert secured.controller.subscribers.cursors == {}


def test_a_follower_refused_by_its_restarted_controller_gives_up_at_once(secured, keys, synthetic):
    waits: list[str] = []
    with client_as(secured, "alice") as alice:
        run_id = alice.submit(load_project(synthetic(jobs=5, sleep=0.1)))
        updates: list[dict] = []
        thread, outcome = in_thread(lambda: alice.follow(run_id, updates.append, reconnect_s=3600,
                                                         on_wait=waits.append))
        wait_for(lambda: updates, 30, "the follower hearing of the run")
        secured.stop()
        keys.revoke("alice")
        secured.start()  # the same address and state: the run resumes, alice's key is refused
        thread.join(ENDS_WITHIN_S)
        assert not thread.is_alive(), "the refused follower waited for a controller that refuses it"
        error = outcome.get("error")
        # a refusal, not a controller gone: the CLI's --json code says security, not unreachable
        assert isinstance(error, SecurityError) and isinstance(error, ConnectionLost), outcome
        assert "revoked there" in str(error) and "did not come back" not in str(error)
        assert "`farm keys invite --client`" in str(error)  # a client's token, not a node's


def agent_process(farm: SecuredController) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "farm", "agent", "--controller", farm.url, "--keys-dir",
                             str(farm.keys.root), "--id", "render-07", "--slots", "1"],
                            stderr=subprocess.PIPE, text=True)


def wait_joined(farm: SecuredController) -> None:
    wait_for(lambda: [a["id"] for a in farm.controller.status()["agents"]] == ["render-07"], 60,
             "the agent to join")


def test_an_agent_whose_key_is_revoked_is_told_and_stops(secured, keys):
    agent = agent_process(secured)
    try:
        wait_joined(secured)
        keys.revoke("node")
        _, err = agent.communicate(timeout=ENDS_WITHIN_S)
    finally:
        agent.kill()
    # a service manager does not restart it (RestartPreventExitStatus=78): it would only be refused again
    assert agent.returncode == JOIN_REFUSED_EXIT, err
    assert "key node was revoked here" in err and "farm keys invite" in err, err


def test_an_agent_refused_as_revoked_by_its_restarted_controller_stops(secured, keys):
    agent = agent_process(secured)
    try:
        wait_joined(secured)
        secured.stop()
        keys.revoke("node")
        secured.start()
        _, err = agent.communicate(timeout=ENDS_WITHIN_S)
    finally:
        agent.kill()
    assert agent.returncode == JOIN_REFUSED_EXIT, err
    assert "so it was revoked there" in err, err


def test_a_client_refused_before_its_first_request_is_told_why(secured, keys):
    """A DEALER whose handshake failed holds no connection to queue a message on (libzmq drops it
    and does not dial again): its send blocked for ever, and `farm status` with it."""
    with client_as(secured, "alice") as alice:
        alice.status()  # accepted once: a later refusal reads as a revoke
    keys.revoke("alice")
    for attempt in range(5):  # the connection is gone a moment after the refusal: most tries catch it
        refusals = secured.security.refusals
        refused = client_as(secured, "alice")
        wait_for(lambda: secured.security.refusals > refusals, 30, "the handshake refused")
        thread, outcome = in_thread(refused.status)
        thread.join(ENDS_WITHIN_S)
        assert not thread.is_alive(), f"try {attempt}: the request blocked on a refused connection"
        refused.close()  # (not while another thread may still use it)
        error = outcome.get("error")
        assert isinstance(error, HandshakeRefused) and "revoked there" in str(error), outcome
