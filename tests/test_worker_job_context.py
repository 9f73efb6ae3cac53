"""What a job finds when its worker starts it, however the jobs before it left things: its current
folder is its work folder, its work and output folders are empty, its outputs are the files it
wrote, `ctx.progress` reports its own lease, `ctx.upcoming` names the job after it, and its log
tail is its own. The worker skips the per-job `chdir` and the second look at its folders when
nothing changed (`farm.agent.workdir`, `Worker.work_settled`): the jobs here change each of them
in turn (os.chdir, os.fchdir, contextlib.chdir, the work folder removed, moved away, littered),
inside one batch and across messages. A real worker process on a real socket, with a plugin
installed as pip leaves one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import zmq
from sched_helpers import install_plugin
from wire_helpers import result_map

from farm.agent.launch import worker_command, worker_env
from farm.agent.wresults import read as read_results
from farm.project import load_project
from farm.protocol import JobSpec, T, pack, unpack

PROBE = """
    import contextlib
    import os
    import shutil

    from farm.hookspecs import hookimpl
    from farm.mediatype import MediaType


    class Probe(MediaType):
        name = "probe"

        def configure(self, settings):
            settings.finish()
            return {}

        def cache_settings(self, settings):
            return None

        def count(self, project):
            return 0

        def split(self, project):
            return iter(())

        def render(self, job, ctx):
            nxt = ctx.upcoming()
            seen = {"cwd": os.getcwd(), "work": sorted(os.listdir(ctx.work_dir)),
                    "out": sorted(os.listdir(ctx.output_dir)), "upcoming": None if nxt is None else nxt.key}
            do = job.params["do"]
            if do == "chdir":
                os.chdir(ctx.project_dir)
            elif do == "fchdir":
                fd = os.open(ctx.project_dir, os.O_RDONLY)
                os.fchdir(fd)
                os.close(fd)
            elif do == "contextlib":
                contextlib.chdir(ctx.project_dir).__enter__()  # and never left
            elif do == "remove work":
                shutil.rmtree(ctx.work_dir)
            elif do == "move work":  # the current folder goes with it; an empty one takes its place
                os.rename(ctx.work_dir, ctx.work_dir.with_name("moved-work"))
                ctx.work_dir.mkdir()
            elif do == "litter":
                (ctx.work_dir / "left.txt").write_text(job.key)
                (ctx.work_dir / "sub").mkdir()
            elif do == "output":
                (ctx.output_dir / (job.key + ".txt")).write_text(job.key)
            elif do == "progress":
                ctx.progress(0.5)
            elif do == "log":
                ctx.log.warning("probe %s says hello", job.key)
            return seen


    @hookimpl
    def farm_register_media_types(register):
        register(Probe)
