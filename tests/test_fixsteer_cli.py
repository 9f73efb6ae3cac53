"""Steering from the command line, as a user runs it: `farm download`'s exit code and `--json`,
`farm jobs`, and a remote submit's load error naming the submitter's own farm.toml.

Real parts: the controller (in this process, or `farm controller` as a process), real agent
processes, and every command a real `python -m farm` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import cli_controller
from conftest import wait_for
from control_helpers import CHATTY
from sched_helpers import install_plugin

from farm.cli.jobs import jobs_text
from farm.client import Client
from farm.controller.intake import as_submitted

FARM = [sys.executable, "-m", "farm"]
FAILING = "job-0000001"


def farm(*args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def one_json(out: str) -> dict:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one object, nothing else on stdout
    return json.loads(lines[0])


def test_download_exits_as_submit_does_and_jobs_lists_the_run(controller, agents, synthetic, tmp_path):
    agents(controller.url, 1)
    project = synthetic(jobs=4, output_bytes=64, fail=[FAILING], extra="[jobs]\nmax_attempts = 1\n",
                        name="synf")
    submitted = farm("submit", "-c", controller.url, str(project))
    assert submitted.returncode == 1, submitted.stderr

    got = farm("download", "-c", controller.url, "synf", str(tmp_path / "got"))
    assert got.returncode == 1, (got.stdout, got.stderr)  # `download && publish` publishes no partial run
    assert "failed: 3/4 jobs done, 1 failed" in got.stdout
    assert len(list((tmp_path / "got").rglob("*.bin"))) == 3  # what was collated is fetched all the same

    as_json = farm("download", "-c", controller.url, "synf", "again", "--json", cwd=tmp_path)  # relative
    assert as_json.returncode == 1
    report = one_json(as_json.stdout)
    assert report["state"] == "failed" and report["jobs"]["failed"] == 1 and report["id"].startswith("synf-")
    assert report["downloaded_to"] == str(tmp_path / "again")
    assert report["downloaded_files"] == 3, report  # what came, whatever the run's outputs list
    missing = farm("download", "-c", controller.url, "no-such-run", str(tmp_path / "x"), "--json")
    assert missing.returncode == 1 and one_json(missing.stdout)["code"] == "not_found"
    assert set(one_json(missing.stdout)) == {"error", "state", "code"}

    # farm jobs: every job, its state; a failed one's error; paging; a filter; errors with codes
    table = farm("jobs", "-c", controller.url, "synf")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"{report['id']}: jobs 1-4 of 4")
    assert lines[1].split() == ["KEY", "STATE", "ATTEMPTS", "AGENT", "TIME", "ERROR"]
    failed = next(line for line in lines if line.startswith(FAILING))
    assert failed.split()[:4] == [FAILING, "failed", "1", "agent-0"] and f"{FAILING} is set to fail" in failed
    assert sorted(line.split()[0] for line in lines[2:]) == [f"job-{i:07d}" for i in range(4)]
    assert all(line.split()[1] == "done" for line in lines[2:] if not line.startswith(FAILING))

    page = farm("jobs", "-c", controller.url, "synf", "--limit", "2", "--offset", "1")
    assert page.returncode == 0 and "jobs 2-3 of 4" in page.stdout
    assert len(page.stdout.splitlines()) == 5  # title, header, two rows, what is left
    assert page.stdout.splitlines()[-1] == f"1 more: farm jobs {report['id']} --limit 2 --offset 3"

    only = farm("jobs", "-c", controller.url, report["id"], "--state", "failed", "--json")
    listing = one_json(only.stdout)
    assert only.returncode == 0 and listing["total"] == 1
    assert [(j["key"], j["state"], j["attempts"]) for j in listing["jobs"]] == [(FAILING, "failed", 1)]
    none = farm("jobs", "-c", controller.url, "synf", "--state", "queued")
    assert none.returncode == 0 and none.stdout.strip() == f"{report['id']}: no queued jobs"

    bad = farm("jobs", "-c", controller.url, "synf", "--state", "bogus", "--json")
    assert bad.returncode == 2 and one_json(bad.stdout)["code"] == "usage"  # checked before asking
    assert "running, collating, queued, failed, done, reused" in one_json(bad.stdout)["error"]
    unknown = farm("jobs", "-c", controller.url, "nothing-here")
    assert unknown.returncode == 1 and "nothing-here" in unknown.stderr and "Traceback" not in unknown.stderr
    assert farm("jobs", "-c", controller.url, "synf", "--limit", "0").returncode == 2  # usage


def test_download_exit_code_of_a_whole_run_and_of_a_cancelled_one(controller, agents, synthetic, tmp_path):
    agents(controller.url, 1)
    whole = synthetic(jobs=2, output_bytes=64, name="whole")
    assert farm("submit", "-c", controller.url, str(whole)).returncode == 0
    got = farm("download", "-c", controller.url, "whole", str(tmp_path / "whole"), "--json")
    assert got.returncode == 0, got.stdout
    assert one_json(got.stdout)["state"] == "done"

    # a run that never ends on its own (a job hangs) is cancelled while it runs
    stuck = synthetic(jobs=3, output_bytes=64, hang=["job-0000002"], name="stuck")
    submit = subprocess.Popen([*FARM, "submit", "-c", controller.url, str(stuck)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(r.project.name == "stuck" and "job-0000002" in r.leases
                             for r in list(controller.runs.values())), 120, "the hanging job to be running")
        running = farm("jobs", "-c", controller.url, "stuck", "--state", "running")
        rows = {line.split()[0]: line.split()[1:] for line in running.stdout.splitlines()[2:]}
        state, attempts, agent, took = rows["job-0000002"]  # it hangs: running until cancelled
        assert (state, attempts, agent) == ("running", "1", "agent-0")
        assert took.endswith("s") and float(took[:-1]) >= 0  # how long it has run so far
        with Client(controller.url) as client:
            assert client.cancel("stuck").state == "cancelled"
        assert submit.wait(120) == 1
    finally:
        submit.kill()
        submit.communicate()
    text = farm("download", "-c", controller.url, "stuck", str(tmp_path / "stuck"))
    assert text.returncode == 1, (text.stdout, text.stderr)
    assert "cancelled" in text.stdout + text.stderr
    as_json = farm("download", "-c", controller.url, "stuck", str(tmp_path / "stuck2"), "--json")
    assert as_json.returncode == 1 and one_json(as_json.stdout)["state"] in ("cancelled", "failed")


def _broken_project(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "farm.toml").write_text("\n".join(lines) + "\n")
    return folder


def test_a_remote_submit_error_names_the_submitters_farm_toml(tmp_path):
    # the submitter has a media type the controller lacks: only the controller's load fails
    site = install_plugin(tmp_path / "site", "farm_chatty_steer", CHATTY, "chatty")
    state = tmp_path / "real"
    state.mkdir()
    (tmp_path / "link").symlink_to(state)  # the controller knows its state by another spelling
    project = _broken_project(tmp_path / "my project", [
        "# a project of ours",
        "[project]",
        'name = "thumbsy"',
        'media_type = "chatty"',
        "[chatty]",
        "jobs = 2",
    ])
    with cli_controller(tmp_path / "link") as running:
        env = {**running.env, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        text = farm("submit", "-c", running.url, str(project), env=env)
        assert text.returncode == 1
        assert f"{project}/farm.toml:4: [project] media_type: unknown media type 'chatty'" in text.stderr
        assert "uploads" not in text.stderr and str(state) not in text.stderr, text.stderr
        as_json = farm("submit", "-c", running.url, str(project), "--json", env=env)
        report = one_json(as_json.stdout)
        assert as_json.returncode == 1 and report["error"].startswith(f"controller: {project}/farm.toml:4:")
        assert "uploads" not in report["error"]


def test_an_upload_error_names_the_submitted_folder_in_every_spelling_of_ours(tmp_path):
    ours = tmp_path / "state" / "uploads" / "ab12"
    ours.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "state")
    spelled = tmp_path / "alias" / "uploads" / "ab12"
    message = f"{os.path.realpath(spelled)}/farm.toml:3: bad; {spelled}/a.xml: missing"
    shown = as_submitted(message, spelled, "/home/u/map")
    assert shown == "/home/u/map/farm.toml:3: bad; /home/u/map/a.xml: missing"
    # what could not be a path is not echoed back: a neutral name instead
    for hostile in ("", "a\0b", 5, None, "x" * 5000):
        shown = as_submitted(f"{spelled}/farm.toml:1: bad", spelled, hostile)
        assert shown == "<your project>/farm.toml:1: bad"


def test_the_jobs_table_shows_a_failed_jobs_first_error_line_and_what_is_unlisted():
    page = {"project": "p-1", "total": 3, "offset": 0, "limit": 100, "unlisted": 40, "jobs": [
        {"key": "k-running", "state": "running", "attempts": 2, "agent": "a1", "duration_s": 75.4,
         "error": None},
        {"key": "k-queued", "state": "queued", "attempts": None, "agent": None, "duration_s": None,
         "error": None},
        {"key": "k-failed", "state": "failed", "attempts": 3, "agent": "a2", "duration_s": None,
         "error": "Traceback (most recent call last):\n  File x\nValueError: boom"},
    ]}
    lines = jobs_text(page).splitlines()
    assert lines[0] == "p-1: jobs 1-3 of 43 (40 not split off yet)"  # the run's count, not the listed
    assert lines[2].split() == ["k-running", "running", "2", "a1", "01:15"]
    assert lines[3].split() == ["k-queued", "queued", "-", "-", "-"]
    assert lines[4].split()[:5] == ["k-failed", "failed", "3", "a2", "-"]
    assert lines[4].endswith("Traceback (most recent call last): ...")  # its first line, marked as cut
    assert lines[-1] == "40 jobs not split off yet (not listed)"
    ended = jobs_text({**page, "ended": True}).splitlines()
    assert ended[0] == "p-1: jobs 1-3 of 43 (40 not done: the run ended)", ended
    assert jobs_text(page, "failed").splitlines()[0] == "p-1: failed jobs 1-3 of 3"  # unsplit: none failed
    none_yet = jobs_text({**page, "total": 0, "jobs": []}).splitlines()
    assert none_yet[0] == "p-1: no jobs listed (40 not split off yet)", none_yet
    long = {**page, "unlisted": 0, "jobs": [{**page["jobs"][2], "error": "x" * 500}]}
    assert len(jobs_text(long).splitlines()[-1]) < 200


def test_jobs_and_download_with_no_controller_are_one_json_error_and_listed_in_help(tmp_path):
    nobody = "tcp://127.0.0.1:47998"  # nothing listens here
    # `farm download` waits $FARM_CLIENT_RECONNECT for a controller that may be restarting: 1 s here
    quick = {**os.environ, "FARM_CLIENT_RECONNECT": "1"}
    for command in (("jobs", "run"), ("download", "run", str(tmp_path / "out"))):
        done = farm(*command, "--json", "--controller", nobody, env=quick)
        error = one_json(done.stdout)
        assert done.returncode == 1 and set(error) == {"error", "state", "code"}
        assert error["code"] == "unreachable" and "error" not in done.stderr
    listed = subprocess.run([*FARM, "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert " jobs " in listed.stdout and " download " in listed.stdout
