"""`farm submit DIR` of another user's folder: one clear error naming it, no traceback, nothing made
in it (real processes). Run as root, the folder is given to uid 65534; root's rights to write into
folders that are not its own are dropped (`setpriv`) so it meets the folder as another user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

OTHER = 65534
SETPRIV = shutil.which("setpriv")
AS_A_USER = [SETPRIV or "setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _submit(project, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "farm", "submit", str(project)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
@pytest.mark.parametrize("mode", [0o755, 0o1777], ids=["closed", "sticky-world-writable"])
def test_another_users_project_folder_is_refused_before_anything_is_made(synthetic, mode):
    if mode == 0o755 and SETPRIV is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's rights over others' folders")
    project = synthetic(jobs=1)
    os.chown(project, OTHER, -1)
    os.chmod(project, mode)
    before = sorted(os.listdir(project))
    done = _submit(project, AS_A_USER if SETPRIV else [])
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Errno" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: {project} belongs to user {OTHER}, not to you"), done.stderr
    assert "copy the project into a folder of yours" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(os.listdir(project)) == before  # no .farm/
