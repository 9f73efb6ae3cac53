"""The controller's dispatch path made leaner keeps what it did: a `Job` is the one the frozen
dataclass made, a turn's keys checked at once get the per-job verdicts, and a turn's new jobs pulled
and leased a group at a time (`farm.controller.leasing`) leave what pulling and leasing each by
itself leaves, when `split` yields plain jobs, raises, yields a bad key or no `Job` part-way, or
repeats a key: the same JOBS (each job a `JobSpec` array), events, journal rows, units
and error. A real controller, a peer speaking the agent protocol on a real socket, real SQLite."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from control_helpers import installed_plugin, media_type_source
from hypothesis import given, settings
from hypothesis import strategies as st
from peer_helpers import peer_run

from farm.controller import leasing
from farm.controller.server import JOURNAL_FILE
from farm.ids import MAX_KEY, BadIdentifier
from farm.keycheck import _plain_key, check_job_keys, plain_split
from farm.mediatype import Job
from farm.protocol import JobResult, JobSpec, T, pack, unpack


@dataclasses.dataclass(frozen=True)
class DataclassJob:
    """`Job` as the dataclass decorator alone makes it (its generated __init__)."""

    key: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    inputs: tuple[str, ...] | None = None
    deps: tuple[str, ...] = ()
    units: int = 1


class SubJob(Job):
    """A plugin's own kind of `Job`: never taken as plain."""


