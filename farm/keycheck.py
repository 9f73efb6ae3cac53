"""Job keys checked at the cost of one C regex match in the common case, on the per-job paths:
the controller checks the keys a media type's `split` yields before they travel to agents (which
may name files after them), the agent checks the jobs its controller sends (`farm.agent.trust`).

A key made of up to 16 ASCII names of letters, digits, ``_``, ``.`` and ``-``, none starting with
``.`` or ``-``, is one `farm.ids.check_key` accepts (`tests/test_dispatch_cheap.py` holds it to
that); any other key gets the full check, with its error message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from farm.agent.trust import MAX_TIMEOUT_S
from farm.ids import MAX_KEY, check_key

if TYPE_CHECKING:
    from farm.mediatype import Job

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # at most MAX_NAME characters
_plain_key = re.compile(rf"{_NAME}(?:/{_NAME}){{0,15}}").fullmatch


def check_job_keys(job: Job) -> None:
    """Raise `farm.ids.BadIdentifier` unless the job's key and its dependencies' keys are safe."""
    key = job.key
    if not (key.__class__ is str and len(key) <= MAX_KEY and _plain_key(key)):
        check_key(key)
    for dep in job.deps:
        check_key(dep)


def plain_job(job: dict[str, Any]) -> bool:
    """True if `farm.agent.trust.job_refusal` surely accepts this job map (its shape checked by
    `farm.protocol`): a key of the common shape, no dependencies, a timeout within bounds. False
    says nothing: the job then gets the full check."""
    key, deps, timeout = job["key"], job["deps"], job["timeout"]
    return ((deps is None or (deps.__class__ is dict and not deps)) and key.__class__ is str
            and len(key) <= MAX_KEY and _plain_key(key) is not None
            and timeout.__class__ in (int, float) and 0 < timeout <= MAX_TIMEOUT_S)
