"""Hostile SUBMITs (security cases submit-crash, big-toml, big-asset, output-symlink): an answer, never a crash.

Each attack is sent raw, as the write-up's attacker did; after each the controller must
still be running and answer others promptly.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from conftest import Background, wait_for, write_project
from hostile_helpers import Raw, answer_jobs_as_agent, as_nobody, nobody_folder, status_round_trip

from farm.client import submit
from farm.controller.intake import IntakeLimits
from farm.controller.server import Controller
from farm.filesync.limits import GiB, MiB
from farm.project import load_project
from farm.protocol import T

UPLOAD_HINT = "farm submit --controller"


def ask_submit(url: str, root: object, output: object = None, priority: int = 0, timeout: float = 60.0):
    raw = Raw(url)
    try:
        return raw.ask(T.SUBMIT, {"project": {"root": root, "output": output}, "priority": priority}, timeout)
    finally:
        raw.close()


def assert_alive(ctl: Controller) -> None:
    assert ctl.crash is None and ctl.wait(0), "the controller's loop ended"
    assert status_round_trip(ctl.url, timeout=10) < 5


@pytest.mark.parametrize("root", [
    "/tmp/a\x00b",  # ValueError: embedded null byte
    "/tmp/" + "x" * 300,  # OSError: ENAMETOOLONG
    "/tmp/" + "/".join(["y" * 200] * 30),  # a path longer than PATH_MAX
    "relative/folder",
    "",
], ids=["nul", "long-name", "long-path", "relative", "empty"])
def test_a_submit_of_an_impossible_path_is_answered_and_the_loop_goes_on(controller, root):
    reply = ask_submit(controller.url, root)
    assert reply.type in (T.ERROR,), reply
    assert_alive(controller)


@pytest.mark.parametrize("output", ["a\x00b", "x" * 300, 123, ["out"], "../escape", "/abs"],
                         ids=["nul", "long-name", "number", "list", "parent", "absolute"])
def test_a_submit_with_a_bad_output_folder_is_answered(controller, synthetic, output):
    reply = ask_submit(controller.url, str(synthetic(jobs=1)), output)
    assert reply.type is T.ERROR, reply
    assert_alive(controller)


@pytest.mark.parametrize("nesting", [
    "x = " + "[" * 5000 + "]" * 5000,  # RecursionError in tomllib
    "x = " + "{a=" * 3000 + "1" + "}" * 3000,
    "x = " + "[" * 60 + "]" * 60,  # parses, but nests deeper than settings may
], ids=["arrays-5000", "tables-3000", "arrays-60"])
def test_a_farm_toml_nested_thousands_deep_is_refused_not_fatal(controller, tmp_path, nesting):
    write_project(tmp_path / "deep", "synthetic", nesting)
    reply = ask_submit(controller.url, str(tmp_path / "deep"))
    assert reply.type is T.ERROR, reply
    assert "farm.toml" in reply.body["message"] or "nest" in reply.body["message"]
    assert_alive(controller)


def test_a_huge_priority_or_odd_project_shapes_are_answered(controller, synthetic):
    project = str(synthetic(jobs=1))
    for body in ({"project": {"root": project}, "priority": 2**63 + 5},
                 {"project": {"root": project}, "priority": -(2**63)},
                 {"project": ["not", "a", "map"], "priority": 0},
                 {"project": {"root": 7}, "priority": 0}):
        raw = Raw(controller.url)
        reply = raw.ask(T.SUBMIT, body)
        raw.close()
        assert reply.type in (T.ERROR, T.ACCEPTED), reply
    assert_alive(controller)


def test_a_big_farm_toml_is_refused_at_once_and_others_are_served(controller, tmp_path):
    folder = write_project(tmp_path / "big", "synthetic", "jobs = 1\n" + "# padding\n" * 600_000)
    assert (folder / "farm.toml").stat().st_size > 5 * MiB
    started = time.monotonic()
    reply = ask_submit(controller.url, str(folder))
    assert reply.type is T.ERROR and "over the limit" in reply.body["message"], reply
    assert time.monotonic() - started < 5
    assert_alive(controller)


def test_a_24_gib_sparse_asset_is_refused_by_size_without_reading_it(controller, synthetic):
    project = synthetic(jobs=1)
    with open(project / "huge.bin", "wb") as handle:
        handle.truncate(24 * GiB)
    started = time.monotonic()
    reply = ask_submit(controller.url, str(project))
    assert reply.type is T.ERROR and "limit" in reply.body["message"] and "exclude" in reply.body["message"]
    assert time.monotonic() - started < 10
    assert_alive(controller)


def test_hashing_a_large_asset_runs_off_the_loop_while_others_are_served(tmp_path, synthetic, agents):
    """A large (sparse) asset under the limit is hashed in the background; STATUS never waits on it."""
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                     intake_limits=IntakeLimits(max_total_bytes=64 * GiB)).start()
    try:
        agents(ctl.url, 1)
        project = synthetic(jobs=3)
        with open(project / "large.bin", "wb") as handle:
            handle.truncate(4 * GiB)  # about 4 s of hashing on the 2-core test machine
        raw = Raw(ctl.url)
        raw.send(T.SUBMIT, {"project": {"root": str(project)}, "priority": 0})
        worst = 0.0
        served = 0
        answered = None
        while answered is None:
            worst = max(worst, status_round_trip(ctl.url))
            served += 1
            if raw.sock.poll(0):
                answered = raw.recv()
        raw.close()
        assert answered.type is T.ACCEPTED, answered
        assert served >= 3 and worst < 2.0, f"{served} STATUS answered while hashing, the slowest in {worst:.2f}s"
        assert ctl.crash is None
    finally:
        ctl.stop(shutdown_agents=True)


def _attack_output_symlink(url: str, folder: str, target: str) -> dict[str, object]:
    """As nobody: a project whose output folder is a symlink into ``target``, submitted by path, then
    its job answered by a hand-written agent with a file of the attacker's choice."""
    project = write_project(Path(folder) / "proj", "synthetic", "jobs = 1")
    os.symlink(target, project / "output")
    reply = ask_submit(url, str(project))
    outcome = {"reply": reply.type.name, "message": reply.body.get("message", "")}
    if reply.type is T.ACCEPTED:
        outcome["answered"] = answer_jobs_as_agent(url, {"pwned.txt": b"written with the controller's rights"})
    return outcome


