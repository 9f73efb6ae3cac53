"""The cache's placement hint: set where the filesystem supports it, harmless elsewhere."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from farm.filesync import Store
from farm.filesync.placement import spread_subfolders


def test_the_hint_is_set_where_supported_and_reported_honestly(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    applied = spread_subfolders(folder)
    if not shutil.which("lsattr"):
        pytest.skip("no lsattr to read the flag back")
    listed = subprocess.run(["lsattr", "-d", str(folder)], capture_output=True, text=True)
    if listed.returncode != 0:  # not ext2/3/4: flags cannot be read, and the hint must say it was skipped
        assert applied is False
        return
    assert applied == ("T" in listed.stdout.split()[0])


def test_a_missing_folder_is_no_error(tmp_path):
    assert spread_subfolders(tmp_path / "nowhere") is False


def test_the_store_marks_its_receiving_folders(tmp_path):
    store = Store(tmp_path / "cache")
    try:
        if not shutil.which("lsattr"):
            pytest.skip("no lsattr to read the flag back")
        for name in ("files", "partial"):
            listed = subprocess.run(["lsattr", "-d", str(tmp_path / "cache" / name)], capture_output=True, text=True)
            if listed.returncode != 0:
                pytest.skip("the filesystem here has no ext2/3/4 flags")
            assert "T" in listed.stdout.split()[0], listed.stdout
    finally:
        store.close()
