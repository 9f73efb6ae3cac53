"""A run's collate and finalize warnings reach the person who submitted it: the summary carries
them as ``notes`` (`farm submit` prints each as ``warning: ...``, ``--json`` has them). Before,
they went only to the controller's log: a remote submitter was never told, say, that the
finalize removed an earlier run's outputs. Real controller, agent and client; a small media type
whose collate and finalize warn."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from control_helpers import EventLog, installed_plugin, media_type_source

from farm.cli.progress import summary_text
from farm.client import Client
from farm.controller.report import MAX_NOTES
from farm.project import load_project

NOTER = media_type_source("noter", "['a', 'b']", """
        def collate(self, job, result, outputs, ctx):
            if job.key == "b":
                ctx.log.warning("job %s: ignoring its unexpected output %r", job.key, "x.tmp")
            ctx.log.info("collated %s", job.key)  # not a note

        def finalize(self, ctx):
            for n in range(int((ctx.project.root / "warnings").read_text())):
                ctx.log.warning("finalize: removed %d stale files (%s)", n, "round %d" % n)
            ctx.log.error("finalize: an error is a note too")
            return []
""")


def test_a_runs_warnings_are_notes_in_its_summary(controller, agents, tmp_path):
    events = EventLog(controller)
    env = installed_plugin(tmp_path / "site", "farm_noter_test", NOTER, "noter")
    agents(controller.url, 1, env=env)
    project = tmp_path / "noter"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "noter"\nmedia_type = "noter"\n[noter]\n')
    (project / "warnings").write_text("2")
    with Client(controller.url) as client:
        summary = client.attach(client.submit(load_project(project)))
    assert summary.ok, summary
    assert summary.notes == ["job b: ignoring its unexpected output 'x.tmp'",
                             "finalize: removed 0 stale files (round 0)",
                             "finalize: removed 1 stale files (round 1)",
                             "finalize: an error is a note too"], summary.notes
    (finished,) = events.settled().of("run.finished", summary.id)  # what a webhook posts
    assert finished.data["notes"] == summary.notes, finished.data
    text = summary_text(summary)
    assert "warning: job b: ignoring its unexpected output 'x.tmp'" in text.splitlines(), text

    (project / "warnings").write_text("30")  # the notes are capped; the rest are counted
    shown = subprocess.run([sys.executable, "-m", "farm", "submit", "--controller", controller.url, "--json",
                            str(project)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
    assert shown.returncode == 0, shown.stderr
    notes = json.loads(shown.stdout)["notes"]
    more = 1 + 30 + 1 - MAX_NOTES  # collate's, finalize's 30 warnings and its error
    assert len(notes) == MAX_NOTES + 1, notes
    assert notes[-1] == f"... and {more} more warnings in the controller's log", notes


def test_an_embedded_farm_says_each_note_once(tmp_path):
    """The embedded farm logs its collates' warnings on stderr as they come: its text summary does
    not print them again (a remote submit's does: it saw none); ``--json`` carries them."""
    env = {**os.environ, **installed_plugin(tmp_path / "site", "farm_noter_test", NOTER, "noter")}
    project = tmp_path / "noter"
    project.mkdir()
    (project / "farm.toml").write_text('[project]\nname = "noter"\nmedia_type = "noter"\n[noter]\n')
    (project / "warnings").write_text("1")
    note = "finalize: removed 0 stale files (round 0)"
    for json_out in (False, True):
        shown = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(project),
                                *(["--json"] if json_out else [])],
                               capture_output=True, text=True, timeout=120, env=env)
        assert shown.returncode == 0, shown.stderr
        assert (shown.stdout + shown.stderr).count(note) == 1 + json_out, (shown.stdout, shown.stderr)
        if json_out:
            assert note in json.loads(shown.stdout)["notes"]
