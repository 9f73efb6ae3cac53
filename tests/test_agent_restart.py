"""A render node that crashed and came back keeps its agent id: real controllers, `farm agent`
processes and sockets.

The controller is given a liveness timeout far longer than any test, so only the node token
(`farm.agent.nodetoken`, `farm.controller.restarts`) can free a dead agent's id in time; the
dead agent's connection is held open and silent by a relay (`SilentLink`), as a node's whose
power was cut. Two live agents that claim one id are still told apart (test_sched_faults).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from agent_restart_helpers import Nodes, SilentLink, gated_plugin, gated_project
from conftest import Background, wait_for
from control_helpers import EventLog
from sched_helpers import HandWrittenAgent

from farm.agent.agent import Agent
from farm.agent.nodetoken import claim
from farm.controller.server import Controller
from farm.keys import KeyStore
from farm.security import ClientSecurity, ServerSecurity

WAIT_S = 60  # generous: the machine is loaded; nothing waits this long unless it fails
TOKEN = "a" * 64


@pytest.fixture
def patient(tmp_path: Path):
    """A controller that would wait 1000 s of silence before declaring an agent dead."""
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "controller-state", heartbeat=0.5,
                     liveness=2000)
    ctl.start()
    yield ctl
    ctl.stop(shutdown_agents=True)


@pytest.fixture
def nodes(tmp_path: Path):
    started = Nodes(tmp_path / "nodes")
    yield started
    started.stop()


def test_a_node_killed_mid_job_comes_back_under_its_id_and_stays_drained(tmp_path, patient, nodes):
    gate = gated_plugin(tmp_path / "gated")
    nodes.env = gate.env
    link = SilentLink(patient.url)
    events = EventLog(patient)
    try:
        first, _ = nodes.start(link.url, "render01", "render01")
        old = wait_for(lambda: patient.registry.by_id("render01"), WAIT_S, "render01")
        run = Background(patient.url, gated_project(tmp_path / "project", 2))
        (running,) = wait_for(gate.started, WAIT_S, "a job running on render01")
        drained = subprocess.run([sys.executable, "-m", "farm", "drain", "render01", "--controller",
                                  patient.url], capture_output=True, text=True, timeout=120)
        assert drained.returncode == 0, drained.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(WAIT_S)
        wait_for(lambda: link.silenced == 1, WAIT_S, "the relay to hold the dead agent's connection open")
        assert patient.registry.get(old.identity) is old  # the controller has noticed nothing

        _, log = nodes.start(patient.url, "render01", "render01")  # the same node, at once
        new = wait_for(lambda: next((a for a in patient.registry if a is not old), None), WAIT_S, "its HELLO")
        assert new.id == "render01" and patient.registry.get(old.identity) is None
        assert [a.id for a in patient.registry] == ["render01"]
        joined = wait_for(lambda: events.settled().of("agent.joined", agent="render01")[1:], WAIT_S,
                          "its agent.joined")
        back = joined[0].seq
        (left,) = events.of("agent.left", agent="render01")
        assert "restarted" in left.data["reason"]
        (requeued,) = events.of("job.retried", agent="render01")  # its running job, once, at no attempt
        assert requeued.job == running and requeued.data["counted"] is False
        assert wait_for(lambda: "connected to" in log.read_text(), WAIT_S, "its line")
        assert "known there as" not in log.read_text()

        # drained before the crash, drained after it: the requeued job waits for another node
        (listed,) = patient.status()["agents"]
        assert listed["id"] == "render01" and listed["state"] == "draining" and listed["jobs"] == 0
        nodes.start(patient.url, "helper", "helper")
        wait_for(lambda: patient.registry.by_id("helper"), WAIT_S, "the helper")
        gate.gate.unlink()
        wait_for(run.done, 120, "the run")
        assert run.error is None and run.summary.ok and run.summary.done == 2
        done = events.settled().of("job.done")
        assert sorted((e.job, e.agent) for e in done) == [("job-0", "helper"), ("job-1", "helper")]
        assert not events.of("job.started", agent="render01", after=back)
        assert gate.started() == sorted([running, "job-0", "job-1"])  # the killed attempt, then one each
    finally:
        link.close()


def test_two_agents_of_one_node_with_one_id_are_told_apart_and_told_why(tmp_path, patient, nodes):
    procs_logs = [nodes.start(patient.url, "render01", "render01") for _ in range(2)]
    wait_for(lambda: len(patient.registry) == 2, WAIT_S, "both agents")
    assert sorted(a.id for a in patient.registry) == ["render01", "render01-2"]
    logs = [log for _, log in procs_logs]
    wait_for(lambda: all("connected to" in log.read_text() for log in logs), WAIT_S, "both connected")
    said = [log.read_text() for log in logs]
    assert sum("an agent with the id 'render01' already runs on this machine" in s for s in said) == 1, said
    assert sum("known there as 'render01-2'" in s for s in said) == 1, said
    assert len({a.node for a in patient.registry} - {""}) == 1  # one of them shows the token, one none


def hold(job):
    return None


def done(job):
    return ({"lease": job["lease"], "ok": True, "result": None, "files": [], "duration": 0.01}, [])


@pytest.mark.parametrize("differs", ["token", "no token", "host", "id"])
def test_a_hello_not_of_the_live_agents_node_is_renamed(patient, synthetic, differs):
    """Only the same node (token, host and claimed id; key: test_with_keys...) takes a live id."""
    live = HandWrittenAgent(patient.url, "node", hold, slots=2, session="s1", node=TOKEN)
    other = None
    try:
        run = Background(patient.url, synthetic(jobs=4))
        wait_for(lambda: len(live.leases) == 2, WAIT_S, "the live agent's jobs")
        node, host, agent_id = {"token": ("b" * 64, "elsewhere", "node"),
                                "no token": (None, "elsewhere", "node"),
                                "host": (TOKEN, "another", "node"),
                                "id": (TOKEN, "elsewhere", "node-2")}[differs]
        other = HandWrittenAgent(patient.url, agent_id, done, slots=2, session="s2", node=node, host=host)
        wait_for(lambda: other.welcome, WAIT_S, "its welcome")
        assert other.welcome["agent"] == "node-2" and len(patient.registry) == 2
        assert patient.registry.by_id("node").session == "s1"
        assert {patient.leases[lease].agent_id for lease in live.leases} == {"node"}  # none moved
        live.close()
        wait_for(run.done, 120, "the run")
        assert run.summary.ok and run.summary.done == 4
    finally:
        live.close()
        if other is not None:
            other.close()


def test_the_same_nodes_next_process_takes_the_id_and_the_jobs_run_once(patient, synthetic):
    events = EventLog(patient)
    dead = HandWrittenAgent(patient.url, "node", hold, slots=3, session="s1", node=TOKEN)
    after = None
    try:
        run = Background(patient.url, synthetic(jobs=6))
        wait_for(lambda: len(dead.leases) == 3, WAIT_S, "the first process's jobs")
        dead._stop.set()  # silent from now on, its connection open: a power cut, as the controller sees it
        dead.thread.join(WAIT_S)
        after = HandWrittenAgent(patient.url, "node", done, slots=3, session="s2", node=TOKEN)
        wait_for(lambda: after.welcome, WAIT_S, "the next process's welcome")
        assert after.welcome["agent"] == "node" and [a.session for a in patient.registry] == ["s2"]
        wait_for(run.done, 120, "the run")
        assert run.summary.ok and run.summary.done == 6
        done_events = events.settled().of("job.done")
        assert len(done_events) == 6 and len({e.job for e in done_events}) == 6
        assert len(events.of("job.retried", agent="node")) == 3  # the dead one's three, once each
        (left,) = events.of("agent.left", agent="node")
        assert "restarted" in left.data["reason"]
    finally:
        dead.close()
        if after is not None:
            after.close()


def test_a_renamed_nodes_next_process_takes_the_name_it_had(patient):
    """A node renamed because another node has its --id comes back under the name it was given."""
    peers = [HandWrittenAgent(patient.url, "node", hold, caps=(), session="s1", node="b" * 64),
             HandWrittenAgent(patient.url, "node", hold, caps=(), session="s2", node=TOKEN)]
    try:
        wait_for(lambda: all(p.welcome for p in peers), WAIT_S, "both welcomes")
        assert [p.welcome["agent"] for p in peers] == ["node", "node-2"]
        peers[1]._stop.set()  # silent, its connection open: its power was cut
        peers[1].thread.join(WAIT_S)
        peers.append(HandWrittenAgent(patient.url, "node", hold, caps=(), session="s3", node=TOKEN))
        wait_for(lambda: peers[2].welcome, WAIT_S, "the next process's welcome")
        assert peers[2].welcome["agent"] == "node-2"
        assert sorted((a.id, a.session) for a in patient.registry) == [("node", "s1"), ("node-2", "s3")]
    finally:
        for peer in peers:
            peer.close()


def test_a_copied_token_displaces_a_live_agent_once_and_then_proves_nothing(patient):
    """Two live processes with one token (a cloned disk): the first one found alive again after
    it was displaced marks the token shared; from then on it is renamed like any second claimant."""
    peers = [HandWrittenAgent(patient.url, "node", hold, caps=(), session="s1", node=TOKEN)]
    try:
        wait_for(lambda: peers[0].welcome, WAIT_S, "the first welcome")
        peers.append(HandWrittenAgent(patient.url, "node", hold, caps=(), session="s2", node=TOKEN))
        wait_for(lambda: peers[1].welcome, WAIT_S, "the clone's welcome")
        assert peers[1].welcome["agent"] == "node"  # it could be a restart: it is believed once
        # the first is alive after all: it says HELLO again (its agent would, told "unknown agent")
        peers.append(HandWrittenAgent(patient.url, "node", hold, caps=(), session="s1", node=TOKEN))
        wait_for(lambda: peers[2].welcome, WAIT_S, "the first's HELLO again")
        assert peers[2].welcome["agent"] == "node-2"
        peers.append(HandWrittenAgent(patient.url, "node", hold, caps=(), session="s3", node=TOKEN))
        wait_for(lambda: peers[3].welcome, WAIT_S, "a third process's welcome")
        assert peers[3].welcome["agent"] == "node-3"  # the token proves nothing now
        assert sorted((a.id, a.session) for a in patient.registry) == [("node", "s2"), ("node-2", "s1"),
                                                                       ("node-3", "s3")]
    finally:
        for peer in peers:
            peer.close()


@pytest.mark.parametrize("token", [7, "a" * 16, "a" * 129, "g/" * 32, "é" * 64])
def test_a_malformed_node_token_is_refused_and_takes_nothing(patient, token):
    live = HandWrittenAgent(patient.url, "node", hold, caps=(), session="s1", node=TOKEN)
    bad = None
    try:
        wait_for(lambda: live.welcome, WAIT_S, "the live agent's welcome")
        before = patient.health["bad_messages"]
        bad = HandWrittenAgent(patient.url, "node", hold, caps=(), session="s2", node=token)
        wait_for(lambda: patient.health["bad_messages"] > before, WAIT_S, "the HELLO refused")
        assert [(a.id, a.session) for a in patient.registry] == [("node", "s1")] and bad.welcome is None
    finally:
        live.close()
        if bad is not None:
            bad.close()


def test_with_keys_a_token_proves_a_restart_only_under_the_same_key(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    for name in ("controller", "n1", "n2"):
        keys.create(name)
    keys.allow("n1", role="agent")
    keys.allow("n2", role="agent")
    security = ServerSecurity(keys.root)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=2000,
                     security=security)
    ctl.start()
    agents: list[tuple[Agent, threading.Thread]] = []

    def start(key: str) -> Agent:
        scratch = tmp_path / f"scratch-{len(agents)}"
        scratch.mkdir()
        agent = Agent(ctl.url, slots=1, agent_id="node", scratch=scratch, node=TOKEN, peers=False,
                      socket_setup=ClientSecurity(keys.root, key).socket_setup)
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        agents.append((agent, thread))
        return agent

    try:
        start("n1")
        first = wait_for(lambda: ctl.registry.by_id("node"), WAIT_S, "n1's agent")
        start("n2")  # the same token and host, another key: another node, whatever it shows
        wait_for(lambda: len(ctl.registry) == 2, WAIT_S, "n2's agent")
        assert ctl.registry.by_id("node") is first and ctl.registry.by_id("node-2").key_name == "n2"
    finally:
        for agent, thread in agents:
            agent.stop()
            thread.join(30)
        ctl.stop(shutdown_agents=True)
        security.stop()


def test_the_token_file_is_private_and_held_while_its_agent_runs(tmp_path):
    folder = tmp_path / "state" / "agents"
    first = claim("render01", folder)
    assert first is not None and len(first.token) == 64
    assert os.stat(folder).st_mode & 0o777 == 0o700 and os.stat(first.path).st_mode & 0o777 == 0o600
    assert claim("render01", folder) is None  # held: a second agent of this id here gets none
    other = claim("render02", folder)
    assert other is not None and other.token != first.token
    token = first.token
    first.release()
    again = claim("render01", folder)
    assert again is not None and again.token == token  # the same node, the same token
    assert first.path.read_text().splitlines() == [token, f"pid {os.getpid()}"]
    again.release()
    first.path.write_text("garbage\n")  # torn, or edited: a new token, not a malformed one
    fresh = claim("render01", folder)
    assert fresh is not None and fresh.token != token and len(fresh.token) == 64
    fresh.release()
    other.release()
