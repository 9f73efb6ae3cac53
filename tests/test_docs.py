"""The plugin author's guide keeps up with the API: every hook and MediaType method is in it."""

from __future__ import annotations

import inspect

from conftest import ROOT

from farm import hookspecs
from farm.mediatype import MediaType

GUIDE = (ROOT / "docs" / "plugins.md").read_text()


def test_every_hook_is_documented():
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("farm_")]
    assert hooks, "no hooks found"
    missing = [h for h in hooks if h not in GUIDE]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


def test_every_media_type_method_is_documented():
    methods = [name for name, _ in inspect.getmembers(MediaType, inspect.isfunction) if not name.startswith("_")]
    missing = [m for m in methods if f"`{m}" not in GUIDE]
    assert not missing, f"MediaType methods missing from docs/plugins.md: {missing}"


def test_architecture_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "farm").rglob("*.py")
                     if p.name not in ("__init__.py", "__main__.py"))
    missing = [m for m in modules if m not in doc and m.rsplit("/", 1)[0] + "/`" not in doc]
    assert not missing, f"modules not described in docs/architecture.md: {missing}"


def test_api_reference_is_generated_from_the_current_docstrings():
    """docs/api.md is pdoc3's output for the plugin API; regenerate it when a docstring changes."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr or done.stdout
    api = (ROOT / "docs" / "api.md").read_text()
    touched = ["Class `Project`", "Class `Job`", "Class `RenderContext`", "Class `CollateContext`",
               "Class `SettingsReader`", "Method `integer`", "Method `asset`", "Class `ProjectError`",
               "Class `RenderError`", "Class `JobFailedForGood`", "Function `farm_register_media_types`",
               "Method `cache_settings`", "Function `run_local`", "Function `farm_embedded`",
               "Function `submit_embedded`"]
    missing = [name for name in touched if name not in api]
    assert not missing, f"docs/api.md lacks {missing}"
