"""An agent the controller renames (another live agent has its --id) registers its block server
under the new name: under the old one the tracker took it for the first agent and dropped that
agent's server from the swarm."""

from __future__ import annotations

from farm.agent.agent import Agent
from farm.protocol import T, pack, unpack


def test_a_renamed_agent_serves_peers_under_its_new_name(tmp_path):
    agent = Agent("tcp://127.0.0.1:9", slots=1, scratch=tmp_path / "scratch", agent_id="render01")
    try:
        assert agent.sync.peers is not None and agent.sync.peers.agent == "render01"
        agent._on_message(unpack(pack(T.WELCOME, {"heartbeat": 1.0, "liveness": 5, "agent": "render01-2"})))
        assert agent.sync.peers.agent == "render01-2"
    finally:
        agent.zctx.term()
        agent.scratch_hold.release()
