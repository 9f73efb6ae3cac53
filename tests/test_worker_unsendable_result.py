"""A `render` that returns what farm's wire format cannot carry (an object, a set) fails its job
with a message saying so, in the job's error and `farm logs`; the worker stays up and the
other jobs of its batch are sent. It used to kill the worker, whose traceback went only to the
agent's stderr, and the job failed three times as "worker process died"."""

from __future__ import annotations

from control_helpers import media_type_source, plugin_project

from farm.client import Client, submit
from farm.project import load_project

ODD = media_type_source("odd", '[f"odd-{i}" for i in range(4)]', """
        def render(self, job, ctx):
            return {"odd-1": {"written": object()}, "odd-2": {"tags": {1, 2}}}.get(job.key, {"fine": True})
""")


def test_an_unsendable_result_fails_its_job_by_name_and_spares_the_worker(controller, agents, tmp_path):
    project = plugin_project(tmp_path, controller.url, agents, "odd", ODD)
    summary = submit(controller.url, load_project(project))
    assert summary.done == 2 and summary.failed == 2, summary
    with Client(controller.url) as client:
        for key, kind in (("odd-1", "object"), ("odd-2", "set")):
            attempts = client.job_log(summary.id, key)["attempts"]
            assert len(attempts) == 1, attempts  # failed for good: a plugin's bug, not the node's
            error = attempts[0]["error"]
            assert "the result render returned cannot be sent" in error and f"'{kind}'" in error, error
        assert client.status()["agents"][0]["state"] != "broken"


BIG = media_type_source("big", '["big-0", "big-1"]', """
        def render(self, job, ctx):
            return "x" * (5 * 2**20) if job.key == "big-1" else {"fine": True}
""")


def test_a_result_too_big_for_a_message_fails_its_job_by_name(controller, agents, tmp_path):
    """Over a message's 4 MiB body it cannot reach the controller: the worker fails that job saying
    so (its agent used to drop the whole message, and the job waited for its timeout)."""
    project = plugin_project(tmp_path, controller.url, agents, "big", BIG)
    with (project / "farm.toml").open("a") as toml:
        toml.write("[jobs]\ntimeout = 30\nmax_attempts = 1\n")
    summary = submit(controller.url, load_project(project))
    assert summary.done == 1 and summary.failed == 1, summary
    with Client(controller.url) as client:
        (attempt,) = client.job_log(summary.id, "big-1")["attempts"]
        assert "cannot be sent" in attempt["error"] and "exceed" in attempt["error"], attempt["error"]
