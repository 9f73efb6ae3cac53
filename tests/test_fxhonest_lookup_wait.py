"""`farm download` and `farm cancel --download` whose controller does not answer (stopped: SIGSTOP,
a host or process that hangs) said nothing for `$FARM_CLIENT_TIMEOUT` (15 s) while they looked the
run up; a follower says it within `REFOLLOW_S` (tests/test_fxfresh_follow_pace.py). Now they say
as soon, once, in the follower's words, that the controller does not answer and that they wait up to
`$FARM_CLIENT_RECONNECT`; `--json` prints one object all the same.

A real `farm controller` process (stopped with SIGSTOP, let go on with SIGCONT), a real agent, the
real CLI; silence counts as a lost controller only after 10 min here, so the line before the fix
came only then; waits on conditions.
"""

from __future__ import annotations

import signal

import pytest
from conftest import wait_for
from test_fxdl_download_restart import JOBS, SIZE, Controllers, outputs, own_cache  # noqa: F401 (a fixture)
from test_fxdl_download_wait import _started_before_the_controller

from farm.client import submit
from farm.project import load_project


class Stoppable(Controllers):
    """A controller process stopped (SIGSTOP) after its run: there, connected to, and silent;
    `start` lets it go on."""

    def start(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return super().start()
        self.proc.send_signal(signal.SIGCONT)
        wait_for(self.answers, 60, "the controller answering again")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process ends on SIGTERM only then
        super().stop()


@pytest.fixture
def controllers(tmp_path):
    started = Stoppable(tmp_path)
    yield started
    started.stop()


@pytest.mark.parametrize("command", [["download", "{run}", "{dest}"],
                                     ["cancel", "{run}", "--download", "{dest}"]], ids=["download", "cancel"])
def test_a_lookup_says_at_once_that_the_controller_does_not_answer(
        tmp_path, controllers, agents, synthetic, command):
    controllers.start()
    agents(controllers.url, 1)
    summary = submit(controllers.url, load_project(synthetic(jobs=JOBS, output_bytes=SIZE)), upload=True)
    assert summary.ok, summary
    controllers.proc.send_signal(signal.SIGSTOP)
    fetched = tmp_path / "fetched"
    args = [arg.format(run=summary.id, dest=fetched) for arg in command]
    # before: nothing said until $FARM_CLIENT_TIMEOUT (600 s here) had passed: the wait for the line failed
    code, report, err = _started_before_the_controller(tmp_path, controllers, *args,
                                                       FARM_CLIENT_TIMEOUT="600")
    assert code == 0, (report, err)
    assert f"WARNING: no answer from the controller at {controllers.url} for 2s; the controller may be " \
           "restarting: waiting up to 10 min for it" in err, err
    assert err.count("the controller may be restarting: waiting up to") == 1, err  # once
    assert "the controller is back" in err, err
    assert report["state"] == "done" and report["downloaded_to"] == str(fetched), report  # one object
    assert outputs(fetched) == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}
