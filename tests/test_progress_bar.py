"""The terminal progress of `farm submit`: rich's bar with the media's units beside jobs, rate,
ETA, failures and the stall reason; plain lines off a terminal; nothing with --json."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys

import pytest
from rich.console import Console

from farm.cli.progress import ProgressBar, progress_text


def update(done: int, tiles: float, **extra: object) -> dict:
    """A maptiles run's UPDATE: 85 jobs, 5,461 tiles."""
    return {"project": "world", "state": "running", "total": 85, "done": done, "failed": 0, "reused": 0,
            "partial": 0.0, "stalled": None,
            "units": {"name": "tiles", "done": tiles, "failed": 0, "partial": 0, "total": 5461}, **extra}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_text_counts_units_beside_jobs_with_rate_and_eta():
    bar = ProgressBar(enabled=False)
    assert bar.line(update(0, 0), now=100.0) == "tiles 0/5,461 · jobs 0/85 · -- tiles/s · ETA --:--"
    text = bar.line(update(20, 1234), now=102.0)  # 617 tiles a second: 4,227 left take 6.85 s
    assert text == "tiles 1,234/5,461 · jobs 20/85 · 617.0 tiles/s · ETA 00:07"


def test_the_text_says_failures_reuse_finalizing_and_why_a_run_waits():
    stalled = update(3, 300, failed=2, reused=5, stalled="no connected agent can render 'maptiles'")
    stalled["units"]["failed"] = 12
    assert progress_text(stalled, None) == (
        "tiles 300/5,461 · jobs 3/85 · -- tiles/s · ETA --:-- · 2 failed · 5 reused"
        " · waiting: no connected agent can render 'maptiles'")
    assert progress_text(update(85, 5461, state="finalizing"), 10.0).endswith("ETA 00:00 · finalizing")


@pytest.mark.parametrize(("snapshot", "text"), [
    ({"total": 10, "done": 4, "failed": 0, "partial": 0.5, "units": {"name": "jobs", "done": 4, "total": 10}},
     "jobs 4/10 · 2.0 jobs/s · ETA 00:03"),  # a media type without units of its own: jobs only
    ({"total": None, "done": 4, "failed": 0}, "jobs 4/? · 2.0 jobs/s · ETA --:--"),  # an older controller
    ({"total": 3, "done": 1, "failed": 0, "units": {"name": "seconds", "done": 12.5, "failed": 0,
                                                    "partial": 0.0, "total": 1800.25}},
     "seconds 12.5/1,800.2 · jobs 1/3 · 2.0 seconds/s · ETA 14:54"),
])
def test_other_units_and_older_snapshots(snapshot, text):
    assert progress_text(snapshot, 2.0) == text


def test_the_rich_bar_on_a_terminal_shows_units_failures_and_stalls():
    console = Console(record=True, force_terminal=True, width=200, file=io.StringIO())
    bar = ProgressBar(console=console)
    bar.update(update(0, 0), now=0.0)
    bar.update(update(40, 2500, stalled="no agents connected yet"), now=5.0)
    stalled = console.export_text(clear=False)
    assert "world" in stalled and "46%" in stalled, stalled
    assert "tiles 2,500/5,461 · jobs 40/85 · -- tiles/s · ETA --:-- · waiting: no agents connected yet" \
        in stalled, stalled
    done = update(84, 5430, failed=1, state="done")
    done["units"].update(failed=31, rate=412.3)  # the controller's average over the run
    bar.update(done, now=10.0)
    bar.close()
    text = console.export_text()
    # done and failed apart, as in the summary (84/85 jobs done, 1 failed): the bar stops short;
    # a finished run's rate is its average, not the last seconds' (543.0 here, 0.0 after a long finalize)
    assert "99%" in text, text
    assert "tiles 5,430/5,461 · jobs 84/85 · 412.3 tiles/s · ETA 00:00 · 1 failed" in text, text
    assert "━" in text  # rich's bar


def test_plain_lines_off_a_terminal_at_most_every_few_seconds_unless_something_changes():
    stream = io.StringIO()  # not a terminal
    bar = ProgressBar(stream, plain_every=10.0)
    bar.update(update(0, 0), now=0.0)
    bar.update(update(10, 600), now=1.0)  # nothing new to say yet
    bar.update(update(20, 1234, stalled="no agents connected yet"), now=2.0)
    bar.update(update(30, 2000, stalled="no agents connected yet"), now=3.0)
    bar.update(update(50, 3000), now=13.5)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "world: tiles 0/5,461 (0%) · jobs 0/85 · -- tiles/s · ETA --:--",
        "world: tiles 1,234/5,461 (23%) · jobs 20/85 · -- tiles/s · ETA --:--"  # waiting: no pace
        " · waiting: no agents connected yet",
        "world: tiles 3,000/5,461 (55%) · jobs 50/85 · 95.2 tiles/s · ETA 00:26",  # over the last 10 s
    ]
    assert "\x1b" not in stream.getvalue()


def submit_on_a_terminal(project, *args: str) -> tuple[int, str, str]:
    """`farm submit` with its stderr on a pseudo-terminal and stdout on a pipe: (code, stdout, terminal)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "farm", "submit", str(project), "--agents", "1", *args],
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "200"})
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process ended: the terminal is gone
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, out.decode(), seen.decode(errors="replace")


def test_farm_submit_draws_the_bar_on_a_terminal_and_keeps_stdout_for_the_summary(synthetic):
    project = synthetic(jobs=12, sleep=0.02, units_per_job=[1, 2.5], fail=["job-0000005"],
                        extra="[jobs]\nmax_attempts = 1\n")
    code, out, terminal = submit_on_a_terminal(project)
    assert code == 1, terminal
    # the final counts, drawn before FINISHED: what is done, and the failure beside it (job 5 has 2.5 items)
    assert "items 18.5/21 · jobs 11/12" in terminal and "1 failed" in terminal, terminal
    assert "━" in terminal and "\x1b[" in terminal
    assert out.startswith("synth (synthetic): failed: 11/12 jobs done, 1 failed"), out
    # the failure's log line is printed above the bar, never run into the bar's line
    warnings = [i for i in range(len(terminal)) if terminal.startswith("WARNING: ", i)]
    assert warnings, terminal
    assert all(terminal[:i].endswith(("\n", "\x1b[2K")) for i in warnings), terminal


def test_farm_submit_json_draws_nothing_on_a_terminal(synthetic):
    code, out, terminal = submit_on_a_terminal(synthetic(jobs=4), "--json")
    assert code == 0, terminal
    assert json.loads(out)["jobs"]["done"] == 4 and len(out.splitlines()) == 1
    assert "━" not in terminal and "jobs 4/4" not in terminal
