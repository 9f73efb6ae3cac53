"""The per-job path with fewer hand-offs keeps what it promised: an agent sends a worker's results
message on unchanged only when it may (every lease still its own, no files, nothing placed that
changed), job logs go to their writer a turn's worth at a time and still reach the file while the
controller runs, the collector's thresholds are raised only while a loop runs; and a whole run
settles every job exactly once, with the journal rows, events and job logs it had before.
Real controllers, real agent and worker processes, real sockets, real SQLite."""

from __future__ import annotations

import collections
import gc
import sqlite3
import threading

import pytest
import zmq
from conftest import wait_for

from farm import gcpolicy
from farm.agent.agent import Agent
from farm.agent.outbox import Forwarded
from farm.agent.wresults import packed
from farm.client import submit
from farm.controller.joblogpacks import attempts_of
from farm.controller.joblogstore import FILE as JOBLOGS_FILE
from farm.controller.joblogstore import JobLogStore
from farm.controller.server import JOURNAL_FILE, Controller
from farm.filesync import build_manifest
from farm.filesync.localview import LocalView, local_hint
from farm.journal import Journal
from farm.project import load_project
from farm.protocol import PROTOCOL_VERSION, JobResult, JobSpec, T, pack_body, unpack


@pytest.fixture
def linked_agent(tmp_path):
    """An agent (not running its loop) whose controller is a ROUTER socket of the test's."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    agent = Agent(f"tcp://127.0.0.1:{port}", slots=1, scratch=tmp_path / "scratch")
    agent._connect()
    assert unpack(router.recv_multipart()[1:]).type is T.HELLO
    yield agent, router
    agent._close_ctrl(linger=0)
    agent.zctx.term()
    agent.scratch_hold.release()
    router.close(linger=0)
    ctx.term()


def _running(agent: Agent, leases: list[str], project: str = "p1") -> None:
    agent.pool.slots[0].running = [JobSpec(lease, f"k-{lease}", project, {}, {}, 60.0) for lease in leases]
    agent.held |= set(leases)


def _from_worker(results: list[JobResult], files: list[bytes] = ()) -> list[bytes]:
    return [b"w0", *pack_body(T.W_RESULTS, packed([r.to_wire() for r in results]), files)]


def _inner(frames: list[bytes]) -> bytes:
    """The RESULTS body a worker packed into its W_RESULTS message."""
    return unpack(frames[1:]).body["results"]


def _sent(router: zmq.Socket) -> list[bytes]:
    assert router.poll(10_000), "the agent sent nothing"
    return router.recv_multipart()[1:]


def test_a_workers_results_go_on_byte_for_byte_when_all_their_jobs_are_the_agents(linked_agent):
    agent, router = linked_agent
    _running(agent, ["l1", "l2", "l3"])
    frames = _from_worker([JobResult("l1", True, {"a": 1}, duration=0.01), JobResult("l2", False, error="no"),
                           JobResult("l3", True, None, log="tail", duration=2)])
    agent.pool._on_worker(frames)
    assert not agent.held and not agent.pool.slots[0].running  # slots freed as before
    assert [type(item) for item, _ in agent.outgoing] == [Forwarded]  # no JobResult made per job
    agent._flush_results()
    sent = _sent(router)
    assert sent == [bytes((PROTOCOL_VERSION, T.RESULTS)), _inner(frames)]  # the worker's bytes, unchanged
    assert [JobResult.from_wire(r) for r in unpack(sent).body["results"]] == [
        JobResult("l1", True, {"a": 1}, duration=0.01), JobResult("l2", False, error="no"),
        JobResult("l3", True, None, log="tail", duration=2)]


def test_a_result_for_a_lease_no_longer_running_is_dropped_and_the_rest_go_as_before(linked_agent):
    agent, router = linked_agent
    _running(agent, ["l1", "l3"])  # l2 was cancelled meanwhile
    agent.pool._on_worker(_from_worker([JobResult("l1", True, 1), JobResult("l2", True, 2),
                                        JobResult("l3", True, 3), JobResult("l1", True, 4)]))  # l1 twice
    agent._flush_results()
    results = [JobResult.from_wire(r) for r in unpack(_sent(router)).body["results"]]
    assert results == [JobResult("l1", True, 1), JobResult("l3", True, 3)]  # each once, l2 not at all
    assert not agent.held and not agent.pool.slots[0].running


def test_results_with_files_are_not_forwarded(linked_agent):
    agent, router = linked_agent
    _running(agent, ["l1"])
    entry = ["a.bin", 3, b"d" * 32]
    frames = _from_worker([JobResult("l1", True, None, [entry])], [b"abc"])
    agent.pool._on_worker(frames)
    agent._flush_results()
    sent = _sent(router)
    assert sent[2:] == [b"abc"] and JobResult.from_wire(unpack(sent).body["results"][0]).files == [entry]


def _place(agent: Agent, tmp_path) -> tuple[LocalView, object]:
    """Project p1's files placed (linked) from a folder of the controller's machine."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello")
    view = LocalView.make(local_hint(src), build_manifest(src), tmp_path / "dest")
    assert view is not None
    agent.sync.views["p1"] = view
    return view, src


def test_forwarded_results_fail_when_their_placed_files_changed(tmp_path, linked_agent):
    agent, router = linked_agent
    view, src = _place(agent, tmp_path)
    if not view.linked:
        pytest.skip("this filesystem reflinks: an edit of the source never reaches the job")
    _running(agent, ["l1", "l2"])
    agent.pool._on_worker(_from_worker([JobResult("l1", True, 1), JobResult("l2", True, 2, duration=0.5)]))
    with open(src / "a.txt", "r+b") as f:  # in place: the hard link shares the inode
        f.write(b"J")
    agent._flush_results()
    results = [JobResult.from_wire(r) for r in unpack(_sent(router)).body["results"]]
    assert [(r.lease, r.ok, r.duration) for r in results] == [("l1", False, 0.0), ("l2", False, 0.5)]
    assert all("a.txt was modified" in r.error for r in results)
    assert "p1" not in agent.sync.views


