"""Job logs outlive the controller: a real controller process killed (SIGKILL) and started again
still shows its runs' attempts, finished or resumed, within the same bounds as in memory."""

from __future__ import annotations

import logging
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from farm.client import Client, submit
from farm.controller import joblogstore
from farm.controller.joblogs import OVERHEAD, JobLogs
from farm.controller.joblogstore import JobLogStore
from farm.errors import ControlError
from farm.journal import Journal
from farm.project import load_project

FARM = [sys.executable, "-m", "farm"]
FAILING = "job-0000001"


class ControllerProcess:
    """`farm controller` with its state in ``state``, a process the test may SIGKILL.

    Its log goes to a file: a pipe nobody reads fills up at info level and stalls the controller.
    """

    def __init__(self, state: Path) -> None:
        command = [*FARM, "--log-level", "info", "controller", "--bind", "tcp://127.0.0.1:0",
                   "--state-dir", str(state), "--insecure"]
        state.parent.mkdir(parents=True, exist_ok=True)
        self.log = state.parent / f"controller-{len(list(state.parent.glob('controller-*.log')))}.log"
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(command, stderr=self.out, text=True)
        wait_for(lambda: "listening on " in self.log.read_text() or self.proc.poll() is not None, 60,
                 "the controller listening")
        found = [line for line in self.log.read_text().splitlines() if "listening on " in line]
        assert found, f"the controller did not start: {self.log.read_text()}"
        self.url = found[0].split("listening on ")[1].strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.out.close()


