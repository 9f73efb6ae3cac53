"""The keys of a job pulled from a media type's `split`, checked before they travel to agents
(which may name files after them), at the cost of a C regex match in the common case.

A key made of up to 16 ASCII names of letters, digits, ``_``, ``.`` and ``-``, none starting with
``.`` or ``-``, is one `farm.ids.check_key` accepts (`tests/test_dispatch_cheap.py` holds it to
that); any other key gets the full check, with its error message.
"""

from __future__ import annotations

import re

from farm.ids import MAX_KEY, check_key
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