def test_placed_results_go_on_unchanged_while_their_files_stay(tmp_path, linked_agent):
    agent, router = linked_agent
    _place(agent, tmp_path)
    _running(agent, ["l1"])
    frames = _from_worker([JobResult("l1", True, 1)])
    agent.pool._on_worker(frames)
    agent._flush_results()
    assert _sent(router)[1] == _inner(frames)


def test_job_logs_are_pushed_in_order_with_the_other_writes(tmp_path):
    store = JobLogStore(tmp_path / JOBLOGS_FILE)
    try:
        store.put("r", "a", (1, "ag", "failed", "boom", 0.5, "log a1"))
        store.drop("r", "a", 1)  # after the put it follows: the row goes
        store.put("r", "a", (2, "ag", "done", None, 0.1, ""))
        for i in range(600):  # more than one piece (PUSH_AT) without a push from outside
            store.put("r", f"k{i}", (1, "ag", "done", None, 0.0, ""))
        assert store.flush()
        assert store.attempts("r", "a") == [{"attempt": 2, "agent": "ag", "state": "done", "error": None,
                                             "duration_s": 0.1, "log": ""}]
        assert [key for key, _ in store.load("r")] == ["a", *(f"k{i}" for i in range(600))]
    finally:
        store.close()


def test_a_batch_grown_while_the_writer_is_behind_goes_to_the_writer_not_into_the_loop(tmp_path):
    """At four full batches waiting the loop waits for the writer's commit, then hands it the batch
    (before, it wrote the batch itself); each job's row is committed once."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path, background=True, max_batch=10, clock=lambda: 0.0)
    journal.add_project("p", {"name": "p"}, 0, 1.0)
    lock = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the writer's first commit waits for this

    def release() -> None:
        wait_for(lambda: journal._unflushed >= 40, 60, "four batches behind the writer")
        lock.execute("ROLLBACK")

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        for i in range(50):  # 10 go to the writer, which waits; at 40 more the loop waits for it
            journal.job_done("p", f"j{i:02d}", None)
        assert journal.unflushed == 40 and journal._writing is not None  # in the writer's hands
    finally:
        releaser.join(60)
        lock.close()
    journal.flush()
    journal.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT key, state FROM jobs WHERE project_id = 'p'").fetchall()
    assert sorted(rows) == [(f"j{i:02d}", "done") for i in range(50)]


def test_the_collectors_thresholds_are_raised_only_while_a_loop_runs(tmp_path):
    before = gc.get_threshold()
    first = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "one").start()
    second = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "two").start()
    try:
        assert gc.get_threshold()[0] == max(before[0], gcpolicy.YOUNG)
        first.stop()
        assert gc.get_threshold()[0] == max(before[0], gcpolicy.YOUNG)  # the second still runs
    finally:
        first.stop()
        second.stop()
    assert gc.get_threshold() == before


def test_an_agents_loop_raises_the_thresholds_while_it_runs(tmp_path):
    before = gc.get_threshold()
    agent = Agent("tcp://127.0.0.1:9", slots=1, scratch=tmp_path / "scratch")  # nobody there: it retries
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: gc.get_threshold()[0] == max(before[0], gcpolicy.YOUNG), 60, "the agent's loop")
    finally:
        agent.stop()
        thread.join(60)
    assert not thread.is_alive() and gc.get_threshold() == before


def test_a_run_settles_every_job_once_with_its_rows_events_and_logs(tmp_path, agents, synthetic):
    """Enough no-op jobs for many forwarded messages and job-log pieces: each job started and done
    once (events in that order, with the same fields), one done row each, one done attempt each."""
    count = 1500
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state")
    ctl.start()
    try:
        agents(ctl.url, 2)
        summary = submit(ctl.url, load_project(synthetic(jobs=count, name="once")))
        assert summary.ok and summary.done == count, summary
        run = summary.id
        keys = {f"job-{i:07d}" for i in range(count)}
        path = ctl.state_dir / JOBLOGS_FILE

        def logged() -> list[tuple]:
            with sqlite3.connect(path) as db:  # no flush or close: the loop pushes them every turn
                return [(key, attempt, state, error, text)
                        for key, attempt, _, state, error, _, text in attempts_of(db, run)]

        wait_for(lambda: len(logged()) >= count, 60, "every job's attempt in the job-log file")
        rows = logged()
        assert sorted(r[0] for r in rows) == sorted(keys)  # one attempt each: none twice, none lost
        assert {r[1:] for r in rows} == {(1, "done", None, "")}
        events = [e for e in ctl.events.buffer if e.run == run and e.type.startswith("job.")]
        by_type = collections.Counter((e.type, e.job) for e in events)
        assert set(by_type) == {(t, k) for t in ("job.started", "job.done") for k in keys}
        assert set(by_type.values()) == {1}  # exactly once each
        seen: set[str] = set()
        for event in events:  # started before done, with the fields they always had
            if event.type == "job.started":
                assert event.job not in seen and set(event.data) == {"lease"} and event.agent
                seen.add(event.job)
            else:
                assert event.job in seen and dict(event.data) == {"reused": False} and event.agent
        ctl.journal.flush()
        with sqlite3.connect(ctl.state_dir / JOURNAL_FILE) as db:
            jobs = db.execute("SELECT key, state FROM jobs WHERE project_id = ?", (run,)).fetchall()
        assert sorted(jobs) == sorted((k, "done") for k in keys)
    finally:
        ctl.stop(shutdown_agents=True)

