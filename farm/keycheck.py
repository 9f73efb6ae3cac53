"""Job keys checked at the cost of one C regex match in the common case, on the per-job paths:
the controller checks the keys a media type's `split` yields before they travel to agents (which
may name files after them), the agent checks the jobs its controller sends (`farm.agent.trust`).

A key made of up to 16 ASCII names of letters, digits, ``_``, ``.`` and ``-``, none starting with
``.`` or ``-``, is one `farm.ids.check_key` accepts (`tests/test_dispatch_cheap.py` holds it to
that); any other key gets the full check, with its error message.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

from farm.agent.trust import MAX_TIMEOUT_S
from farm.ids import MAX_KEY, check_key
from farm.mediatype import Job

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # at most MAX_NAME characters
_KEY = rf"{_NAME}(?:/{_NAME}){{0,15}}"
_plain_key = re.compile(_KEY).fullmatch
_plain_keys = re.compile(rf"{_KEY}(?:\n{_KEY})*").fullmatch  # keys joined by newlines, which no name has
_STR, _NUMS, _NO_DEPS = {str}, {int, float}, {type(None), dict}
_JOB, _TUPLE = {Job}, {tuple}
_key_of, _deps_of = operator.attrgetter("key"), operator.attrgetter("deps")


def check_job_keys(job: Job) -> None:
    """Raise `farm.ids.BadIdentifier` unless the job's key and its dependencies' keys are safe."""
    key = job.key
    if not (key.__class__ is str and len(key) <= MAX_KEY and _plain_key(key)):
        check_key(key)
    for dep in job.deps:
        check_key(dep)


def plain_split(jobs: Sequence[Any]) -> bool:
    """True if `check_job_keys` surely accepts each of `jobs` (what `split` yielded, in order): each
    a `Job` (not a subclass) with no dependencies and a key of the common shape, found with one
    match over all keys and C loops over the rest. False says nothing: each then gets the full check."""
    if not (jobs and _JOB.issuperset(map(type, jobs))):
        return False
    deps = list(map(_deps_of, jobs))
    return _TUPLE.issuperset(map(type, deps)) and not any(deps) and _plain_all(list(map(_key_of, jobs)))


def _plain_all(keys: Sequence[Any]) -> bool:
    """Every one of `keys` (at least one) is a str that `_plain_key` matches."""
    if not (_STR.issuperset(map(type, keys)) and max(map(len, keys)) <= MAX_KEY):
        return False
    joined = "\n".join(keys)
    # a newline inside a key would pass as two keys: as many as the joins, or none is plain
    return joined.count("\n") == len(keys) - 1 and _plain_keys(joined) is not None


def plain_job(key: Any, deps: Any, timeout: Any) -> bool:
    """True if `farm.agent.trust.job_refusal` surely accepts this job: a key of the common shape, no
    dependencies, a timeout within bounds. False says nothing: the job then gets the full check."""
    return ((deps is None or (deps.__class__ is dict and not deps)) and key.__class__ is str
            and len(key) <= MAX_KEY and _plain_key(key) is not None
            and timeout.__class__ in (int, float) and 0 < timeout <= MAX_TIMEOUT_S)


def plain_jobs(keys: Sequence[Any], deps: Sequence[Any], timeouts: Sequence[Any]) -> bool:
    """`plain_job` of every job of a message at once (its fields a column each, in the same order):
    one match over all keys, C loops over the rest. False if any is not plain, or there are none."""
    return bool(keys and _NO_DEPS.issuperset(map(type, deps)) and not any(deps)
                and _NUMS.issuperset(map(type, timeouts)) and all(0 < t <= MAX_TIMEOUT_S for t in timeouts)
                and _plain_all(keys))
