"""The embedded farm (`farm submit DIR`) talks over a private ipc:// folder: it needs no keys,
whatever $FARM_KEYS says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FARM = [sys.executable, "-m", "farm"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("keys", ["other-keys", "empty"])
def test_embedded_submit_ignores_farm_keys(tmp_path, synthetic, keys):
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    env = {**os.environ, "FARM_KEYS": str(folder)}
    if keys == "other-keys":  # a keys folder with a controller's and a client's key, but no `node` key
        for name in ("controller", "client"):
            made = subprocess.run(
                [*FARM, "keys", "create", name, "--keys-dir", str(folder)],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
    project = synthetic(jobs=6, output_bytes=8)
    done = subprocess.run(
        [*FARM, "submit", str(project), "--agents", "2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "6/6 jobs done" in done.stdout
    assert "key" not in done.stderr, done.stderr
    assert len(list((project / "output").iterdir())) == 6
