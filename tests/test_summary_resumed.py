"""A resumed run's summary says how many of its done jobs were done before (a controller restart,
or an embedded run interrupted and submitted again): "5/5 jobs done (3 rendered, 2 resumed)", and
``jobs.resumed`` in JSON. Before, a resumed run looked as if this sitting had rendered them all.

A real SQLite journal as a stopped controller left it, a real controller and agent, a real client.
"""

from __future__ import annotations

from journal_helpers import resumed, stopped_run

from farm.cli.progress import summary_text
from farm.project import load_project


def test_a_resumed_runs_summary_counts_the_jobs_done_before(tmp_path, synthetic, agents):
    project = load_project(synthetic(jobs=5))
    state = stopped_run(tmp_path / "state", project, ["job-0000000", "job-0000003"])
    with resumed(state, f"ipc://{tmp_path}/ctl.sock", agents) as client:
        summary = client.follow("run-1")
    assert summary.ok and (summary.done, summary.resumed, summary.reused) == (5, 2, 0), summary
    assert summary.to_json()["jobs"] == {"total": 5, "done": 5, "failed": 0, "reused": 0, "resumed": 2}
    said = summary_text(summary)
    assert "5/5 jobs done, 0 failed (3 rendered, 2 resumed) in " in said, said