@pytest.mark.parametrize("args, kwargs", [
    (("k",), {}), (("k", {"i": 1}), {}), (("k", {"i": 1}, ("a.txt",), ("d",), 3), {}),
    (("k",), {"deps": ("a", "b"), "inputs": None}), (("k", None), {"units": 0}),
    ((), {"key": "k", "params": {"x": [1]}, "inputs": (), "deps": (), "units": 7}),
])
def test_a_job_is_the_one_the_dataclass_makes(args, kwargs):
    made, reference = Job(*args, **kwargs), DataclassJob(*args, **kwargs)
    assert vars(made) == vars(reference) and list(vars(made)) == list(vars(reference))
    assert repr(made) == repr(reference).replace("DataclassJob", "Job")
    assert made == Job(*args, **kwargs) and pickle.loads(pickle.dumps(made)) == made
    assert dataclasses.replace(made, units=5) == Job(**{**vars(made), "units": 5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.key = "other"  # type: ignore[misc]
    if made.params is None:
        assert hash(made) == hash(Job(*args, **kwargs))


def test_a_jobs_signature_and_defaults_are_the_dataclasses():
    assert list(map(str, inspect.signature(Job).parameters.values())) == \
        list(map(str, inspect.signature(DataclassJob).parameters.values()))  # as docs/api.md shows them
    assert [(f.name, f.default, f.default_factory) for f in dataclasses.fields(Job)] == \
        [(f.name, f.default, f.default_factory) for f in dataclasses.fields(DataclassJob)]
    first, second = Job("a"), Job("b")
    first.params["x"] = 1
    assert second.params == {}  # a new dict each time


ALPHABET = "aZ09_.-/ \\\t\n\x00\u00e9"
KEYS = st.one_of(st.text(alphabet=ALPHABET, max_size=12),
                 st.sampled_from(["job-0000001", "a/b", "a\nb", "x" * (MAX_KEY + 1), "y" * MAX_KEY]))
DEPS = st.one_of(st.just(()), st.just([]), st.lists(KEYS, max_size=2).map(tuple), st.lists(KEYS, max_size=1))
YIELDED = st.one_of(st.builds(Job, KEYS, deps=DEPS), st.builds(SubJob, KEYS), st.builds(Job, st.integers()),
                    st.integers(), st.none())


def _plain_one(job: Any) -> bool:
    """What the per-job path would take as plain: a `Job`, no dependencies, a key the fast match takes."""
    return (type(job) is Job and type(job.deps) is tuple and not job.deps and type(job.key) is str
            and len(job.key) <= MAX_KEY and _plain_key(job.key) is not None)


@settings(max_examples=3000, deadline=None)
@given(st.lists(YIELDED, max_size=6))
def test_a_turns_keys_checked_at_once_get_the_verdicts_of_each(jobs):
    verdict = plain_split(jobs)
    assert verdict == (bool(jobs) and all(map(_plain_one, jobs)))
    for job in jobs if verdict else ():
        check_job_keys(job)  # raises for a key the full check refuses


def test_a_key_with_a_newline_does_not_pass_as_two_plain_ones():
    assert plain_split([Job("a"), Job("b")])
    assert not plain_split([Job("a\nb")]) and not plain_split([Job("a\nb"), Job("c")])
    assert not plain_split([]) and not plain_split([Job("a"), Job("b", deps=("a",))])
    with pytest.raises(BadIdentifier):
        check_job_keys(Job("a\nb"))


#: yields what the test sets in ``Plugin.SCRIPT``: a str as a plain job of that key, "RAISE" raises,
#: anything else as it is; no job cache (a run with one is leased one job at a time)
SCRIPTED = media_type_source("leanscript", "()", """
        SCRIPT = []

        def cache_settings(self, settings):
            return None

        def split(self, project):
            for item in self.SCRIPT:
                if item == "RAISE":
                    raise RuntimeError("split broke here")
                yield Job(item, {"k": item}) if isinstance(item, str) else item
""")
PLAIN = [f"j{i:02d}" for i in range(10)]
SCRIPTS = {
    "plain": PLAIN,
    "raises": PLAIN[:6] + ["RAISE"],
    "bad key": PLAIN[:5] + [Job("a/../b")] + PLAIN[5:],
    "no job": PLAIN[:5] + [42] + PLAIN[5:],
    "own kind": PLAIN[:3] + [SubJob("s00")] + PLAIN[3:],
    "repeated": PLAIN[:2] + ["j01"] + PLAIN[2:],
    "dependent": PLAIN[:2] + [Job("d00", deps=("j00",))] + PLAIN[2:],
    "failed, repeated": ["f00"] + PLAIN[:5] + ["f00"] + PLAIN[5:],  # f00 fails for good, then comes again
}
OK = {"ok": True, "duration": 0.01}
FAILED = {"ok": False, "error": "bad", "retry": False}
ENDED = ("done", "failed")


def _drive(tmp_path: Path, script: list[Any]) -> dict[str, Any]:
    """Run `script` through a fresh controller and a peer of 4 slots that answers every job at once;
    what it left, lease ids and the run id named by their job and the run (they are random)."""
    sys.modules["farm_leanscript_test"].Plugin.SCRIPT = script
    turns: list[list[JobSpec]] = []
    with peer_run(tmp_path, "leanscript", "scripted", 4) as (ctl, sock, run_id):
        run = ctl.runs[run_id]

        def answered() -> bool:
            """Answer what came (every job at once: done, or failed for good if its key starts with f);
            True once the run ended and nothing is left."""
            while sock.poll(0):
                msg = unpack(sock.recv_multipart())
                if msg.type is T.JOBS:
                    turns.append(JobSpec.from_rows(msg.body["jobs"]))
                    results = [JobResult(j.lease, **(FAILED if j.key.startswith("f") else OK)).to_wire()
                               for j in turns[-1]]
                    sock.send_multipart(pack(T.RESULTS, {"results": results}))
            return run.state in ENDED and not sock.poll(0)

        wait_for(answered, what="the run's end")
        names = {run_id: "RUN"}
        for turn in turns:
            for job in turn:  # each job's array is a `JobSpec`'s fields, in that order
                assert (job.project, job.timeout) == (run_id, run.timeout)
                names[job.lease] = names.get(job.lease, job.key + "#")
        events = [(e.type, names.get(e.run, e.run), e.job, e.agent,
                   {k: names.get(v, v) if isinstance(v, str) else v for k, v in e.data.items()
                    if e.type != "run.finished" or k in ("state", "done", "failed", "total")})
                  for e in ctl.events.buffer if e.type != "progress"]
        units = (run.units.done, run.units.failed, sorted(run.units.pending.items()))
        outcome = (run.state, run.error, run.exhausted, units)
    db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILE)
    rows = [(key, state, names.get(lease), *rest) for key, state, lease, *rest in db.execute(
        "SELECT key, state, lease, agent, result, error, attempts, reused FROM jobs ORDER BY key")]
    db.close()
    sent = [[(job.key, names[job.lease], job.params, job.deps) for job in turn] for turn in turns]
    return {"sent": sent, "events": events, "rows": rows, "outcome": outcome}


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_turns_jobs_pulled_together_lease_as_one_by_one(tmp_path, monkeypatch, name):
    installed_plugin(tmp_path / "site", "farm_leanscript_test", SCRIPTED, "leanscript")
    grouped = _drive(tmp_path / "grouped", SCRIPTS[name])
    monkeypatch.setattr(leasing, "groupable", lambda run: False)  # every job pulled and leased by itself
    single = _drive(tmp_path / "single", SCRIPTS[name])
    for part in ("sent", "events", "rows", "outcome"):
        assert grouped[part] == single[part], part
    # and what they agree on is what the script says
    keys = [key for turn in grouped["sent"] for key, *_ in turn]
    state, error = grouped["outcome"][:2]
    expected = {"plain": (PLAIN, "done", None), "raises": (PLAIN[:6], "failed", "split() failed"),
                "bad key": (PLAIN[:5], "failed", "a bad job"), "no job": (PLAIN[:5], "failed", "not a farm"),
                "own kind": (PLAIN[:3] + ["s00"] + PLAIN[3:], "done", None),
                "repeated": (PLAIN[:2] + ["j01"] + PLAIN[2:], "done", None),
                "dependent": (PLAIN + ["d00"], "done", None),
                "failed, repeated": (["f00"] + PLAIN, "failed", None)}[name]
    assert sorted(keys) == sorted(expected[0]) and state == expected[1]
    assert all(len(turn) <= 4 for turn in grouped["sent"])  # no more at once than the peer's 4 slots
    assert all(deps == ({"j00": None} if key == "d00" else {})  # the result of each dependency
               for turn in grouped["sent"] for key, _, _, deps in turn)
    assert (error is None) if expected[2] is None else (expected[2] in error), error
