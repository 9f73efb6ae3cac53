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
