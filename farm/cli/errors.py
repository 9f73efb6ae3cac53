"""Turning library errors into a message and an exit code, once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import typer

from farm.errors import ConnectionLost, ControlError, FarmError, ProjectError
from farm.keys import SecurityError
from farm.summary import DiskFull


def error_json(exc: BaseException) -> dict[str, Any]:
    """The one JSON object `--json` prints for an error: ``{"error", "state", "code"}``.

    ``state``: "invalid" for a project that does not load, "finalizing" for a cancel refused
    because the run is finalizing (its state: it has not failed), else "failed". ``code`` says
    what kind of error, for scripts: a refused steering request's own (not_found, bad_request,
    conflict, finalizing), else invalid (the project), unreachable (no answer from the
    controller, or none named or found), security (keys, tokens, a refused handshake), os_error (a file or folder),
    disk_full (a download that found no room for the outputs),
    error (anything else farm refused); and from `farm.cli.main`, usage (a bad option or value)
    and interrupted (Ctrl-C).
    """
    code = error_code(exc)
    state = "invalid" if isinstance(exc, ProjectError) else "finalizing" if code == "finalizing" else "failed"
    return {"error": str(exc), "state": state, "code": code}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ControlError):
        return exc.code
    for kind, code in ((ProjectError, "invalid"), (SecurityError, "security"),  # a refused handshake is both
                       (ConnectionLost, "unreachable"), (DiskFull, "disk_full"), (OSError, "os_error")):
        if isinstance(exc, kind):
            return code
    return "error"


@contextlib.contextmanager
def reported(*, as_json: bool = False) -> Iterator[None]:
    """Print a `FarmError` (or an OS error, e.g. a folder we may not write) and exit 1.

    A reader that stopped reading (``farm keys invites | head -1``) ends us quietly, as it does
    any Unix tool: see `quiet_broken_pipe`.

    With `as_json`, standard output gets `error_json(exc)` instead, and nothing more, so a script
    reading it finds exactly one object whatever went wrong (and no second copy on stderr).
    """
    try:
        yield
    except BrokenPipeError:
        quiet_broken_pipe()
    except (FarmError, OSError) as exc:
        say_error(exc, as_json)
        raise typer.Exit(1) from None


def say_error(exc: BaseException, as_json: bool) -> None:
    """The error as one JSON object on stdout (`as_json`), else as ``error: ...`` on stderr."""
    if as_json:
        typer.echo(json.dumps(error_json(exc)))
    else:
        typer.echo(f"error: {exc}", err=True)


def quiet_broken_pipe() -> None:
    """Exit quietly because standard output's reader went away (status 141, as SIGPIPE would give).

    Standard output is pointed at /dev/null first: the interpreter flushes it at exit and would
    otherwise print "Exception ignored ... BrokenPipeError".
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise typer.Exit(128 + signal.SIGPIPE)
