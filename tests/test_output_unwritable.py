"""An output folder farm cannot write is refused when the run is submitted, naming the folder,
before any job runs: it used to be found by the first collate, after every job had been rendered
three times, and the run ended with each job "failed" for the controller's own reason. Also the
checks found with it: a farm.toml that is not UTF-8, `[output] directory = "."`, and an asset
that cannot be sent (a fifo, a link loop), whose refusal now names the project and the way out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import write_project

from farm.client import submit
from farm.embedded import submit_embedded
from farm.errors import FarmError, ProjectError
from farm.paths import unwritable
from farm.project import load_project

RENDERED = "rendered.log"  # a line per job rendered (synthetic's render_log)


def read_only(folder: Path) -> None:
    """Make ``folder`` unwritable, even for root (an immutable flag), or skip where that cannot be done."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem cannot make a folder read-only for root (no chattr +i)")


def writable_again(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def test_an_output_folder_under_a_file_is_refused_before_any_job(synthetic):
    project = synthetic(jobs=3, render_log=RENDERED)
    (project / "notes.txt").write_text("a file, not a folder\n")
    with pytest.raises(FarmError) as refused:
        submit_embedded(project, agents=1, output="notes.txt/out")
    message = str(refused.value)
    assert f"cannot write the output folder {project}/notes.txt/out" in message, message
    assert f"{project}/notes.txt, where it would be made, is not a folder" in message, message
    assert not (project / RENDERED).exists(), "a job ran"


def test_a_read_only_output_folder_is_refused_before_any_job(synthetic):
    project = synthetic(jobs=3, render_log=RENDERED)
    output = project / "output"
    read_only(output)
    try:
        assert unwritable(project, "output") is not None
        with pytest.raises(FarmError, match=f"cannot write the output folder {output}: it cannot be written"):
            submit_embedded(project, agents=1)
        assert not (project / RENDERED).exists(), "a job ran"
    finally:
        writable_again(output)
    assert unwritable(project, "output") is None and list(output.iterdir()) == []  # the probe left nothing


def test_a_remote_submit_checks_the_folder_its_outputs_are_downloaded_into(controller, agents, synthetic):
    agents(controller.url, 1)
    project = synthetic(jobs=2, render_log=RENDERED)
    output = project / "output"
    read_only(output)
    try:
        with pytest.raises(FarmError, match=f"cannot write the output folder {output}"):
            submit(controller.url, load_project(project), upload=True)
    finally:
        writable_again(output)
    assert not controller.runs, "the project was sent before its output folder was checked"


def test_a_farm_toml_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    write_project(tmp_path, "synthetic")
    text = (tmp_path / "farm.toml").read_bytes()
    (tmp_path / "farm.toml").write_bytes(text + b'\n[output]\ndirectory = "caf\xe9"\n')
    line = text.count(b"\n") + 3
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    assert info.value.line == line, info.value
    assert f"farm.toml:{line}: not UTF-8: byte 0xe9 at column 17" in str(info.value), info.value


def test_the_project_folder_itself_is_no_output_folder(tmp_path):
    write_project(tmp_path, "synthetic", extra='[output]\ndirectory = "."\n')
    with pytest.raises(ProjectError, match=r"\[output\] directory: path '.' is the folder itself"):
        load_project(tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "loop"])
def test_an_asset_farm_cannot_send_names_the_project_and_how_to_leave_it_out(synthetic, kind):
    """A fifo or a symlink loop among a project's files refused the submit with its relative path
    alone ("loop1: cannot read: ..."), no project and no way out."""
    project = synthetic(jobs=2, render_log=RENDERED)
    if kind == "fifo":
        os.mkfifo(project / "odd")
    else:
        os.symlink("odd", project / "odd")
    with pytest.raises(FarmError) as refused:
        submit_embedded(project, agents=1)
    message = str(refused.value)
    assert f"{project}: odd: " in message and "[assets] exclude" in message, message
    assert not (project / RENDERED).exists(), "a job ran"
