"""A download of a remote run's outputs that fills the disk said only `[Errno 28] No space left on
device: '<cache file>' -> '<output>/.NAME.farm-PID.tmp'` (code os_error), with no word on how to get
the outputs, and left that empty temporary in the output folder for good. Now it names the folder,
says to make room and run `farm download RUN DIR --controller URL` (code disk_full), leaves no
temporary behind, and a later download sweeps the temporaries that dead processes left there.

A real `farm controller` process, a real agent, the real `farm submit` and `farm download`
processes, and a real small tmpfs as the project's output folder (skipped where none can be mounted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_fxdl_download_restart import SIZE, Controllers, cli, outputs

JOBS = 6  # 1.5 MiB of outputs: a 512 KiB disk takes one or two


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def controllers(tmp_path):
    started = Controllers(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def small_output(synthetic):
    project = synthetic(jobs=JOBS, output_bytes=SIZE, name="full")
    output = project / "output"
    output.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(output)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield project, output
    subprocess.run(["umount", "-l", str(output)], capture_output=True)


def dead_pid() -> int:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


def temporaries(folder):
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_a_download_that_fills_the_disk_says_so_leaves_nothing_and_a_later_one_sweeps(
        tmp_path, controllers, agents, small_output):
    project, output = small_output
    controllers.start()
    agents(controllers.url, 1)
    done = cli(tmp_path, "submit", str(project), "--controller", controllers.url, "--json")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 1, (out, err)
    report = json.loads(out)  # exactly one object
    run_id = controllers.projects()[0]["id"]
    # before: "[Errno 28] No space left on device: '.../cache/...' -> '.../output/.job-....farm-PID.tmp'"
    assert report["code"] == "disk_full", report
    assert f"no space left on device writing the outputs of {run_id} into {output}" in report["error"], report
    assert f"make room, then `farm download {run_id} DIR --controller {controllers.url}`" in report["error"]
    assert temporaries(output) == [], temporaries(output)  # before: the empty temporary stayed
    fit = outputs(output)
    assert len(fit) < JOBS and all(size == SIZE for size in fit.values()), fit  # whole files only

    subprocess.run(["mount", "-o", "remount,size=4m", str(output)], check=True)  # room made
    stale = output / f".job-0000000.bin.farm-{dead_pid()}.tmp"  # a killed download's
    live = output / f".job-0000001.bin.farm-{os.getpid()}.tmp"  # one writing here now
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    fetched = cli(tmp_path, "download", run_id, str(output), "--json", "--controller", controllers.url)
    out, err = fetched.communicate(timeout=300)
    assert fetched.returncode == 0, (out, err)
    assert json.loads(out)["state"] == "done"
    assert temporaries(output) == [live.name]  # before: both stayed
    live.unlink()
    assert outputs(output) == {f"job-{i:07d}.bin": SIZE for i in range(JOBS)}


def test_sweeping_leaves_other_files_and_live_writers_alone(tmp_path):
    from farm.filesync.materialize import sweep_stale  # new: the other test runs against older code too

    names = [".a.png.farm-1.tmp", f".b.png.farm-{dead_pid()}.tmp", f".c.farm-{os.getpid()}.tmp",
             "a.png", ".farm-12.tmp", "x.farm-999999999.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert sweep_stale(str(tmp_path)) == 1  # pid 1 lives; only the dead one's goes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {names[1]})