"""

# what each job does to the worker's state; every job after it checks it was put right
ACTIONS = ["none", "chdir", "none", "fchdir", "contextlib", "none", "remove work", "none", "move work",
           "none", "litter", "none", "output", "none", "output", "output", "progress", "progress", "log",
           "none", "litter", "remove work", "chdir", "none"]


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """(socket, identity, the worker's scratch folder, project id, its description)"""
    site = install_plugin(tmp_path / "site", "farm_probe_ctx", PROBE, "probe")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path / "project"
    root.mkdir()
    (root / "farm.toml").write_text('[project]\nname = "p"\nmedia_type = "synthetic"\n')
    wire = {**load_project(root).to_wire(), "media_type": "probe", "settings": {}, "table": {}, "facts": {}}
    zctx = zmq.Context()
    sock = zctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/workers.sock"
    sock.bind(endpoint)
    scratch = tmp_path / "slot0"
    proc = subprocess.Popen(worker_command(endpoint, 0, scratch), env=worker_env(1), start_new_session=True)
    try:
        assert sock.poll(120_000), "the worker never said it was ready"
        ident, *rest = sock.recv_multipart()
        assert unpack(rest).type is T.W_READY
        yield sock, ident, scratch, "run1", wire
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        zctx.destroy(linger=0)


def spec(i: int, do: str) -> JobSpec:
    return JobSpec(f"lease{i}", f"job{i}", "run1", {"do": do}, {}, 60.0)


Seen = tuple[dict[str, dict], dict[str, list], dict[str, list]]


def run(worker: Any, batches: list[list[JobSpec]]) -> Seen:
    """Send the batches (the project described with the first), collect every result, its files'
    names and bytes, and the progress reports by lease."""
    sock, ident, _, project, wire = worker
    for n, batch in enumerate(batches):
        body = {"jobs": batch, "projects": {project: wire} if n == 0 else {}, "threads": 1}
        sock.send_multipart([ident, *pack(T.W_JOBS, body)])
    want = sum(map(len, batches))
    results: dict[str, dict] = {}
    files: dict[str, list] = {}
    progress: dict[str, list] = {}
    while len(results) < want:
        assert sock.poll(60_000), f"no message within 60 s; have {sorted(results)}"
        msg = unpack(sock.recv_multipart()[1:])
        if msg.type is T.W_PROGRESS:
            assert msg.body["lease"] not in results, "a job's progress came after its result"
            progress.setdefault(msg.body["lease"], []).append(msg.body["fraction"])
            continue
        assert msg.type is T.W_RESULTS
        payloads = iter(msg.payloads)
        for wire_result in map(result_map, read_results(msg.body)):
            results[wire_result["lease"]] = wire_result
            files[wire_result["lease"]] = [(name, next(payloads)) for name, _, _ in wire_result["files"]]
    return results, files, progress


def check(worker: Any, batches: list[list[JobSpec]]) -> None:
    scratch = worker[2]
    results, files, progress = run(worker, batches)
    work = os.path.realpath(scratch / "work")
    for batch in batches:
        for n, job in enumerate(batch):
            result = results[job.lease]
            assert result["ok"], result.get("log")
            seen = result["result"]
            assert os.path.realpath(seen["cwd"]) == work, (job, seen)
            assert seen["work"] == [] and seen["out"] == [], (job, seen)
            following = batch[n + 1].key if n + 1 < len(batch) else None
            if following is not None:  # the last of a batch may see the next message's first, or not
                assert seen["upcoming"] == following, (job, seen)
            do = job.params["do"]
            assert files[job.lease] == ([(f"{job.key}.txt", job.key.encode())] if do == "output" else []), job
            assert progress.get(job.lease, []) == ([0.5] if do == "progress" else []), job
            log = result.get("log", "")  # its own lines only
            assert ("says hello" in log) == (do == "log") and log.count("says hello") <= 1, (job, log)
            assert do != "log" or f"probe {job.key} says hello" in log, (job, log)


def test_every_job_starts_in_its_own_empty_work_folder_within_one_batch(worker):
    check(worker, [[spec(i, do) for i, do in enumerate(ACTIONS)]])


def test_every_job_starts_in_its_own_empty_work_folder_one_message_each(worker):
    check(worker, [[spec(i, do)] for i, do in enumerate(ACTIONS)])


def test_a_job_after_another_that_moved_its_current_folder_and_left_files(worker):
    """Batches of two: the first of each changes something, the second (in the same batch, with no
    look of its own at the work folder when the first changed nothing) must not see it."""
    check(worker, [[spec(2 * i, do), spec(2 * i + 1, "none")] for i, do in enumerate(ACTIONS)])


def test_a_worker_counts_chdirs_however_they_are_called(tmp_path):
    """`count_chdirs` sees os.chdir, os.fchdir, posix.* and contextlib.chdir (in a process of its own:
    it wraps the process's functions)."""
    code = """
import contextlib, os, posix, sys
from farm.agent import workdir
workdir.count_chdirs(); workdir.count_chdirs()
here = os.getcwd()
os.chdir(here); posix.chdir(here)
fd = os.open(here, os.O_RDONLY); os.fchdir(fd); posix.fchdir(fd); os.close(fd)
with contextlib.chdir(here):
    pass
print(workdir._chdirs)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=worker_env(1), timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 6  # contextlib.chdir: in and out
