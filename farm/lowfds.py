"""Running out of file descriptors (EMFILE, ENFILE): said once a minute, never once per attempt.

A peer that holds hundreds of idle connections can bring a process to its descriptor limit;
whatever then fails to open a file fails again on the next turn of a loop. `Throttled` logs
the first failure and then at most one line a minute with how many it held back, so the log
does not grow by a traceback per attempt. The limit itself is raised by the CLI
(`farm.cli.raise_fd_limit`): library code does not change process limits.
"""

from __future__ import annotations

import errno
import logging
import time

FD_ERRNOS = (errno.EMFILE, errno.ENFILE)
EVERY_S = 60.0


def out_of_fds(exc: BaseException | None) -> bool:
    """Whether `exc` (or an error it was raised from) says the process or system ran out of descriptors."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in FD_ERRNOS:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Throttled:
    """Logs one message at most every `every` seconds, saying how many times it was held back."""

    def __init__(self, logger: logging.Logger, every: float = EVERY_S) -> None:
        self.logger = logger
        self.every = every
        self.last = float("-inf")
        self.held = 0

    def __call__(self, level: int, message: str, *args: object) -> bool:
        """Log `message % args` unless one was logged less than `every` seconds ago; True if logged."""
        now = time.monotonic()
        if now - self.last < self.every:
            self.held += 1
            return False
        if self.held:
            message += f" ({self.held} more like it in the last {now - self.last:.0f} s)"
        self.last, self.held = now, 0
        self.logger.log(level, message, *args)
        return True


class LoopErrors:
    """What the controller's loop does with an unexpected error it carries on after.

    The first 20 with their tracebacks, then every 1000th; running out of descriptors is one
    line a minute (it fails every turn until the flood that caused it ends).
    """

    def __init__(self, logger: logging.Logger, health: dict[str, int]) -> None:
        self.logger = logger
        self.health = health
        self.fds = Throttled(logger)
        self.others = 0  # errors of other kinds: the first 20 have their tracebacks whatever came before

    def note(self, exc: BaseException) -> None:
        self.health["loop_errors"] += 1
        if out_of_fds(exc):
            self.fds(logging.ERROR, "controller loop: out of file descriptors (%s); carrying on", exc)
            return
        self.others += 1
        if self.others <= 20 or self.others % 1000 == 0:
            self.logger.error("controller loop error (%d so far); carrying on", self.health["loop_errors"],
                              exc_info=exc)