def test_output_symlink_into_a_root_only_folder_gets_nothing_written(controller, tmp_path):
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    with nobody_folder() as folder:
        outcome = as_nobody(_attack_output_symlink, controller.url, str(folder), str(secret))
        if outcome.get("answered"):
            wait_for(lambda: all(not r.active for r in controller.runs.values()), 30, "the attack's run to end")
    assert list(secret.iterdir()) == [], "the controller wrote into a root-only folder through a symlink"
    assert outcome["reply"] == "ERROR" and UPLOAD_HINT in str(outcome["message"]), outcome
    assert_alive(controller)


def _submit_by_path(url: str, root: str) -> tuple[str, str]:
    reply = ask_submit(url, root)
    return reply.type.name, reply.body.get("message", "")


def test_a_path_submit_of_another_users_project_is_refused_with_the_upload_hint(controller):
    with nobody_folder() as folder:
        project = write_project(folder / "proj", "synthetic", "jobs = 1")
        os.chown(project, 65534, 65534)
        kind, message = as_nobody(_submit_by_path, controller.url, str(project))
    assert kind == "ERROR" and UPLOAD_HINT in message and "belongs to user 65534" in message


def test_a_project_of_ours_with_an_output_folder_others_own_or_link_is_refused(controller, synthetic, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = synthetic(jobs=1)
    os.symlink(elsewhere, linked / "output")
    deeper = synthetic(jobs=1, extra='[output]\ndirectory = "out/tiles"')
    (deeper / "out").mkdir()
    os.chown(deeper / "out", 65534, 65534)
    open_to_all = synthetic(jobs=1)
    os.chmod(open_to_all, 0o777)
    for project, why in ((linked, "symlink"), (deeper, "belongs to user 65534"), (open_to_all, "changed by other")):
        kind = ask_submit(controller.url, str(project))
        assert kind.type is T.ERROR and why in kind.body["message"] and UPLOAD_HINT in kind.body["message"], kind
    assert list(elsewhere.iterdir()) == []


def test_an_honest_project_of_ours_still_runs_after_the_attacks(controller, agents, synthetic):
    ask_submit(controller.url, "/tmp/a\x00b")
    agents(controller.url, 1)
    summary = submit(controller.url, load_project(synthetic(jobs=5, output_bytes=4)))
    assert summary.ok and summary.done == 5


@pytest.mark.parametrize("duration", [math.nan, math.inf, -1.0], ids=["nan", "inf", "negative"])
def test_a_result_with_an_impossible_duration_is_refused_and_the_loop_goes_on(controller, agents, synthetic,
                                                                              duration):
    """A NaN job time once poisoned the agent's mean and crashed the next dispatch."""
    project = synthetic(jobs=4, output_bytes=4)
    honest = Background(controller.url, project)
    wait_for(lambda: controller.runs, 30, "the run to start")
    assert answer_jobs_as_agent(controller.url, {}, timeout=10, duration=duration) > 0
    agents(controller.url, 1)  # the rogue has gone silent: its jobs go to an honest agent
    wait_for(honest.done, 60, "the honest run to finish")
    assert honest.error is None and honest.summary.ok and honest.summary.done == 4
    assert_alive(controller)
