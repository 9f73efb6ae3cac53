"""An embedded `farm submit DIR` whose output folder is a symlink (outputs kept on another disk) or
may be written by others (a fresh tmpfs mount is mode 1777) is refused, as a controller refuses it;
before, the advice was the controller's "upload it instead: farm submit --controller URL DIR", which
means nothing to someone who has no controller. Now farm submit says what it will not do and what to
do. Real `farm submit` processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_project

FARM = [sys.executable, "-m", "farm"]


@pytest.mark.parametrize("kind", ["symlink", "others_may_write"])
def test_an_output_folder_farm_submit_refuses_says_what_to_do_without_a_controller(tmp_path, kind):
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2\n", name="p")
    output = project / "output"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        output.symlink_to(tmp_path / "elsewhere")
        said = f"the output folder {output} is a symlink: farm submit will not write through it; "
    else:
        output.mkdir()
        output.chmod(0o1777)
        said = f"{output} may be changed by other users (mode 1777), so farm submit will not read "
    done = subprocess.run([*FARM, "submit", "--json", "--agents", "1", str(project)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done
    error = json.loads(done.stdout)["error"]
    assert error.startswith(said), error
    assert "--controller" not in error and "chmod go-w" in error, error  # before: "upload it instead: ..."
    assert list((tmp_path / "elsewhere").iterdir() if kind == "symlink" else output.iterdir()) == []
