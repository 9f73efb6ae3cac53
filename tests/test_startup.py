"""Start-up costs (issue 18): plugins load lazily by name, agents probe only the media types they
offer, probes run in parallel with a time limit, the CLI imports only its command, and the
embedded farm's agents start early and offer only the project's media type.

Real processes throughout: `farm submit` and `farm agent` subprocesses, their workers, two
test plugins installed as pip would (a dist-info with the entry point), a real controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import wait_for, write_project
from sched_helpers import install_plugin

from farm.agent.capabilities import MEDIA_TYPES_ENV, detect
from farm.cli import command_in
from farm.embedded import EmbeddedFarm, LocalAgents, load_starting_agents
from farm.errors import ProjectError
from farm.hookspecs import hookimpl
from farm.mediatype import MediaType
from farm.plugins import PluginInfo, get_plugins

BUILT_IN = ("farm_audio", "farm_frames", "farm_maptiles", "farm_synthetic")

# Renders one job whose result and output name the plugin packages its worker has imported.
SNIFF = """
    import json
    import sys

    from farm.hookspecs import hookimpl
    from farm.mediatype import Job, MediaType


    class Sniff(MediaType):
        name = "sniff"

        def split(self, project):
            yield Job("sniff")

        def render(self, job, ctx):
            mods = sorted(m for m in sys.modules if m.startswith("farm_") or m in ("mapnik", "bpy"))
            (ctx.output_dir / "modules.json").write_text(json.dumps(mods))
            return {"modules": mods}

        def collate(self, job, result, outputs, ctx):
            (ctx.output_dir / "modules.json").write_text(json.dumps(result["modules"]))


    @hookimpl
    def farm_register_media_types(register):
        register(Sniff)
"""

# A media type whose import and renderer check are logged to $PROBED_LOG, with the process id.
PROBED = """
    import os

    from farm.hookspecs import hookimpl
    from farm.mediatype import MediaType


    def _log(what):
        with open(os.environ["PROBED_LOG"], "a") as f:
            f.write(f"{what} {os.getpid()}\\n")


    _log("import")


    class Probed(MediaType):
        name = "probed"

        def available(self):
            _log("probe")
            return None


    @hookimpl
    def farm_register_media_types(register):
        register(Probed)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    install_plugin(folder, "farm_sniff_test", SNIFF, "sniff")
    install_plugin(folder, "farm_probed_test", PROBED, "probed")
    return folder


def plugin_env(site: Path, log: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "PROBED_LOG": str(log)}


def log_lines(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(what, int(pid)) for what, pid in (line.split() for line in log.read_text().splitlines())]


# -- plugins load by name -------------------------------------------------------------------------


