"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re

from conftest import ROOT


def commands() -> list[str]:
    return re.findall(r"^    (\S.*)$", (ROOT / "README.md").read_text().split("## Using it")[0], re.MULTILINE)


def test_readme_has_exactly_two_quickstart_commands():
    main, tests = commands()
    assert "farm submit sample_projects/world_map" in main
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = commands()
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in script
