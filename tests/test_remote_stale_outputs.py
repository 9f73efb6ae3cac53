"""A remote run's final outputs replace an earlier remote run's in the local output folder: a
final output the earlier run made and the newer one did not (the video after a run whose frames
failed) is removed, so it cannot pass for the newer run's; one the user changed since stays.
Real controller, agent, upload and download (farm.outputrecord)."""

from __future__ import annotations

import pytest

from farm.client import submit
from farm.controller.server import Controller
from farm.project import load_project


@pytest.fixture
def tcp_controller(tmp_path):
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state").start()
    yield ctl
    ctl.stop(shutdown_agents=True)


def test_an_earlier_runs_final_outputs_are_removed_when_a_run_does_not_make_them(tcp_controller, agents,
                                                                                  synthetic):
    agents(tcp_controller.url, 1)
    project = synthetic(jobs=2, output_bytes=8, log_collations=True, report=True)
    first = submit(tcp_controller.url, load_project(project), upload=True)
    out = project / "output"
    assert first.ok and sorted(p.rsplit("/", 1)[1] for p in first.outputs) == ["collated.log", "outcome.json"]
    with open(out / "collated.log", "a") as log:  # the user's own note: theirs now
        log.write("checked by hand\n")

    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace("log_collations = true", "log_collations = false")
                    .replace("report = true", "report = false"))
    second = submit(tcp_controller.url, load_project(project), upload=True)
    assert second.ok and second.outputs == []
    assert not (out / "outcome.json").exists()  # an earlier run's, not made again: gone
    assert (out / "collated.log").read_text().endswith("checked by hand\n")  # changed since: kept
    assert sorted(p.name for p in out.glob("*.bin")) == ["job-0000000.bin", "job-0000001.bin"]  # not final

    third = submit(tcp_controller.url, load_project(project), upload=True)  # nothing recorded to remove
    assert third.ok and (out / "collated.log").exists()
