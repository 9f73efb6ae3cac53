"""Clean nodes: whatever kills an agent (SIGKILL included) takes its workers and renderers with it,
and the next agent removes the scratch folder it left, never a live sibling's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Background, wait_for
from nodes_helpers import children, command_line, gone, workers_of
from test_frames import PID_FILE, blender  # noqa: F401 (a fixture)
from test_frames import write_project as frames_project

from farm.agent import scratch
from farm.errors import FarmError
from farm.proc import child_dies_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _scratch_of(agent_pid: int) -> Path:
    """An agent's scratch folder, read off its first worker's command line (``... SLOT_DIR``)."""
    worker = wait_for(lambda: workers_of(agent_pid), 60, "the agent's workers")[0]
    return Path(command_line(worker)[-1]).parent


@pytest.fixture
def own_tmp() -> Iterator[dict[str, str]]:
    """A temp folder for this test's agents alone (short: ipc:// paths hold 107 bytes), as their env."""
    folder = tempfile.mkdtemp(prefix="farm-nodes-", dir="/tmp")
    yield {"TMPDIR": folder}
    shutil.rmtree(folder, ignore_errors=True)


def _busy_workers(controller, agent_id: str, count: int) -> bool:
    agent = next((a for a in controller.status()["agents"] if a["id"] == agent_id), None)
    return agent is not None and len(agent["current"]) >= count


def test_a_sigkilled_agent_takes_its_busy_workers_along(controller, agents, synthetic, own_tmp):
    # jobs that never end: a worker running one never gets back to checking on its parent by itself
    project = synthetic(extra="[jobs]\ntimeout = 3600\n", jobs=2, hang=["job-0000000", "job-0000001"])
    (agent,) = agents(controller.url, 1, slots=2, env=own_tmp)  # its scratch is left in own_tmp
    run = Background(controller.url, project)
    wait_for(lambda: _busy_workers(controller, "agent-0", 2), 60, "both workers to run a hanging job")
    workers = workers_of(agent.pid)
    assert len(workers) == 2, workers
    agent.send_signal(signal.SIGKILL)
    agent.wait(30)
    wait_for(lambda: all(gone(pid) for pid in workers), 30, f"workers {workers} to die with their agent")
    assert not run.done()  # its jobs wait for another agent


def test_a_restarted_agent_removes_a_dead_agents_scratch_but_not_a_live_ones(controller, agents, own_tmp):
    dead, live = agents(controller.url, 2, env=own_tmp)
    dead_dir, live_dir = _scratch_of(dead.pid), _scratch_of(live.pid)
    assert dead_dir != live_dir and dead_dir.name.startswith(scratch.PREFIX)
    assert dead_dir.parent == Path(own_tmp["TMPDIR"])
    dead.send_signal(signal.SIGKILL)
    dead.wait(30)
    assert dead_dir.is_dir()  # nobody has cleaned up yet
    agents(controller.url, 1, env=own_tmp)  # "agent-2": it claims its own folder when it starts
    wait_for(lambda: any(a["id"] == "agent-2" for a in controller.status()["agents"]), 60, "the new agent")
    wait_for(lambda: not dead_dir.exists(), 30, f"{dead_dir} to be removed")
    assert live_dir.is_dir() and (live_dir / scratch.OWNER).is_file()
    assert live.poll() is None and workers_of(live.pid)


