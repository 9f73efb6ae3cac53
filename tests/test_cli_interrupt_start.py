"""Ctrl-C while `farm` is still loading its modules: exit 130 with one line (or, with --json, one
JSON object), never a traceback. The interrupt is raised by an import hook at a chosen module, so
the moment is the same on every run (a real SIGINT lands wherever the clock says)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_project

# raise KeyboardInterrupt when `module` is first imported, then run farm's command line as `how`
SCRIPT = """
import runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["farm", *{argv!r}]
if {how!r} == "python -m farm":
    runpy.run_module("farm", run_name="__main__")
else:  # the console script: farm.cli is imported, then main() runs
    from farm.cli import main
    main()
"""


@pytest.mark.parametrize(("how", "module"), [
    ("python -m farm", "typer"),  # while the command line itself loads
    ("python -m farm", "farm.journal"),  # while `submit`'s modules load
    ("farm", "farm.journal"),
])
@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_while_loading_is_one_line_or_one_object(tmp_path: Path, how: str, module: str,
                                                        as_json: bool) -> None:
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2")
    argv = ["submit", str(project), *(["--json"] if as_json else [])]
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(module=module, argv=argv, how=how)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if as_json:
        reply = json.loads(done.stdout)  # exactly one object, nothing else
        assert reply["code"] == "interrupted" and reply["state"] == "interrupted"
    else:
        assert done.stdout == "" and "interrupted (Ctrl-C)" in done.stderr