def test_looking_up_a_media_type_imports_only_its_plugin() -> None:
    code = ("import sys; from farm.plugins import get_media_type, get_plugins;"
            "get_media_type('synthetic'); print(sorted(m for m in sys.modules if m.startswith('farm_')));"
            "get_plugins().infos; print(sorted(m for m in sys.modules if m.startswith('farm_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, everything = (json.loads(line.replace("'", '"')) for line in out.splitlines())
    assert first == ["farm_synthetic"]
    assert set(BUILT_IN) <= set(everything)  # listing the plugins loads them all


def test_a_plugin_whose_entry_point_has_another_name_is_still_found(tmp_path: Path) -> None:
    # the entry point "other-name" registers media type "sniff": looking sniff up falls back to all
    install_plugin(tmp_path / "site", "farm_sniff_test", SNIFF, "other-name")
    env = plugin_env(tmp_path / "site", tmp_path / "probed.log")
    code = ("from farm.plugins import get_plugins; p = get_plugins();"
            "print(p.get('sniff').name, p.owner('sniff').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["sniff", "other-name"]


def test_threads_asking_at_once_all_find_their_media_type() -> None:
    from farm.plugins import Plugins

    def ask(name: str, plugins: Plugins, barrier: threading.Barrier, found: list[str]) -> None:
        barrier.wait()
        found.append(plugins.get(name).name)

    for _ in range(5):
        plugins = Plugins()
        plugins.load_entry_points(lazy=True)
        names = ["frames", "synthetic", "maptiles", "audio"] * 3
        barrier = threading.Barrier(len(names))
        found: list[str] = []
        threads = [threading.Thread(target=ask, args=(name, plugins, barrier, found)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(found) == sorted(names)


def test_an_unknown_media_type_names_every_installed_one() -> None:
    code = "from farm.plugins import get_media_type; get_media_type('nope')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "unknown media type 'nope' (installed: audio, frames, " in out.stderr


def test_farm_plugins_still_lists_every_plugin(site: Path, tmp_path: Path) -> None:
    log = tmp_path / "probed.log"
    out = subprocess.run([sys.executable, "-m", "farm", "plugins", "--json"], capture_output=True, text=True,
                         check=True, env=plugin_env(site, log))
    names = {row["name"] for row in json.loads(out.stdout)["plugins"]}
    assert {"audio", "frames", "maptiles", "synthetic", "sniff", "probed"} <= names


# -- a worker imports only the plugin of the media type it runs; agents probe what they offer -----


def test_embedded_farm_worker_and_agents_load_only_the_projects_media_type(site: Path, tmp_path: Path):
    log = tmp_path / "probed.log"
    project = write_project(tmp_path / "sniffing", "sniff")
    proc = subprocess.Popen([sys.executable, "-m", "farm", "--log-level", "info", "submit", "--json",
                             "-n", "1", str(project)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=plugin_env(site, log))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    # the worker that rendered it had imported no other media type's plugin (nor Mapnik, nor bpy)
    assert json.loads((project / "output" / "modules.json").read_text()) == ["farm_sniff_test"]
    # the agent offered sniff alone (no blender, frames, maptiles... in its capabilities)
    joined = [line for line in stderr.splitlines() if " joined from " in line]
    assert len(joined) == 1 and joined[0].endswith("with 1 slot (sniff)"), joined
    # no agent imported or probed the other plugin; only the submitter (its controller calls hooks
    # on every plugin) imported it, and nobody ran its renderer check
    assert all(what == "import" and pid == proc.pid for what, pid in log_lines(log)), log_lines(log)


def test_a_standalone_agent_probes_all_unless_told_which(site: Path, tmp_path: Path, controller, agents):
    log = tmp_path / "probed.log"
    env = plugin_env(site, log)
    everything, = agents(controller.url, 1, env=env)
    wait_for(lambda: ("probe", everything.pid) in log_lines(log), 60, "the agent's probe of every media type")
    only, = agents(controller.url, 1, extra=["--media-type", "sniff"], env=env)

    def caps() -> dict[str, list[str]]:
        return {a["id"]: a["capabilities"] for a in controller.status()["agents"]}

    wait_for(lambda: len(caps()) == 2, 60, "both agents")
    assert caps()["agent-1"] == ["sniff"]
    assert {"frames", "synthetic", "probed", "sniff"} <= set(caps()["agent-0"])
    assert all(pid != only.pid for _, pid in log_lines(log))  # neither imported nor probed


def test_farm_agent_refuses_a_media_type_nobody_provides(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "farm", "agent", "--media-type", "fames", "--controller",
                          f"ipc://{tmp_path}/none"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "--media-type fames: no installed plugin provides it (installed: audio, frames" in out.stderr
    assert "Traceback" not in out.stderr


# -- probes: in parallel, bounded ---------------------------------------------------------------


class _Slow(MediaType):
    delay = 1.0
    started: ClassVar[list[float]] = []
    release = threading.Event()

    def available(self) -> str | None:
        type(self).started.append(time.monotonic())
        if self.delay < 0:
            self.release.wait()  # hangs until the test ends
            return None
        time.sleep(self.delay)
        return None


class SlowA(_Slow):
    name = "slow-a"


class SlowB(_Slow):
    name = "slow-b"


class Hung(_Slow):
    name = "hung"
    delay = -1.0


class SlowPlugin:
    @hookimpl
    def farm_register_media_types(self, register):
        register(SlowA)
        register(SlowB)
        register(Hung)


@pytest.fixture
def slow_plugin():
    plugins = get_plugins()
    plugin = SlowPlugin()
    info = PluginInfo("slow-test", "0", __name__)
    plugins.infos.append(info)
    plugins.register(plugin, info)
    _Slow.started.clear()
    yield
    _Slow.release.set()
    plugins.manager.unregister(plugin)
    for name in ("slow-a", "slow-b", "hung"):
        del plugins.media_types[name]
    plugins.infos = [i for i in plugins.infos if i.name != "slow-test"]


def test_probes_run_at_once_and_a_hung_one_is_given_up(slow_plugin) -> None:
    began = time.monotonic()
    caps, missing, available = detect(["gpu"], only=["slow-a", "slow-b", "hung", "no-such"], timeout=1.8)
    took = time.monotonic() - began
    assert available == {"slow-a", "slow-b"}
    assert caps == ["gpu", "slow-a", "slow-b"]
    assert missing == {"hung": "availability check did not answer within 1.8 s",
                       "no-such": "no installed plugin provides it"}
    assert len(_Slow.started) == 3 and max(_Slow.started) - min(_Slow.started) < 0.9  # all began together
    assert took < 1.8 + 0.9  # one second each in a row would be 2 s plus the 1.8 s wait for the hung one


def test_the_offer_comes_from_the_environment(slow_plugin, monkeypatch) -> None:
    monkeypatch.setenv(MEDIA_TYPES_ENV, " slow-a , ")
    caps, missing, available = detect([])
    assert (caps, missing, available) == (["slow-a"], {}, {"slow-a"})
    assert len(_Slow.started) == 1


# -- the CLI imports only its command -----------------------------------------------------------


@pytest.mark.parametrize(("argv", "command"), [
    (["agent", "--controller", "x"], "agent"),
    (["--log-level", "debug", "submit", "dir"], "submit"),
    (["--log-level=info", "priority", "run", "-5"], "priority"),
    (["keys", "list"], "keys"),
    (["--help"], None), ([], None), (["agnet"], None), (["--version", "agent"], None),
])
def test_the_command_is_read_from_the_arguments(argv: list[str], command: str | None) -> None:
    assert command_in(argv) == command


def test_farm_agent_does_not_import_the_controller_or_the_dashboard() -> None:
    code = ("import sys; from farm.cli import register; register(['agent']);"
            "print(' '.join(m for m in ('farm.controller.server', 'farm.http', 'farm.cli.submit', 'fastapi',"
            "'farm_frames', 'farm_maptiles') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_still_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "farm", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "200"})
    for command in ("submit", "controller", "agent", "plugins", "status", "cancel", "download", "events",
                    "pause", "resume", "retry", "priority", "drain", "undrain", "logs", "keys", "plugin"):
        assert f" {command} " in out.stdout, command


# -- the embedded farm's agents start early, offering the project's media type -------------------


def _agent_children() -> list[int]:
    """Our child processes running `farm ... agent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"agent" in cmd and b"farm" in cmd:
            found.append(int(entry.name))
    return found


def test_agents_started_for_a_project_that_does_not_load_are_stopped(tmp_path: Path) -> None:
    project = write_project(tmp_path / "bad", "synthetic", "jobs = 1\nsmaple = 2\n")
    before = set(_agent_children())
    with pytest.raises(ProjectError, match="smaple"):
        load_starting_agents(project, agents=2)
    assert set(_agent_children()) - before == set()


def test_embedded_agents_offer_the_projects_media_type(tmp_path: Path) -> None:
    project, local = load_starting_agents(write_project(tmp_path / "p", "synthetic", "jobs = 3\n"), agents=2)
    assert local.media_types == ["synthetic"] and len(local.procs) == 2
    with EmbeddedFarm(project.root / ".farm", local=local) as farm:
        summary = farm.submit(project)
        assert summary.ok and summary.done == 3
        # one agent may run all three jobs before the other has joined (its workers start early)
        joined = wait_for(lambda: len(agents := farm.controller.status()["agents"]) == 2 and agents,
                          60, "both agents joined")
        offered = [(a["capabilities"], sorted(a["plugins"])) for a in joined]
        assert offered == [(["synthetic"], ["synthetic"])] * 2
    assert all(proc.poll() is not None for proc in local.procs)


def test_early_agents_of_another_media_type_are_replaced(tmp_path: Path) -> None:
    from farm.embedded import offering
    from farm.project import load_project

    project = load_project(write_project(tmp_path / "p", "synthetic", "jobs = 1\n"))
    wrong = LocalAgents(1, ["frames"]).start()
    local = offering(wrong, project, 1)
    try:
        assert local is not wrong and local.media_types == ["synthetic"]
        assert all(proc.poll() is not None for proc in wrong.procs)
        assert not wrong.sockets.exists()
    finally:
        local.stop()


def test_the_embedded_agents_launcher_takes_only_a_private_socket() -> None:
    out = subprocess.run([sys.executable, "-P", "-m", "farm.agent.local", "tcp://127.0.0.1:5555", "--id", "a",
                          "--parent-pid", str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "only an embedded farm's ipc:// controller (use `farm agent`)" in out.stderr
    assert "Traceback" not in out.stderr
