"""Silent stalls and misbehaving agents: real controllers, real agent processes, the real CLI.

Covers the cases "A node that cannot run anything", "One agent, one bad input" and
duplicate-agent-id (shared/cases), and the agent attacks requeue-sabotage, huge-output and
id-takeover (shared/cases/security).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from conftest import Background, wait_for
from farm_synthetic import payload
from sched_helpers import HandWrittenAgent, failing_interpreter, farm_cli, install_plugin, oversized, requeue
from wire_helpers import result_row

from farm.cli.status import status_text
from farm.client import submit
from farm.embedded import stop_agents
from farm.errors import ProjectError
from farm.project import DEFAULT_MAX_OUTPUT_MIB, load_project
from farm.protocol import T, pack

CASES = Path(__file__).parent / "cases"


def keys(n: int) -> list[str]:
    return [f"job-{i:07d}" for i in range(n)]


@pytest.fixture
def logged_agents(tmp_path):
    """Agent processes whose stderr goes to a file: start(url, agent_id, python=...) -> log path."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, agent_id: str, *, python: str = sys.executable, slots: int = 1) -> Path:
        log = tmp_path / f"agent-{len(procs)}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(
                [python, "-P", "-m", "farm", "--log-level", "info", "agent", "--controller", url,
                 "--id", agent_id, "--slots", str(slots), "--parent-pid", str(os.getpid()),
                 "--cache-dir", str(tmp_path / f"cache-{len(procs)}")], stdout=out, stderr=out))
        return log

    yield start
    stop_agents(procs)


# -- a node that cannot run anything -------------------------------------------------------


def shadowing_folder(folder: Path) -> Path:
    """A folder a user might run farm from: a checkout named farm, a stray msgpack.py, a plugin's name."""
    for package in ("farm", "farm_synthetic"):
        (folder / package).mkdir(parents=True)
        shadow = f'raise ImportError("the {package} in the current folder")\n'
        (folder / package / "__init__.py").write_text(shadow)
    (folder / "msgpack.py").write_text('raise ImportError("the msgpack.py in the current folder")\n')
    return folder


def test_workers_start_whatever_the_current_folder_holds(tmp_path, synthetic):
    cwd = shadowing_folder(tmp_path / "checkout")
    project = synthetic(jobs=6, output_bytes=8)
    rc, summary, err = farm_cli("submit", str(project), "--agents", "2", "--json", cwd=cwd)
    assert rc == 0, err
    assert summary["jobs"]["done"] == 6
    assert (project / "output" / "job-0000005.bin").read_bytes() == payload("job-0000005", 8)


@pytest.mark.parametrize("how", ["message", "signal"])
def test_an_agent_whose_workers_die_at_start_is_broken_and_a_submit_fails_fast(
        tmp_path, controller, logged_agents, synthetic, how):
    python = failing_interpreter(tmp_path / "bin", "farm.agent.worker", how)
    log = logged_agents(controller.url, "node1", python=str(python))
    wait_for(lambda: any(a["broken"] for a in controller.status()["agents"]), 60, "the agent to say so")
    agent = controller.status()["agents"][0]
    expected = "a broken install" if how == "message" else "exit code -9"
    assert agent["id"] == "node1" and expected in agent["broken"]
    summary = submit(controller.url, load_project(synthetic(jobs=5)))
    assert summary.state == "failed" and summary.done == 0
    assert "node1: its workers die at start" in summary.error and expected in summary.error
    text = log.read_text()
    assert "this node is broken" in text and expected in text
    assert "broken, takes no jobs: its workers die at start" in status_text(controller.status())


def test_a_mended_node_takes_jobs_again(tmp_path, controller, logged_agents, synthetic):
    marker = tmp_path / "broken-install"
    marker.touch()
    python = failing_interpreter(tmp_path / "bin", "farm.agent.worker", "message", while_exists=marker)
    log = logged_agents(controller.url, "node1", python=str(python))
    wait_for(lambda: any(a["broken"] for a in controller.status()["agents"]), 60, "the agent to say so")
    marker.unlink()  # the install is repaired: its next try at a worker succeeds
    wait_for(lambda: not controller.status()["agents"][0]["broken"], 60, "the agent to say it is mended")
    summary = submit(controller.url, load_project(synthetic(jobs=5)))
    assert summary.ok and summary.done == 5
    assert "takes jobs again" in log.read_text()


