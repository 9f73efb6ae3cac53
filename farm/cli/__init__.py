"""The `farm` command line: a thin typer layer that parses, calls the library, prints.

Library errors (`FarmError`) are caught once here, printed, and turned into exit 1.
Exit codes: 0 success; 1 a farm error (bad project, unreachable controller) or a run
with failed jobs; 2 bad command-line usage.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from farm import __version__
from farm.cli import agent, control, controller, events, keys, plugin, plugins, status, submit
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


app.command("submit")(submit.submit)
app.command("controller")(controller.controller)
app.command("agent")(agent.agent)
app.command("plugins")(plugins.plugins)
app.command("status")(status.status)
app.command("cancel")(status.cancel)
app.command("download")(status.download)
app.command("events")(events.events)
control.register(app)  # pause, resume, retry, priority, drain, undrain, logs
app.add_typer(keys.app, name="keys")
app.add_typer(plugin.app, name="plugin")
reflow_help(app)  # after every command is registered


def main() -> None:
    app()
