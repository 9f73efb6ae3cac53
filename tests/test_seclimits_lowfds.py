"""Running out of descriptors is said once a minute by the controller's loop, other errors as before."""

from __future__ import annotations

import errno
import logging

from farm.lowfds import LoopErrors, out_of_fds


def test_the_loop_says_it_is_out_of_descriptors_once_and_counts_every_time(caplog):
    health = {"loop_errors": 0}
    errors = LoopErrors(logging.getLogger("farm.test.loop"), health)
    caplog.set_level(logging.ERROR, "farm.test.loop")
    for _ in range(500):
        try:
            raise RuntimeError("wrapped") from OSError(errno.EMFILE, "Too many open files")
        except RuntimeError as exc:
            errors.note(exc)
    assert health["loop_errors"] == 500
    assert len(caplog.records) == 1 and "out of file descriptors" in caplog.records[0].getMessage()
    errors.note(ValueError("a bug"))  # anything else: with its traceback, as before
    assert len(caplog.records) == 2 and caplog.records[1].exc_info is not None


def test_out_of_fds_looks_along_the_causes():
    assert out_of_fds(OSError(errno.ENFILE, "Too many open files in system"))
    assert not out_of_fds(OSError(errno.ENOENT, "No such file"))
    assert not out_of_fds(None)
