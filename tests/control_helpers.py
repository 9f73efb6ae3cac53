"""Helpers for the live-control tests: the controller's events as a test sees them, and a media
type whose jobs log (to read the logs of jobs that succeeded)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conftest import wait_for
from sched_helpers import install_plugin

from farm.controller.events import Event
from farm.controller.server import Controller
from farm.plugins import PluginInfo, get_plugins


class EventLog:
    """Every event a controller publishes from now on, as its observer thread hands them out."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.events: list[Event] = []
        controller.events.observe(self.events.append)

    def of(self, type: str, run: str | None = None, *, after: int = 0,
           agent: str | None = None) -> list[Event]:
        """Events of a type (for a run, an agent) numbered after `after`."""
        return [e for e in list(self.events) if e.type == type and e.seq > after
                and (run is None or e.run == run) and (agent is None or e.agent == agent)]

    def settled(self) -> EventLog:
        """Wait until every event published so far has been handed to us."""
        assert self.controller.events.drain(30), "the observer thread fell behind"
        return self

    def seq_of(self, type: str, run: str | None = None, agent: str | None = None) -> int:
        """The newest such event's seq (it must have been published)."""
        found = self.settled().of(type, run, agent=agent)
        assert found, f"no {type} event"
        return found[-1].seq


CHATTY = """
    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Chatty(MediaType):
        name = "chatty"

        def configure(self, s):
            settings = {"jobs": s.integer("jobs", 3)}
            s.finish()
            return settings

        def count(self, project):
            return project.settings["jobs"]

        def split(self, project):
            for i in range(project.settings["jobs"]):
                yield Job(f"talk-{i}")

        def render(self, job, ctx):
            ctx.log.info("rendering %s, all is well", job.key)
            return None


    @hookimpl
    def farm_register_media_types(register):
        register(Chatty)
"""


def media_type_source(name: str, keys: str, methods: str = "") -> str:
    """A plugin module's source: one media type ``name`` with no settings, whose jobs are the
    keys ``keys`` (a Python expression) yields, and more ``methods`` (indented by 8)."""
    return f"""
    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Plugin(MediaType):
        name = "{name}"

        def configure(self, s):
            s.finish()
            return {{}}

        def split(self, project):
            for key in {keys}:
                yield Job(key)

        def render(self, job, ctx):
            return None
{methods}

    @hookimpl
    def farm_register_media_types(register):
        register(Plugin)
"""


#: a media type of one job whose finalize waits (up to 120 s) for a file ``release`` the test
#: writes into the project folder, then writes its one output: a run held finalizing at will
GATED = media_type_source("gated", '["only"]', """
        def finalize(self, ctx):
            import time
            gate = ctx.project.root / "release"
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:  # the test opens it
                time.sleep(0.01)
            (ctx.project.output_dir / "final.txt").write_text("whole")
            return [ctx.project.output_dir / "final.txt"]
""")


def plugin_project(tmp_path: Path, url: str, agents: Any, name: str, source: str) -> Path:
    """Install the media type ``name`` from ``source`` (`media_type_source`), start one agent of
    ``url`` that has it, and write a project of that type; returns the project's folder."""
    env = installed_plugin(tmp_path / "site", f"farm_{name}_test", source, name)
    agents(url, 1, env=env)
    project = tmp_path / name
    project.mkdir()
    (project / "farm.toml").write_text(f'[project]\nname = "{name}"\nmedia_type = "{name}"\n[{name}]\n')
    return project


def chatty_plugin(site: Path) -> dict[str, str]:
    """Install the `chatty` media type here (controller) and for agents; returns the agents' env."""
    return installed_plugin(site, "farm_chatty_test", CHATTY, "chatty")


#: media type -> (module, source) installed in this test process by `installed_plugin`
_INSTALLED: dict[str, tuple[str, str]] = {}


def installed_plugin(site: Path, module_name: str, source: str, media_type: str) -> dict[str, str]:
    """Install a media type from ``source`` in this process (the controller's) and in ``site``
    for agents' processes; returns the agents' environment."""
    install_plugin(site, module_name, source, media_type)
    # this process loads it once: another test's code under the same name would be the one here
    first = _INSTALLED.setdefault(media_type, (module_name, source))
    assert first == (module_name, source), (f"media type {media_type!r} was installed with other code by an "
                                            "earlier test in this process: give this one another name")
    plugins = get_plugins()
    if media_type not in plugins.media_types:  # once per test process
        import importlib
        import sys

        sys.path.insert(0, str(site))
        module = importlib.import_module(module_name)
        info = PluginInfo(name=media_type, version="0.1", module=module_name)
        plugins.infos.append(info)
        plugins.register(module, info)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def jobs_all(client: Any, run: str, state: str | None = None, page: int = 2) -> list[dict[str, Any]]:
    """Every job of a run, read page by page."""
    jobs, offset = [], 0
    while True:
        reply = client.jobs(run, state, offset=offset, limit=page)
        jobs += reply["jobs"]
        offset += page
        if offset >= reply["total"]:
            return jobs


def remove_while_paused(url: str, run_id: str, folder: Path) -> None:
    """Remove `folder` (a run's output folder) between two collates of run `run_id`: paused, once the
    jobs it held are in, so jobs are still to come after the removal; then resumed."""
    import shutil

    from farm.client import Client

    with Client(url, timeout=10) as client:
        client.pause(run_id)
        wait_for(lambda: not client.project(run_id)["running"], 60, "the jobs held to finish")
        assert client.project(run_id)["done"] < client.project(run_id)["total"]
        shutil.rmtree(folder)
        client.resume(run_id)
