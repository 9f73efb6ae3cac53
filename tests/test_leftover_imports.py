"""Start-up imports: the submitter imports only its project's media plugin; webhooks' urllib waits.

`farm submit` runs an embedded controller, which calls the plugins' `farm_event` hook: it used
to import every plugin for that (frames, audio: 0.3-0.5 s of a map submit's start). farm's own
plugins implement no hook but media types, so only the others are loaded for hooks now.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm.plugins import BUILTIN_DIST, get_plugins

ROOT = Path(__file__).resolve().parents[1]
MEDIA_PLUGINS = {"farm_maptiles", "farm_frames", "farm_audio"}
# `python -m farm ARGS...`, writing the farm_* plugin modules it imported to $MODULES_OUT at exit
SUBMITTER = ("import atexit, json, os, runpy, sys\n"
             "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(\n"
             "    m for m in sys.modules if m.startswith('farm_') and '.' not in m))))\n"
             "sys.argv = ['farm', *sys.argv[1:]]\n"
             "runpy.run_module('farm', run_name='__main__', alter_sys=True)\n")


def test_submitting_a_map_imports_neither_the_frames_nor_the_audio_plugin(tmp_path):
    pytest.importorskip("mapnik")
    project = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", project,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    toml = project / "farm.toml"
    toml.write_text(toml.read_text().replace('zoom = "0-5"', 'zoom = "0-1"'))  # a short run
    modules = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", SUBMITTER, "submit", str(project), "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MODULES_OUT": str(modules)})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "done" and summary["jobs"]["done"] == summary["jobs"]["total"] > 0, summary
    imported = set(json.loads(modules.read_text()))
    assert imported & MEDIA_PLUGINS == {"farm_maptiles"}, imported


def test_farms_own_plugins_implement_no_hook_but_media_types():
    """What lets a controller skip them when it calls a hook on every plugin (`Plugins.manager`)."""
    plugins = get_plugins()
    plugins.load_all()
    own = [info for info in plugins.infos if info.dist == BUILTIN_DIST]
    assert {info.module for info in own} >= MEDIA_PLUGINS
    assert all(info.hooks == ["farm_register_media_types"] for info in own), [(i.name, i.hooks) for i in own]


def test_importing_notify_does_not_import_urllib_request():
    probe = "import sys, farm.notify; print('urllib.request' in sys.modules, 'http.client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
