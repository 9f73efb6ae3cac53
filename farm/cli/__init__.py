"""The `farm` command line: a thin typer layer that parses, calls the library, prints.

Library errors (`FarmError`) are caught once here, printed, and turned into exit 1.
Exit codes: 0 success; 1 a farm error (bad project, unreachable controller) or a run
with failed jobs; 2 bad command-line usage; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

import typer

from farm import __version__, trace
from farm.cli.helptext import reflow_help

app = typer.Typer(
    name="farm",
    help="A plugin-based distributed render farm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"farm {__version__}")
        raise typer.Exit()


# Services log with times and sources; a user's command at its default level shows warnings
# as plain sentences addressed to that user.
SERVICES = ("controller", "agent")
LONG_LIVED = (*SERVICES, "submit")  # their open files limit is raised (`raise_fd_limit`)
FD_LIMIT = 65536


@app.callback()
def main_options(
    ctx: typer.Context,
    log_level: Annotated[str, typer.Option("--log-level", envvar="FARM_LOG_LEVEL",
                                           help="debug, info, warning or error")] = "warning",
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    level = getattr(logging, log_level.upper(), logging.WARNING)
    plain = level >= logging.WARNING and ctx.invoked_subcommand not in SERVICES
    logging.basicConfig(
        level=level,
        format="%(levelname)s: %(message)s" if plain else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if ctx.invoked_subcommand in LONG_LIVED:
        raise_fd_limit()


def raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one: a long-lived process's connections
    (agents, dashboards, idle peers) must not run it out of descriptors at 1024. Only the CLI does
    this; library code does not change process limits. Children (workers) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # at most FD_LIMIT: renderers that close every descriptor up to the limit start slowly with millions
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError) as exc:
            logging.getLogger(__name__).info("cannot raise the open files limit from %d to %d: %s",
                                             soft, want, exc)


# command name -> (module, attribute): a module is imported only when its command may run, so
# `farm agent` does not load the controller, the dashboard or the key tools (start-up time)
COMMANDS = {
    "submit": ("farm.cli.submit", "submit"),
    "controller": ("farm.cli.controller", "controller"),
    "agent": ("farm.cli.agent", "agent"),
    "plugins": ("farm.cli.plugins", "plugins"),
    "status": ("farm.cli.status", "status"),
    "cancel": ("farm.cli.status", "cancel"),
    "download": ("farm.cli.status", "download"),
    "jobs": ("farm.cli.jobs", "jobs"),
    "events": ("farm.cli.events", "events"),
}
CONTROL = ("pause", "resume", "retry", "priority", "drain", "undrain", "logs")  # farm.cli.control
GROUPS = {"keys": "farm.cli.keys", "plugin": "farm.cli.plugin"}
_registered: set[str] = set()


def register(names: Sequence[str] | None = None, *, reflow: bool = True) -> typer.Typer:
    """Add the commands ``names`` (default: all) to `app`, importing only their modules; with
    ``reflow``, their help is made from their docstrings (`reflow_help`, which loads rich)."""
    wanted = [*COMMANDS, "control", *GROUPS] if names is None else names
    for name in wanted:
        name = "control" if name in CONTROL else name
        if name in _registered:
            continue
        _registered.add(name)
        if name in COMMANDS:
            module, attr = COMMANDS[name]
            app.command(name)(getattr(importlib.import_module(module), attr))
        elif name == "control":
            importlib.import_module("farm.cli.control").register(app)  # pause, resume, retry, ...
        elif name in GROUPS:
            app.add_typer(importlib.import_module(GROUPS[name]).app, name=name)
    if reflow:
        reflow_help(app)  # after the commands are registered
    return app


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``farm ARGV`` runs, if it is one of ours; None for anything else (help, a typo)."""
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            next(args, None)
        elif not arg.startswith("-"):
            known = arg in COMMANDS or arg in CONTROL or arg in GROUPS
            return arg if known else None
        elif arg in ("--help", "--version"):
            return None
    return None


INTERRUPTED = {"error": "interrupted (Ctrl-C) while the command started", "state": "interrupted",
               "code": "interrupted"}


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C before the command handles it itself (while modules load)
        say_interrupted(sys.argv[1:])


def say_interrupted(argv: Sequence[str]) -> NoReturn:
    """Exit 130 (128 + SIGINT) with one line, or with ``--json`` one JSON object, not a traceback."""
    if "--json" in argv:
        print(json.dumps(INTERRUPTED), flush=True)
    else:
        print(f"{INTERRUPTED['error']}; nothing more was done", file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)


def _main() -> None:
    command = command_in(sys.argv[1:])
    trace.mark_process_start(f"farm {command}")
    # one command: only its module; help, a typo or no command: all, so they are listed.
    # Help text is only reflowed where it may be shown (a group without its command shows it)
    shows_help = command is None or command in GROUPS or "--help" in sys.argv
    register([command] if command else None, reflow=shows_help)
    trace.mark(f"farm {command}: cli imported")
    if "--json" in sys.argv[1:]:
        _run_for_json()
    app()


def _run_for_json() -> NoReturn:
    """Run `app` with a usage error (a bad option or value) as one JSON object too, exit 2: with
    ``--json`` standard output always gets exactly one object (click would print a usage box)."""
    # click's base of usage errors, wherever this typer keeps click (newer ones vendor it)
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code, or the command's value
    except click_exception as exc:
        print(json.dumps({"error": exc.format_message(), "state": "failed", "code": "usage"}), flush=True)
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