def test_a_broken_agent_takes_no_jobs_while_a_healthy_one_does_them(tmp_path, controller, logged_agents,
                                                                    agents, synthetic):
    python = failing_interpreter(tmp_path / "bin", "farm.agent.worker", "message")
    logged_agents(controller.url, "broken", python=str(python))
    wait_for(lambda: any(a["broken"] for a in controller.status()["agents"]), 60, "the broken agent")
    agents(controller.url, 1)
    wait_for(lambda: len(controller.status()["agents"]) == 2, 60, "the healthy agent")
    summary = submit(controller.url, load_project(synthetic(jobs=20)))
    assert summary.ok and summary.done == 20
    broken = next(a for a in controller.status()["agents"] if a["id"] == "broken")
    assert broken["done"] == 0 and broken["failed"] == 0


@pytest.mark.parametrize(("fails", "what"), [("farm.agent.worker", "is broken"), ("farm.agent.local", "has exited")])
def test_an_embedded_run_whose_agents_cannot_work_fails_with_the_reason(tmp_path, synthetic, fails, what):
    # the CLI runs under an interpreter that cannot start workers, or cannot start agents at all
    python = failing_interpreter(tmp_path / "bin", fails.strip(), "message")
    project = synthetic(jobs=4)
    rc, summary, err = farm_cli("submit", str(project), "--agents", "2", "--json", cwd=tmp_path,
                                python=str(python), timeout=120)
    assert rc == 1, err
    assert summary["state"] == "failed" and what in summary["error"], summary
    assert "a broken install" in summary["error"] or "exit codes: 3, 3" in summary["error"]


# -- one agent, one bad input ----------------------------------------------------------------


@pytest.mark.parametrize("agents_n", [1, 2])
@pytest.mark.parametrize("bad", [
    'fail = ["job-0000002"]',
    'crash = ["job-0000003"]',
    'fail = ["job-0000001", "job-0000004", "job-0000006", "job-0000007"]',  # more than the blocklist needs
])
def test_jobs_that_fail_everywhere_fail_for_good_and_the_rest_finish(tmp_path, agents_n, bad):
    project = tmp_path / "project"
    project.mkdir()
    (project / "farm.toml").write_text(
        f'[project]\nname = "bad"\nmedia_type = "synthetic"\n'
        f'[synthetic]\njobs = 12\noutput_bytes = 4\n{bad}\n')
    failing = sorted(bad.split("=", 1)[1].strip(' []').replace('"', "").split(", "))
    rc, summary, err = farm_cli("submit", str(project), "--agents", str(agents_n), "--json", cwd=tmp_path)
    assert rc == 1, err
    assert summary["jobs"] == {"total": 12, "done": 12 - len(failing), "failed": len(failing), "reused": 0, "resumed": 0}
    assert sorted(f["job"] for f in summary["failures"]) == failing
    assert all(f["attempts"] == 3 for f in summary["failures"])
    assert "blocklist" not in err


FOR_GOOD_PLUGIN = """
    from farm.errors import JobFailedForGood, RenderError
    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Inputs(MediaType):
        name = "inputs"

        def configure(self, s):
            settings = {"jobs": s.integer("jobs", 4), "corrupt": s.str_list("corrupt", []),
                        "flaky": s.str_list("flaky", [])}
            s.finish()
            return settings

        def count(self, project):
            return project.settings["jobs"]

        def split(self, project):
            for i in range(project.settings["jobs"]):
                yield Job(f"in-{i}")

        def render(self, job, ctx):
            if job.key in ctx.settings["corrupt"]:
                raise JobFailedForGood(f"{job.key}: the input is corrupt")
            if job.key in ctx.settings["flaky"]:
                raise RenderError(f"{job.key}: try again")
            return None


    @hookimpl
    def farm_register_media_types(register):
        register(Inputs)
"""


@pytest.mark.parametrize("agents_n", [1, 2])
def test_a_plugin_fails_a_job_for_good_at_once(tmp_path, agents_n):
    plugins = install_plugin(tmp_path / "site", "farm_inputs_test", FOR_GOOD_PLUGIN, "inputs")
    project = tmp_path / "project"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "inputs"\nmedia_type = "inputs"\n'
                                       '[inputs]\njobs = 6\ncorrupt = ["in-2"]\nflaky = ["in-4"]\n')
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    rc, summary, err = farm_cli("submit", str(project), "--agents", str(agents_n), "--json",
                                cwd=tmp_path, env=env)
    assert rc == 1, err
    failures = {f["job"]: f for f in summary["failures"]}
    assert failures["in-2"]["attempts"] == 1 and "JobFailedForGood: in-2: the input is corrupt" in \
        failures["in-2"]["error"]
    assert failures["in-4"]["attempts"] == 3  # a plain RenderError is retried
    assert summary["jobs"]["done"] == 4


