"""Cancel on a controller elsewhere: the submitter downloads what was collated, `farm cancel` says
how to fetch the outputs (not the controller's own folder) and fetches them if asked; it finds
uploading and finished projects too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from farm_synthetic import payload

from farm.client import Client
from farm.errors import FarmError
from farm.project import load_project
from farm.protocol import T

FARM = [sys.executable, "-m", "farm"]
SIZE = 64  # bytes each synthetic job writes


def farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120, check=False)


def _collated(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.bin")}


def _assert_right(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert data == payload(name.removesuffix(".bin"), SIZE), name


def test_a_cancelled_remote_submit_downloads_what_was_collated(controller, agents, synthetic, tmp_path):
    agents(controller.url, 2)
    project = synthetic(jobs=300, sleep=0.1, output_bytes=SIZE, name="doomed")
    submitter = subprocess.Popen([*FARM, "submit", "--controller", controller.url, str(project)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: controller.stats["collated"] >= 3, 120, "some jobs to be collated")
        cancel = farm("cancel", "doomed", "--controller", controller.url)  # by name, as people do
        out, err = submitter.communicate(timeout=120)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.communicate()
    assert cancel.returncode == 0, cancel.stderr
    (run,) = controller.status()["projects"]
    assert run["state"] == "cancelled" and 3 <= run["done"] < 300
    # the submitter: its exit code says not all was rendered, and the outputs are here, not only there
    assert submitter.returncode == 1, err
    assert "doomed (synthetic): cancelled" in out and f"outputs in {project / 'output'}" in out
    there = next((controller.state_dir / "uploads").glob("*/output"))
    here = _collated(project / "output")
    assert len(here) == run["done"] and here == _collated(there)
    _assert_right(here)
    # the canceller, perhaps on another machine: not the controller's folder (meaningless there), but
    # the command that fetches them, as `farm submit --controller` says it
    assert "cancelled" in cancel.stdout and str(there) not in cancel.stdout + cancel.stderr, cancel
    fetch = f"`farm download {run['id']} DIR --controller {controller.url}` fetches them"
    assert f"outputs: on the controller's disk; {fetch}" in cancel.stdout, cancel.stdout

    # fetching them later: the run is over (nothing to cancel), its outputs still come
    later = farm("cancel", run["id"], "--controller", controller.url, "--download", str(tmp_path / "fetched"))
    assert later.returncode == 0, later.stderr
    assert f"project {run['id']} had finished already (cancelled): nothing to cancel" in later.stderr
    assert _collated(tmp_path / "fetched") == here
    assert f"outputs in {tmp_path / 'fetched'}" in later.stdout


def test_cancel_finds_a_project_still_uploading(controller, synthetic):
    project = load_project(synthetic(jobs=5, name="uploading"))
    with Client(controller.url) as submitter:
        # a submitter whose files have not come yet: the controller waits for the upload
        reply = submitter.request(T.SUBMIT, {"project": project.to_wire(), "priority": 0, "upload": True},
                                  expect=(T.UPLOAD,))
        assert reply.body["token"]
        done = farm("cancel", "uploading", "--controller", controller.url)
        assert done.returncode == 0, done.stderr
        assert "uploading (synthetic): cancelled" in done.stdout
        assert "cancelled while its files were being uploaded" in done.stdout
        given_up = r"project upload given up: cancelled \(farm cancel\) before it started"
        with pytest.raises(FarmError, match=given_up):
            submitter.receive()
    assert controller.status()["projects"] == []


def test_cancel_of_a_finished_or_unknown_project_says_so(controller, agents, synthetic):
    agents(controller.url, 1)
    with Client(controller.url) as client:
        run_id = client.submit(load_project(synthetic(jobs=3, output_bytes=SIZE, name="quick")))
        assert client.follow(run_id).ok
    done = farm("cancel", "quick", "--controller", controller.url)
    assert done.returncode == 0, done.stderr
    assert f"project {run_id} had finished already (done): nothing to cancel" in done.stderr
    assert "quick (synthetic): done: 3/3 jobs done" in done.stdout
    # shared disk (no upload): nothing to download, and the message says where the outputs are
    fetch = farm("cancel", "quick", "--controller", controller.url, "--download", "somewhere")
    assert fetch.returncode == 1 and "offers no outputs of" in fetch.stderr and "on its disk" in fetch.stderr
    ghost = farm("cancel", "ghost", "--controller", controller.url)
    assert ghost.returncode == 1
    assert "no project 'ghost' on this controller (farm status lists its projects)" in ghost.stderr
    assert "Traceback" not in ghost.stderr + fetch.stderr


def test_hidden_scratch_in_an_output_folder_is_not_offered_for_download(controller, tmp_path):
    # what a cancelled or failed audio run leaves: its joins (GBs of PCM), hidden in the output folder
    out = tmp_path / "out"
    for rel in ("song.flac", "sheets/contact.png", ".song.join.s16", "sheets/.partial.png", ".cache/block"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x" * 10)
    [tree] = controller.assets.publish_outputs("run-1.output", out)
    manifest = controller.assets.server.published(tree)
    assert sorted(entry.path for entry in manifest.entries) == ["sheets/contact.png", "song.flac"]
