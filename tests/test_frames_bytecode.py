"""Farm's Blenders keep their compiled startup scripts in a private folder of this user's farm
cache (`farm_frames.blender.bytecode_env`), so only the first Blender on a machine compiles
them. Real Blender for what Blender does with the folder."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from farm_frames.blender import BYTECODE_FOLDER, bytecode_env, find_blender, setup_env, spare_env
from farm_frames.media import Frames
from farm_frames.warm import SLOT
from test_frames import blender  # noqa: F401

PREFIX = "PYTHONPYCACHEPREFIX"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(PREFIX, raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    return tmp_path / "cache" / "farm" / BYTECODE_FOLDER


@pytest.fixture
def no_spare() -> Iterator[None]:
    SLOT.stop()
    yield
    SLOT.stop()


def test_every_blender_env_names_the_private_folder(cache: Path, tmp_path: Path) -> None:
    settings = {"engine": "cycles", "resolution": [16, 16], "samples": 1, "seed": 0, "denoise": False,
                "format": "png"}
    for env in (spare_env(), setup_env(settings, tmp_path), setup_env(settings, tmp_path, serve=True)):
        assert env[PREFIX] == str(cache)
        assert "PYTHONDONTWRITEBYTECODE" not in env  # it would keep the folder empty
    assert stat.S_IMODE(os.lstat(cache).st_mode) == 0o700
    assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"  # farm's own environment is left alone


def test_a_loose_folder_is_tightened(cache: Path) -> None:
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    assert bytecode_env({})[PREFIX] == str(cache)
    assert stat.S_IMODE(os.lstat(cache).st_mode) == 0o700


def test_a_linked_folder_is_not_used(cache: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(elsewhere)  # whoever made the link chose where our Blenders' code comes from
    env = bytecode_env({"PYTHONDONTWRITEBYTECODE": "1"})
    assert env == {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.skipif(os.getuid() != 0, reason="giving the folder to another user needs root")
def test_a_folder_of_another_user_is_not_used(cache: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    assert PREFIX not in bytecode_env({})


def test_a_users_own_prefix_is_kept(cache: Path) -> None:
    assert bytecode_env({PREFIX: "/somewhere/mine"}) == {PREFIX: "/somewhere/mine"}
    assert not cache.exists()


def _start(env: dict[str, str]) -> str:
    done = subprocess.run(
        [find_blender(), "-b", "--factory-startup", "--python-expr",
         "import sys; print('ignores-env', sys.flags.ignore_environment)"],
        env=env, capture_output=True, text=True, timeout=300, check=True)
    return done.stdout


def _compiled(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.pyc")}


@pytest.mark.slow
def test_the_second_blender_reads_what_the_first_compiled(blender, cache: Path) -> None:  # noqa: F811
    out = _start(bytecode_env(dict(os.environ)))
    if "ignores-env 1" in out:
        pytest.skip("this Blender's build ignores the environment: it keeps its own bytecode")
    first = _compiled(cache)
    # Blender's own startup scripts (its user interface's), compiled into our folder
    assert sum("bl_ui" in str(p) for p in first) > 20, sorted(first)[:5]
    _start(bytecode_env(dict(os.environ)))
    assert _compiled(cache) == first  # read back, none written again


@pytest.mark.slow
def test_a_workers_spare_blender_runs_with_the_folder(blender, cache: Path, tmp_path: Path,  # noqa: F811
                                                      no_spare: None) -> None:
    Frames().prewarm(tmp_path / "slot" / "work", 1)
    assert SLOT.running is not None
    environ = Path(f"/proc/{SLOT.running.proc.pid}/environ").read_bytes().split(b"\0")
    assert f"{PREFIX}={cache}".encode() in environ
    assert b"PYTHONDONTWRITEBYTECODE=1" not in environ
