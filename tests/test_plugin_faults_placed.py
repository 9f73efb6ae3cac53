"""A plugin's own bug is reported with its place (file, line, function), and a plugin that failed
to import is named as such, not as an unknown media type: its author can find and fix it from the
message alone, as a remote submitter must (the controller's log is elsewhere).

Real installs (a module and its dist-info, as pip leaves them) read by real `farm submit` processes,
with real agent processes for the collate and finalize faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sched_helpers import install_plugin

# each fault on a line of its own, found by its marker
BUGGY = """
    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Buggy(MediaType):
        name = "buggy"

        def configure(self, settings):
            fault = settings.choice("fault", ["configure", "split", "collate", "finalize"])
            settings.finish()
            if fault == "configure":
                {}["colour"]  # FAULT configure
            return {"fault": fault}

        def cache_settings(self, settings):
            return None

        def count(self, project):
            return 2

        def split(self, project):
            if project.settings["fault"] == "split":
                int("two")  # FAULT split
            for i in range(2):
                yield Job(f"j{i}", {}, inputs=())

        def render(self, job, ctx):
            (ctx.output_dir / "x.txt").write_text(job.key)

        def collate(self, job, result, outputs, ctx):
            if ctx.project.settings["fault"] == "collate":
                [][1]  # FAULT collate

        def finalize(self, ctx):
            if ctx.project.settings["fault"] == "finalize":
                {}["fin"]  # FAULT finalize
            return []


    @hookimpl
    def farm_register_media_types(register):
        register(Buggy)
"""

BROKEN = """
    import math
    import farm_no_such_dependency  # FAULT import
"""


def farm(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "farm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def place(site: Path, module: str, source: str, marker: str, function: str) -> str:
    """``path:line, in function`` of the line holding `marker` in the installed module."""
    line = next(n for n, text in enumerate(source.splitlines(), 1) if marker in text)  # as installed
    return f"{site / module}.py:{line}, in {function}"


def project(folder: Path, media_type: str, table: str = "") -> Path:
    folder.mkdir()
    (folder / "farm.toml").write_text(f'[project]\nname = "p"\nmedia_type = "{media_type}"\n\n{table}')
    return folder


def test_a_plugin_that_failed_to_import_is_named_with_where_it_failed(tmp_path: Path):
    site = install_plugin(tmp_path / "site", "farm_broken", BROKEN, "broken")
    proj = project(tmp_path / "p", "broken")
    out = farm("submit", "--json", str(proj), site=site, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    error = json.loads(out.stdout)
    assert error["code"] == "invalid", error
    message = error["error"]
    assert "unknown media type" not in message, message  # it is installed: only broken
    assert "media type 'broken' is not loaded: its plugin farm_broken 0.1 (broken = farm_broken) failed to " \
           "load: ModuleNotFoundError: No module named 'farm_no_such_dependency'" in message, message
    assert f"(at {place(site, 'farm_broken', BROKEN, 'FAULT import', '<module>')})" in message, message

    listed = json.loads(farm("plugins", "--json", site=site, cwd=tmp_path).stdout)
    [row] = [r for r in listed["plugins"] if r["name"] == "broken"]
    assert place(site, "farm_broken", BROKEN, "FAULT import", "<module>") in row["error"], row


def test_a_configure_bug_names_its_line(tmp_path: Path):
    site = install_plugin(tmp_path / "site", "farm_buggy", BUGGY, "buggy")
    proj = project(tmp_path / "p", "buggy", '[buggy]\nfault = "configure"\n')
    out = farm("submit", "--json", str(proj), site=site, cwd=tmp_path)
    error = json.loads(out.stdout)
    assert out.returncode == 1 and error["code"] == "invalid", out
    assert "media type 'buggy' failed to read its settings: KeyError('colour') (at " \
           f"{place(site, 'farm_buggy', BUGGY, 'FAULT configure', 'configure')})" in error["error"], error


def failed_run(tmp_path: Path, fault: str) -> tuple[Path, dict]:
    """The summary of a `farm submit --json` of a buggy project on one real agent, which fails."""
    site = install_plugin(tmp_path / "site", "farm_buggy", BUGGY, "buggy")
    proj = project(tmp_path / "p", "buggy", f'[buggy]\nfault = "{fault}"\n\n[jobs]\nmax_attempts = 1\n')
    out = farm("submit", "--json", "--agents", "1", str(proj), site=site, cwd=tmp_path)
    summary = json.loads(out.stdout)
    assert out.returncode == 1 and summary["state"] == "failed", out
    return site, summary


def test_a_collate_bug_leaves_its_traceback_in_the_jobs_log(tmp_path: Path):
    site, summary = failed_run(tmp_path, "collate")
    assert len(summary["failures"]) == 2, summary
    for failure in summary["failures"]:
        assert failure["error"] == "collating its outputs failed: IndexError: list index out of range", \
            failure
        line = place(site, "farm_buggy", BUGGY, "FAULT collate", "collate").rpartition(", in ")[0]
        file, _, number = line.rpartition(":")
        assert f'File "{file}", line {number}, in collate' in failure["log"], failure


def test_a_finalize_bug_names_its_line(tmp_path: Path):
    site, summary = failed_run(tmp_path, "finalize")
    assert summary["error"] == "finalize failed: KeyError: 'fin' (at " \
        f"{place(site, 'farm_buggy', BUGGY, 'FAULT finalize', 'finalize')})", summary


def test_a_split_bug_names_its_line(tmp_path: Path):
    site, summary = failed_run(tmp_path, "split")
    assert summary["error"] == "split() failed: ValueError: invalid literal for int() with base 10: 'two' " \
        f"(at {place(site, 'farm_buggy', BUGGY, 'FAULT split', 'split')})", summary