def test_a_relative_pythonpath_means_the_same_to_workers_in_their_own_folder(tmp_path):
    install_plugin(tmp_path / "site", "farm_inputs_test", FOR_GOOD_PLUGIN, "inputs")
    project = tmp_path / "project"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "inputs"\nmedia_type = "inputs"\n[inputs]\njobs = 4\n')
    env = {"PYTHONPATH": os.pathsep.join(["site", os.environ.get("PYTHONPATH", "")])}  # relative to cwd
    rc, summary, err = farm_cli("submit", "project", "--agents", "1", "--json", cwd=tmp_path, env=env)
    assert rc == 0, err
    assert summary["jobs"]["done"] == 4


# -- two nodes that claim one name -------------------------------------------------------------


def test_two_agents_with_one_id_are_told_apart_and_both_work(tmp_path, controller, logged_agents):
    project = tmp_path / "dupid"
    shutil.copytree(CASES / "duplicate-agent-id" / "project", project)
    logs = [logged_agents(controller.url, "render01") for _ in range(2)]
    wait_for(lambda: len(controller.status()["agents"]) == 2, 60, "both agents")
    assert sorted(a["id"] for a in controller.status()["agents"]) == ["render01", "render01-2"]
    summary = submit(controller.url, load_project(project))
    assert summary.ok and summary.done == 40
    status = controller.status()["agents"]
    assert len(status) == 2 and all(a["done"] > 0 for a in status), status  # neither displaced the other
    assert any("known there as 'render01-2'" in log.read_text() for log in logs)


def test_a_hello_with_a_live_agents_id_takes_neither_its_routing_nor_its_jobs(tmp_path, controller, agents,
                                                                            synthetic):
    agents(controller.url, 1)  # "agent-0"
    wait_for(lambda: controller.registry.by_id("agent-0"), 60, "the honest agent")
    honest = controller.registry.by_id("agent-0")
    impostors = [  # a fresh connection; its old routing id (the agent's --id); its current routing id
        HandWrittenAgent(controller.url, "agent-0", hold, caps=()),
        HandWrittenAgent(controller.url, "agent-0", hold, caps=(), identity=b"agent-0"),
        HandWrittenAgent(controller.url, "agent-0", hold, caps=(), identity=honest.identity),
    ]
    try:
        wait_for(lambda: impostors[0].welcome and impostors[1].welcome, 30, "the impostors' welcome")
        assert impostors[0].welcome["agent"] != "agent-0" and impostors[1].welcome["agent"] != "agent-0"
        summary = submit(controller.url, load_project(synthetic(jobs=30, sleep=0.01)))
        assert summary.ok and summary.done == 30
        assert impostors[2].welcome is None  # refused at the socket: a live routing id is never handed over
        assert controller.registry.by_id("agent-0") is honest and honest.done == 30
        assert len(controller.registry) == 3
    finally:
        for impostor in impostors:
            impostor.close()


def hold(job):
    return None


def done(job):
    return ({"lease": job["lease"], "ok": True, "result": None, "files": [], "duration": 0.01}, [])


@pytest.mark.parametrize("same_session", [True, False])
def test_a_reconnect_keeps_its_id_and_jobs_only_with_its_session(controller, synthetic, same_session):
    first = HandWrittenAgent(controller.url, "node", hold, slots=3, session="s1")
    second = None
    try:
        run = Background(controller.url, synthetic(jobs=6))
        wait_for(lambda: len(first.leases) == 3, 60, "the first connection's jobs")
        # the same node on a new connection (its agent reconnected), or another node with its id
        second = HandWrittenAgent(controller.url, "node", done, slots=3, held=first.leases,
                                  session="s1" if same_session else "s2")
        wait_for(lambda: second.welcome, 30, "the second connection's welcome")
        if same_session:
            assert second.welcome["agent"] == "node" and [a.id for a in controller.registry] == ["node"]
            assert all(lease.agent == controller.registry.by_id("node").identity
                       for lease in controller.leases.values())
        else:
            assert second.welcome["agent"] == "node-2" and len(controller.registry) == 2
            wait_for(lambda: controller.stats["stale"] >= 3, 30, "its answers for the first's jobs, refused")
            assert {controller.leases[lease].agent_id for lease in first.leases} == {"node"}  # none moved
        first.close()  # now gone: its jobs, if it still has any, run elsewhere
        wait_for(run.done, 120, "the run")
        assert run.summary.ok and run.summary.done == 6
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_renamed_agent_that_reconnects_keeps_the_id_it_was_given(controller):
    peers = [HandWrittenAgent(controller.url, "node", hold, caps=(), session=s) for s in ("s1", "s2")]
    try:
        wait_for(lambda: all(p.welcome for p in peers), 30, "both welcomes")
        assert [p.welcome["agent"] for p in peers] == ["node", "node-2"]
        # the second again, on a new connection
        peers.append(HandWrittenAgent(controller.url, "node", hold, caps=(), session="s2"))
        wait_for(lambda: peers[2].welcome, 30, "the reconnect's welcome")
        assert peers[2].welcome["agent"] == "node-2"
        assert sorted(a.id for a in controller.registry) == ["node", "node-2"]
    finally:
        for peer in peers:
            peer.close()


