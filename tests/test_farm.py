"""The distributed core with real sockets and real agent processes, on the synthetic media type."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for

from farm.client import Client, submit
from farm.project import load_project


def run(controller, project_dir: Path, **kw):
    return submit(controller.url, load_project(project_dir), **kw)


def collations(project_dir: Path) -> list[str]:
    return (project_dir / "output" / "collated.log").read_text().split()


def test_every_job_is_rendered_and_collated_once(controller, agents, synthetic):
    project = synthetic(jobs=300, output_bytes=64, log_collations=True)
    agents(controller.url, 2)
    updates = []
    summary = run(controller, project, on_update=updates.append)
    assert summary.ok, summary
    assert (summary.total, summary.done, summary.failed) == (300, 300, 0)
    keys = collations(project)
    assert sorted(keys) == [f"job-{i:07d}" for i in range(300)]
    from farm_synthetic import payload

    assert (project / "output" / "job-0000123.bin").read_bytes() == payload("job-0000123", 64)
    assert all(u["total"] == 300 for u in updates)


def test_agent_never_holds_more_than_its_credit(controller, agents, synthetic):
    project = synthetic(jobs=200)
    agents(controller.url, 1, slots=2, extra=["--prefetch", "3"])
    summary = run(controller, project)
    assert summary.ok
    stats = controller.stats
    assert 0 < stats["max_held"] <= 2 + 3, stats


def test_a_failing_job_is_retried_then_reported_with_its_traceback(controller, agents, synthetic):
    project = synthetic(jobs=20, fail=["job-0000007"], output_bytes=8)
    agents(controller.url, 2)
    summary = run(controller, project)
    assert not summary.ok
    assert (summary.done, summary.failed) == (19, 1)
    (failure,) = summary.failures
    assert failure["job"] == "job-0000007"
    assert failure["attempts"] == 3
    assert "RenderError: job-0000007 is set to fail" in failure["error"]
    assert "Traceback" in failure["log"] and "farm_synthetic" in failure["log"]
    # every output that did succeed is kept
    assert len(list((project / "output").glob("*.bin"))) == 19


def test_a_crashing_job_costs_only_its_worker(controller, agents, synthetic):
    project = synthetic(jobs=30, crash=["job-0000003"], extra="[jobs]\nmax_attempts = 2\n")
    agents(controller.url, 1, slots=2)
    summary = run(controller, project)
    assert (summary.done, summary.failed) == (29, 1)
    assert "worker process died (exit code 17)" in summary.failures[0]["error"]
    # the same agent kept serving: it is still connected and did the other jobs
    (agent,) = controller.status()["agents"]
    assert agent["done"] == 29


def test_a_hanging_job_is_killed_at_its_timeout_and_retried(controller, agents, synthetic):
    project = synthetic(jobs=6, hang=["job-0000002"], extra="[jobs]\ntimeout = 1.0\nmax_attempts = 2\n")
    agents(controller.url, 2)
    summary = run(controller, project)
    assert (summary.done, summary.failed) == (5, 1)
    assert summary.failures[0]["error"].startswith("timed out after 1s")
    assert summary.failures[0]["attempts"] == 2


def test_dependent_jobs_wait_for_their_dependency_and_get_its_result(controller, agents, synthetic):
    project = synthetic(jobs=40, depend_on_first=True, log_collations=True, sleep=0.01)
    agents(controller.url, 2)
    summary = run(controller, project)
    assert summary.ok, summary.failures[:1]
    assert collations(project)[0] == "job-0000000"


def test_a_failed_dependency_fails_its_dependants(controller, agents, synthetic):
    project = synthetic(jobs=5, depend_on_first=True, fail=["job-0000000"], extra="[jobs]\nmax_attempts = 1\n")
    agents(controller.url, 1)
    summary = run(controller, project)
    assert (summary.done, summary.failed) == (0, 5)
    errors = {f["job"]: f["error"] for f in summary.failures}
    assert errors["job-0000004"] == "dependency 'job-0000000' failed"


def test_jobs_go_only_to_agents_that_can_render_them(controller, agents, synthetic):
    project = synthetic(jobs=20)
    # This agent loads no plugin named "synthetic", so it cannot render the project.
    agents(controller.url, 1, env={"FARM_LOAD_PLUGINS": "maptiles"})
    wait_for(lambda: controller.status()["agents"], what="the first agent")
    with Client(controller.url) as client:
        run_id = client.submit(load_project(project))
        stalled = wait_for(lambda: (u := client.receive()).body.get("stalled") and u.body["stalled"],
                           what="a stalled update")
        assert "no connected agent can render 'synthetic'" in stalled
        agents(controller.url, 1)
        summary = client.follow(run_id)
    assert summary.ok
    by_id = {a["id"]: a for a in controller.status()["agents"]}
    assert by_id["agent-0"]["done"] == 0 and by_id["agent-1"]["done"] == 20


def test_a_project_with_no_agents_says_why_it_waits(controller, synthetic):
    with Client(controller.url) as client:
        client.submit(load_project(synthetic(jobs=3)))
        update = wait_for(lambda: client.receive().body, what="an update")
        assert update["stalled"] == "no agents connected yet"


def test_staged_outputs_are_verified_and_kept_inside_their_folder(tmp_path):
    import pytest
    from blake3 import blake3

    from farm.controller.staging import stage as _stage
    from farm.errors import ProtocolError

    data = b"tile bytes"
    good = ["t/0.png", len(data), blake3(data).digest()]
    assert _stage(tmp_path, [good], [data])["t/0.png"].read_bytes() == data
    with pytest.raises(ProtocolError, match="failed verification"):
        _stage(tmp_path, [["t/1.png", len(data), blake3(b"other").digest()]], [data])
    with pytest.raises(ProtocolError, match="size mismatch"):
        _stage(tmp_path, [["t/2.png", 3, blake3(data).digest()]], [data])
    for name in ("../escape.png", "/etc/passwd", "a/../../b"):
        with pytest.raises(ProtocolError, match="outside|absolute|parent|empty"):
            _stage(tmp_path / "s", [[name, len(data), blake3(data).digest()]], [data])
    assert not (tmp_path / "escape.png").exists()


def test_worker_scratch_folders_are_emptied_between_jobs(tmp_path):
    from farm.agent.emptydir import Folder, Watch

    folder = Folder(tmp_path / "work", Watch())
    assert folder.is_empty() and folder.files() == []
    (folder.path / "deep").mkdir()
    (folder.path / "deep" / "left.txt").write_text("from the last job")
    assert folder.files() == [folder.path / "deep" / "left.txt"]
    folder.clear()
    assert folder.is_empty() and not (folder.path / "deep").exists()
    (folder.path / "again.txt").write_text("x")  # the reopened folder is watched too
    assert not folder.is_empty()