@pytest.fixture
def own_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback controller makes its keys in this user's config folder: a private one here."""
    monkeypatch.delenv("FARM_KEYS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def controllers(tmp_path: Path, own_keys: None) -> Iterator[list[ControllerProcess]]:
    started: list[ControllerProcess] = []
    yield started
    for ctl in started:
        ctl.stop()


def _stored(state: Path, run: str, key: str) -> int:
    """Attempts of the job committed to the controller's job-log file (read as another process would)."""
    found = _committed(state / joblogstore.FILE, "SELECT count(*) FROM job_logs WHERE run = ? AND key = ?",
                       (run, key))
    return found or 0


def _committed(path: Path, sql: str, args: tuple[str, ...]) -> int | None:
    """The first column of the query's first row in an SQLite file another process writes."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        row = db.execute(sql, args).fetchone()
        return None if row is None else row[0]
    except sqlite3.OperationalError:  # not created yet
        return None
    finally:
        db.close()


def test_a_finished_runs_logs_outlive_a_killed_controller(tmp_path, controllers, agents, synthetic):
    state = tmp_path / "state"
    controllers.append(first := ControllerProcess(state))
    agents(first.url, 1)
    project = synthetic(jobs=3, fail=[FAILING], extra="[jobs]\nmax_attempts = 2\n", name="flaky")
    summary = submit(first.url, load_project(project))
    assert summary.state == "failed"
    wait_for(lambda: _stored(state, summary.id, FAILING) == 2, 60, "both attempts committed")
    assert stat.S_IMODE((state / joblogstore.FILE).stat().st_mode) == 0o600  # logs show settings, paths
    with Client(first.url) as client:
        before = client.job_log(summary.id, FAILING)
        before_done = client.job_log(summary.id, "job-0000000")
    first.kill()

    controllers.append(second := ControllerProcess(state))
    with Client(second.url) as client:
        after = client.job_log(summary.id, FAILING)
        assert [a["attempt"] for a in after["attempts"]] == [1, 2]
        assert [a["state"] for a in after["attempts"]] == ["failed", "failed"]
        assert all("is set to fail" in a["error"] for a in after["attempts"])
        for was, now in zip(before["attempts"], after["attempts"], strict=True):
            assert {k: now[k] for k in ("attempt", "agent", "state", "error", "log")} == \
                   {k: was[k] for k in ("attempt", "agent", "state", "error", "log")}
        assert "is set to fail" in after["attempts"][-1]["log"]  # the traceback the worker sent
        by_name = client.job_log("flaky", FAILING)  # by project name too, as for a live run
        assert by_name["attempts"] == after["attempts"]
        done = client.job_log(summary.id, "job-0000000")
        assert [a["state"] for a in done["attempts"]] == ["done"]
        assert done["attempts"] == before_done["attempts"]  # read from its row or pack as memory held it
        with pytest.raises(ControlError) as unknown:
            client.job_log(summary.id, "job-0000099")
        assert unknown.value.code == "not_found"
    # the CLI, as a person reads it
    shown = subprocess.run([*FARM, "logs", summary.id, FAILING, "--controller", second.url],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "2 attempts kept" in shown.stdout and "attempt 2 on agent-0: failed" in shown.stdout


def test_a_resumed_runs_logs_are_read_back(tmp_path, controllers, agents, synthetic):
    state = tmp_path / "state"
    controllers.append(first := ControllerProcess(state))
    procs = agents(first.url, 3)  # one hangs on its job; the others run the rest
    # one job fails for good, one hangs: the run is unfinished when the controller dies
    project = synthetic(jobs=3, fail=[FAILING], hang=["job-0000002"],
                        extra="[jobs]\nmax_attempts = 2\n",
                        name="resumed")
    with Client(first.url) as client:
        run = client.submit(load_project(project))  # not followed: the controller dies under the run
    wait_for(lambda: _stored(state, run, FAILING) == 2, 60, "both attempts committed")
    failed = "SELECT 1 FROM jobs WHERE project_id = ? AND key = ? AND state = 'failed'"
    journal = state / "journal.sqlite"
    wait_for(lambda: _committed(journal, failed, (run, FAILING)), 60, "its failure journaled")
    first.kill()
    for proc in procs:  # its agents go with it (they would reconnect to the old port)
        proc.kill()

    controllers.append(second := ControllerProcess(state))
    with Client(second.url) as client:
        resumed = client.job_log(run, FAILING)
        assert [(a["attempt"], a["state"]) for a in resumed["attempts"]] == [(1, "failed"), (2, "failed")]
        assert all("is set to fail" in a["log"] for a in resumed["attempts"])
        assert client.project(run)["state"] == "running"  # a live run again, its logs read back
        assert client.jobs(run, "failed")["jobs"][0]["attempts"] == 2  # numbered as its log numbers them
    second.kill()  # and once more: what was read back is still on disk
    controllers.append(third := ControllerProcess(state))
    with Client(third.url) as client:
        assert client.job_log(run, FAILING)["attempts"] == resumed["attempts"]


# -- the store's bounds and its file, with real SQLite ----------------------------------------


def test_the_file_holds_what_memory_holds_within_the_bounds(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    journal.add_project("r1", {}, 0, 0.0)
    store = JobLogStore(tmp_path / joblogstore.FILE, journal.path)
    try:
        logs = JobLogs(per_job=3, log_bytes=1000, per_run_bytes=20_000, store=store, run="r1")
        for i in range(60):  # 60 jobs, 5 attempts of the first ten: per-job and per-run bounds both bite
            for _ in range(5 if i < 10 else 1):
                logs.record(f"job-{i:03d}", agent="a", state="failed", error="boom", duration_s=0.5,
                            log="x" * 5000)
        assert store.flush()
        rows = sqlite3.connect(tmp_path / joblogstore.FILE).execute(
            "SELECT key, attempt, length(log) + length(coalesce(error, '')) FROM job_logs WHERE run = 'r1'"
        ).fetchall()
        memory = {(key, a["attempt"]) for key in {r[0] for r in rows} | {f"job-{i:03d}" for i in range(60)}
                  for a in logs.attempts(key)}
        assert {(key, attempt) for key, attempt, _ in rows} == memory
        assert sum(OVERHEAD + size for *_, size in rows) <= 20_000 == logs.per_run_bytes
        assert all(size <= 1000 + 4 for *_, size in rows)  # each log cut to its tail
        per_job: dict[str, int] = {}
        for key, _, _ in rows:
            per_job[key] = per_job.get(key, 0) + 1
        assert max(per_job.values()) <= 3 and logs.evicted > 0

        again = JobLogs(per_job=3, log_bytes=1000, per_run_bytes=20_000, store=store, run="r1")
        assert {key: again.attempts(key) for key in per_job} == {key: logs.attempts(key) for key in per_job}
        assert again.bytes == logs.bytes
        nxt = again.record("job-059", agent="a", state="done", error=None, duration_s=0.1, log="")
        assert nxt["attempt"] == 2  # numbered on from what was read back
    finally:
        store.close()
        journal.close()


def test_logs_of_runs_no_longer_answered_for_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(joblogstore, "KEEP_RUNS", 2)
    journal = Journal(tmp_path / "journal.sqlite")
    store = JobLogStore(tmp_path / joblogstore.FILE, journal.path)
    try:
        for n in range(4):
            run = f"run{n}"
            journal.add_project(run, {}, 0, float(n))
            logs = JobLogs(store=store, run=run)
            logs.record("k", agent="a", state="done", error=None, duration_s=1, log="")
            logs.notes_from("done", "a", ["p1", "p2"], [0.5, 0.5], [None, None])  # a pack
            if n != 1:  # run1 stays unfinished: kept however old
                journal.finish_project(run, "done", {})
        JobLogs(store=store, run="run4")  # a run begins: the others' logs are pruned
        assert store.flush()
        db = sqlite3.connect(tmp_path / joblogstore.FILE)
        kept = {run for (run,) in db.execute("SELECT DISTINCT run FROM job_logs")}
        packed = {run for (run,) in db.execute("SELECT DISTINCT run FROM job_log_packs")}
        db.close()
        assert kept == packed == {"run1", "run2", "run3"}  # run0: finished, and older than the last 2
    finally:
        store.close()
        journal.close()


@pytest.mark.parametrize("content", ["foreign", "newer", "garbage"])
def test_an_unusable_log_file_leaves_the_logs_in_memory_and_says_so(tmp_path, content, caplog,
                                                                    controller_in_dir):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / joblogstore.FILE
    if content == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    else:
        db = sqlite3.connect(path)
        if content == "foreign":
            db.execute("CREATE TABLE other (x)")
        else:
            db.execute(f"PRAGMA application_id = {joblogstore.APPLICATION_ID}")
            db.execute("PRAGMA user_version = 99")
        db.commit()
        db.close()
    before = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="farm.controller.joblogstore"):
        ctl = controller_in_dir(state)
    assert "kept in memory only" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == before  # left as it was, for its owner to look at
    assert ctl.crash is None


@pytest.fixture
def controller_in_dir() -> Iterator:
    from farm.controller.server import Controller

    started = []

    def start(state: Path) -> Controller:
        ctl = Controller("tcp://127.0.0.1:0", state_dir=state)
        ctl.start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()