# -- misbehaving agents are contained ------------------------------------------------------------


def test_an_agent_that_hands_every_job_back_is_blocklisted_and_the_jobs_finish(controller, agents, synthetic):
    saboteur = HandWrittenAgent(controller.url, "saboteur", requeue, slots=8)
    try:
        wait_for(lambda: saboteur.welcome, 30, "the saboteur's welcome")
        agents(controller.url, 1)
        wait_for(lambda: len(controller.registry) == 2, 60, "the honest agent")
        project = synthetic(jobs=200, output_bytes=4, log_collations=True)
        summary = submit(controller.url, load_project(project))
        assert summary.ok and summary.done == 200, summary.failures[:2]
        run = next(iter(controller.runs.values()))
        assert "saboteur" in run.blocklist and "handed back" in run.blocklist["saboteur"]
        assert 0 < saboteur.jobs <= 200
        assert sorted((project / "output" / "collated.log").read_text().split()) == keys(200)
    finally:
        saboteur.close()


def test_outputs_over_the_jobs_limit_fail_that_attempt(controller, agents, synthetic):
    bloater = HandWrittenAgent(controller.url, "bloater", oversized(2 * 2**20), slots=2)
    try:
        wait_for(lambda: bloater.welcome, 30, "the bloater's welcome")
        agents(controller.url, 1)
        wait_for(lambda: len(controller.registry) == 2, 60, "the honest agent")
        project = synthetic(jobs=20, output_bytes=16, extra="[jobs]\nmax_output_mib = 1\n")
        summary = submit(controller.url, load_project(project))
        assert summary.ok and summary.done == 20, summary.failures[:2]
        assert bloater.jobs > 0
        bloated = next(a for a in controller.status()["agents"] if a["id"] == "bloater")
        assert bloated["failed"] == bloater.jobs and bloated["done"] == 0
        assert all(p.stat().st_size == 16 for p in (project / "output").glob("*.bin"))
    finally:
        bloater.close()


def test_a_job_writing_more_than_its_limit_fails_on_the_agent(controller, agents, synthetic):
    agents(controller.url, 1)
    limits = "[jobs]\nmax_output_mib = 1\nmax_attempts = 1\n"
    project = synthetic(jobs=3, output_bytes=2 * 2**20, extra=limits)
    summary = submit(controller.url, load_project(project))
    assert summary.failed == 3
    assert "over its limit of 1.0 MiB ([jobs] max_output_mib)" in summary.failures[0]["error"]


def test_the_output_limit_has_a_default_and_is_checked_at_load(tmp_path, synthetic):
    assert load_project(synthetic()).max_output == DEFAULT_MAX_OUTPUT_MIB * 2**20
    with pytest.raises(ProjectError, match=r"farm.toml:\d+: \[jobs\] max_output_mib: must be at least"):
        load_project(synthetic(extra="[jobs]\nmax_output_mib = 0\n"))
    # one message carries a job's outputs
    with pytest.raises(ProjectError, match=r"max_output_mib: must be at most 60"):
        load_project(synthetic(extra="[jobs]\nmax_output_mib = 1024\n"))


def test_a_hand_written_agent_cannot_answer_for_a_lease_it_does_not_hold(controller, agents, synthetic):
    """Results are accepted from the lease's agent only: a guessed lease of another agent is dropped."""
    agents(controller.url, 1)
    liar = zmq.Context.instance().socket(zmq.DEALER)
    liar.setsockopt(zmq.LINGER, 0)
    liar.connect(controller.url)
    try:
        project = synthetic(jobs=20, sleep=0.02)
        run = Background(controller.url, project)
        wait_for(lambda: controller.leases, 60, "a lease")
        lease = next(iter(controller.leases))
        liar.send_multipart(pack(T.HELLO, {"agent": "liar", "host": "x", "pid": 1, "slots": 1, "prefetch": 0,
                                           "caps": [], "held": [lease], "version": "0"}))
        liar.send_multipart(pack(T.RESULTS, {"results": [result_row(requeue({"lease": lease})[0])]}))
        wait_for(run.done, 120, "the run")
        assert run.summary.ok and run.summary.done == 20
    finally:
        liar.close(0)
