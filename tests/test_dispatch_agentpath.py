"""An agent's and a worker's per-job path, made per message, keeps its verdicts: jobs checked a
field at a time over a whole JOBS message are refused exactly as job by job, a key with a newline
cannot pass as two, and the worker's `Job` is the one `Job(...)` makes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from farm.agent.intake import NEVER_DESCRIBED, screen
from farm.agent.trust import job_refusal
from farm.agent.worker import _job
from farm.keycheck import plain_jobs
from farm.mediatype import Job
from farm.protocol import JobSpec

ALPHABET = "aZ09_.-/ \\\t\n\x00\u00e9"
KEYS = st.one_of(st.text(alphabet=ALPHABET, max_size=12),
                 st.sampled_from(["job-0000001", "a/b", "a\nb", "x" * 1025]))
DEPS = st.one_of(st.none(), st.just({}), st.just([]), st.just(0),
                 st.dictionaries(KEYS, st.none(), max_size=2))
TIMEOUTS = st.one_of(st.floats(allow_nan=True), st.integers(-5, 10**7), st.booleans())
JOBS = st.lists(st.tuples(KEYS, DEPS, TIMEOUTS, st.sampled_from(["p1", "p2", "gone", "never"])), max_size=6)


def _one_by_one(jobs: list[JobSpec], described: set[str], refused: dict[str, str]) -> list[str | None]:
    """What the agent decided for each job before it decided per message."""
    verdicts = []
    for job in jobs:
        why = refused.get(job.project) or job_refusal(job.key, job.deps, job.timeout)
        if why is None and job.project not in described:
            why = NEVER_DESCRIBED
        verdicts.append(why)
    return verdicts


@settings(max_examples=2000, deadline=None)
@given(JOBS)
def test_a_message_screened_at_once_gets_the_verdicts_of_its_jobs_one_by_one(drawn):
    jobs = [JobSpec(f"l{i}", key, project, None, deps, timeout)
            for i, (key, deps, timeout, project) in enumerate(drawn)]
    described, refused = {"p1", "p2"}, {"gone": "media type 'x' is not one this agent advertised"}
    taken, refusals = screen(jobs, described, refused)
    expected = _one_by_one(jobs, described, refused)
    assert taken == [job for job, why in zip(jobs, expected, strict=True) if why is None]
    assert refusals == [(job, why) for job, why in zip(jobs, expected, strict=True) if why is not None]


def test_a_key_with_a_newline_does_not_pass_as_two_plain_ones():
    assert plain_jobs(["a", "b"], [None, {}], [1, 2.5])
    assert not plain_jobs(["a\nb"], [None], [1])
    assert not plain_jobs(["a\nb", "c"], [None, None], [1, 1])
    assert not plain_jobs([], [], [])
    assert not plain_jobs(["a", "b"], [None, None], [1, float("nan")])  # a NaN between good ones


def test_the_workers_job_is_the_one_job_makes():
    for key, params, deps in (("k", {"i": 1}, ()), ("7/12/40", None, ("a", "b"))):
        made, fast = Job(key, params, deps=deps), _job(key, params, deps)
        assert fast == made and vars(fast) == vars(made) and type(fast) is Job


def test_timeouts_checked_once_per_distinct_value_keep_their_own_types():
    """The agent checks each distinct timeout of a message once: True equals 1, and is refused all the
    same; NaNs, equal to nothing, are each refused."""
    for timeouts, good in (([1, True, 1.0], [0, 2]), ([2.0, float("nan"), float("nan"), 2], [0, 3])):
        jobs = [JobSpec(f"l{i}", f"k{i}", "p1", None, None, t) for i, t in enumerate(timeouts)]
        taken, refusals = screen(jobs, {"p1"}, {})
        assert taken == [jobs[i] for i in good], timeouts
        assert [job for job, _ in refusals] == [job for i, job in enumerate(jobs) if i not in good], timeouts
