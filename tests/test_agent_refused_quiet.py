"""An agent the controller refuses says why once and retries quietly: not "controller silent" at every
retry, which reads as if the controller were down when it answered (with a refusal).

A real keyed `farm controller` and a real `farm agent` process holding a key it does not allow."""

from __future__ import annotations

import subprocess

from join_helpers import ENV, FARM, Proc, farm_processes

from farm.keys import KeyStore


def test_a_refused_agent_says_why_once_and_not_that_the_controller_is_silent(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        controller_key = KeyStore(tmp_path / "ctl").load("controller").public.decode()
        stranger = KeyStore(tmp_path / "stranger")
        stranger.create("node")  # a key pair of its own, which the controller never allowed
        log = tmp_path / "stranger.log"
        with open(log, "wb") as out:  # at debug level, to see what the retry says
            proc = subprocess.Popen([*FARM, "--log-level", "debug", "agent", "--keys-dir", str(stranger.root),
                                     "--controller", url, "--server-key", controller_key, "--id", "stranger",
                                     "--slots", "1"], stderr=out, stdout=subprocess.DEVNULL, env=ENV)
        agent = Proc(proc, log)
        farm.procs.append(agent)
        agent.wait_line("not in its allowed list")
        silent = agent.wait_line("controller silent for ")  # the first retry after the refusal
        assert " DEBUG farm.agent.agent: " in silent, agent.text()
        assert "WARNING farm.agent.agent: controller silent" not in agent.text(), agent.text()