def _holder(folder: Path | None = None) -> subprocess.Popen[bytes]:
    """Another process that claims `folder` (None: a fresh temp folder) and prints it, then waits."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from farm.agent.scratch import claim
        held = claim({f"Path({str(folder)!r})" if folder else None})
        print(held.path, flush=True)
        sys.stdin.read()
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def test_sweep_removes_only_folders_whose_owner_is_dead(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    live, dead = _holder(), _holder()
    try:
        live_dir = Path(live.stdout.readline().decode().strip())
        dead_dir = Path(dead.stdout.readline().decode().strip())
        (dead_dir / "slot0" / "work").mkdir(parents=True)
        _end(dead)
        # agents from before owner files: dead when their workers' socket refuses connections
        unmarked, old_dead, old_live = (tmp_path / f"{scratch.PREFIX}{n}" for n in ("new", "dead", "live"))
        for folder in (unmarked, old_dead, old_live):
            folder.mkdir()
        with socket.socket(socket.AF_UNIX) as gone_now:
            gone_now.bind(str(old_dead / scratch.SOCKET))  # the file stays after the close
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(old_live / scratch.SOCKET))
        listening.listen()
        other = tmp_path / "not-farm"
        other.mkdir()
        try:
            mine = scratch.claim()
        finally:
            listening.close()
        assert mine.path.parent == tmp_path
        assert not dead_dir.exists() and not old_dead.exists()
        # a live agent's; one with no socket yet (an agent starting now); not an agent's at all
        assert live_dir.is_dir() and old_live.is_dir() and unmarked.is_dir() and other.is_dir()
        mine.release()
        assert not mine.path.exists()
    finally:
        _end(live)
        _end(dead)


def test_a_given_scratch_folder_is_refused_while_a_live_agent_holds_it_and_emptied_after(tmp_path):
    folder = tmp_path / "scratch"
    holder = _holder(folder)
    try:
        assert holder.stdout.readline().decode().strip() == str(folder)
        (folder / "leftover").write_text("x")
        with pytest.raises(FarmError, match=r"scratch folder .* is in use by a live agent \(pid \d+"):
            scratch.claim(folder)
    finally:
        _end(holder)
    taken = scratch.claim(folder)
    try:
        assert sorted(p.name for p in folder.iterdir()) == [scratch.OWNER]
        assert f"pid {os.getpid()} " in (folder / scratch.OWNER).read_text()
    finally:
        taken.release()


def test_a_child_started_with_the_preexec_dies_with_its_sigkilled_parent(tmp_path):
    code = textwrap.dedent("""
        import subprocess, sys
        from farm.proc import child_dies_with_parent
        child = subprocess.Popen(["sleep", "600"], preexec_fn=child_dies_with_parent())
        print(child.pid, flush=True)
        sys.stdin.read()
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    assert children(parent.pid) == [child]
    _end(parent)
    wait_for(lambda: gone(child), 30, f"sleep {child} to die with its parent")
    assert child_dies_with_parent() is not None


@pytest.mark.slow
def test_a_sigkilled_agent_takes_its_blender_along(blender, controller, agents, tmp_path, own_tmp):  # noqa: F811
    pids = tmp_path / "pids"  # the scene script writes Blender's pid when it loads
    root = frames_project(tmp_path / "p", frames="1-240", frames_extra="chunk = 240\n",
                          scene_extra=PID_FILE.format(path=str(pids)))
    (agent,) = agents(controller.url, 1, env=own_tmp)
    Background(controller.url, root)
    wait_for(lambda: pids.exists() and pids.read_text().endswith("\n"), 120, "Blender to load the scene")
    renderer = int(pids.read_text())
    workers = workers_of(agent.pid)
    assert workers and renderer in children(workers[0])  # started by the worker, in its process group
    agent.send_signal(signal.SIGKILL)
    agent.wait(30)
    wait_for(lambda: gone(renderer) and all(gone(pid) for pid in workers), 30,
             f"worker {workers} and Blender {renderer} to die with their agent")


def test_a_worker_whose_agent_died_while_it_started_does_not_wait_for_ever(tmp_path):
    """The cause of the orphan workers test runs left: an agent killed right after starting a
    worker, which then took whoever adopted it for its agent and waited on a dead socket."""
    code = textwrap.dedent(f"""
        import os, subprocess
        from pathlib import Path
        from farm.agent.launch import worker_command, worker_env
        folder = Path({str(tmp_path)!r})
        worker = subprocess.Popen(worker_command(f"ipc://{{folder}}/workers.sock", 0, folder / "slot0"),
                                  cwd=folder, env=worker_env(), start_new_session=True)
        print(worker.pid, flush=True)
        os._exit(0)  # gone before the worker has even imported farm
    """)
    agent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           check=True)
    worker = int(agent.stdout)
    wait_for(lambda: gone(worker), 30, f"worker {worker} to notice its agent is gone")
