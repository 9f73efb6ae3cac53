"""`farm submit DIR`: render a project, on an embedded farm or a running controller."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from farm.cli.errors import reported, say_error
from farm.cli.options import (
    ClientKey,
    Insecure,
    Join,
    KeysDir,
    ServerKey,
    Setup,
    checked_address,
    controller_for,
)
from farm.cli.progress import ProgressBar, summary_text
from farm.client import RECONNECT_S, DiskFull, DownloadLost, RunLost, Summary
from farm.client import submit as submit_remote
from farm.embedded import EmbeddedFarm, LocalAgents, load_starting_agents
from farm.errors import ConnectionLost, FarmError
from farm.handshake import NOTHING_LISTENS_AFTER_S
from farm.project import STATE_DIR, Project, load_project
from farm.trace import mark

log = logging.getLogger(__name__)


INTERRUPT_CHECK_S = 0.5  # the longest a wait on the main thread lasts before signals are run
AGENTS_PER_CORE = 8  # each local agent is two Python processes; past this they starve each other


def max_local_agents() -> int:
    """The most local agents an embedded farm starts: beyond about this, agents and workers wait so
    long for a core that they miss the controller's heartbeats and reconnect over and over."""
    return max(16, AGENTS_PER_CORE * (os.cpu_count() or 1))


def submit(
    project_dir: Annotated[Path, typer.Argument(help="The project folder (with a farm.toml).")],
    controller: Annotated[Optional[str], typer.Option(
        "--controller", "-c", envvar="FARM_CONTROLLER", callback=checked_address,
        help="A running controller, e.g. tcp://host:5555, or 'auto' to find one on the local network. "
             "Without it (and --join), an embedded farm renders locally.")] = None,
    join: Join = None,
    agents: Annotated[Optional[int], typer.Option(
        "--agents", "-n", min=1,
        help="Local agents for an embedded run (default: the number of cores; at most 8 per core).")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output folder, relative to the project (default: farm.toml's output directory, else 'output').")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first on a shared controller.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON summary object at the end (with --watch: one per round).")] = False,
    watch_project: Annotated[bool, typer.Option(
        "--watch", help="Stay up and render again when the project's files change (Ctrl-C ends: the last "
                        "round's status, 130 during a round).")] = False,
    keys_dir: KeysDir = None,
    key: ClientKey = "client",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
    shared: Annotated[bool, typer.Option(
        "--shared-fs", help="The controller reads the project from this same path: skip the upload.")] = False,
    ui: Annotated[bool, typer.Option(
        "--ui", help="Serve the dashboard of the embedded farm on 127.0.0.1 and print its address; "
                     "it stays up after the run until Ctrl-C, which then exits with the run's "
                     "status.")] = False,
) -> None:
    """Render a project and wait for it to finish; exit 0 only if every job succeeded."""
    with reported(as_json=as_json):
        if ui and controller:
            raise FarmError("--ui shows the embedded farm; a running controller serves its own dashboard "
                            "(farm controller --http HOST:PORT)")
        if agents is not None and (controller or join):
            raise typer.BadParameter("it sets the embedded farm's local agents; a running controller's "
                                     "runs go to the agents that joined it", param_hint="'--agents'")
        if agents is not None and agents > max_local_agents():
            raise typer.BadParameter(f"{agents} is more than this machine can run as local agents (at most "
                                     f"{max_local_agents()}: {AGENTS_PER_CORE} per core; the default is one "
                                     "per core)", param_hint="'--agents'")
        # an embedded farm's agents start while the project loads (they take the longest to be up);
        # with --watch a later round may be of another media type, so they offer all
        local = None
        if controller or join or watch_project:
            project = load_project(project_dir, output=output)
        else:
            project, local = load_starting_agents(project_dir, output=output, agents=agents)
        mark("submit: project loaded")
        setup: Setup = None
        if controller or join:  # a running controller: found, joined or named
            controller, setup, _ = controller_for(controller, join, keys_dir, key, server_key, insecure, role="client")
        # the output folder a summary names is ours (not an uploaded run's on the controller's disk)
        here = not controller or shared
        if not watch_project:
            summary: Summary | None = None
            try:  # the farm stops (its state kept in .farm/) before the interruption is said
                with _farm(project, controller, agents, setup, shared, priority, ui, local) as render:
                    summary = _round(render, project, as_json, logged=not controller, here=here)
                    if ui:
                        _serve_until_stopped(render.ui_url)
            except Interrupted as stop:
                say_interrupted(stop, project_dir, controller, as_json, shared)
                raise typer.Exit(128 + signal.SIGINT) from None
            except KeyboardInterrupt:  # a second Ctrl-C while the farm stopped, after the run
                if summary is None:
                    raise
            # the run's own status, however the serving after it ended: `farm submit --ui P && publish`
            if not summary.ok:
                raise typer.Exit(1)
            return
        with _farm(project, controller, agents, setup, shared, priority, ui, local) as render:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())

            first = [project]  # the first round renders the project as loaded above
            ok = [False]  # the last round's outcome: the exit status, as a single run's is

            def round_() -> None:
                ok[0] = False
                try:
                    loaded = first.pop() if first else load_project(project_dir, output=output)
                    ok[0] = _round(render, loaded, as_json, logged=not controller, here=here).ok
                except FarmError as exc:  # a bad edit: say so and wait for the next one
                    say_error(exc, as_json)
                if not as_json:
                    typer.echo("watching for changes (Ctrl-C to stop)", err=True)

            from farm.cli.watch import ProjectInputs, watch  # watchdog loads only for --watch

            inputs = ProjectInputs(project_dir, output)  # our own log is no asset (farm.ownoutput)
            try:
                watch(project.root, project.output, round_, fingerprint=inputs.fingerprint,
                      rules=lambda: inputs.rules, stop=stop, read_by_jobs=inputs.read_by_jobs,
                      say=None if as_json else lambda line: typer.echo(line, err=True))
            except Interrupted as interrupted:  # Ctrl-C in a round: said as without --watch
                say_interrupted(interrupted, project_dir, controller, as_json, shared)
                raise typer.Exit(128 + signal.SIGINT) from None
            except KeyboardInterrupt:  # Ctrl-C between rounds ends watching
                pass
        if not ok[0]:  # the last round failed, or the project did not load: not a success
            raise typer.Exit(1)


Said = Callable[[str], None]


class Render:
    """How to render a round (``render(project, on_update, on_wait)``; `on_wait`: a remote run's
    controller stopped answering, `Client.follow`), and the embedded farm's dashboard address
    (`ui_url`, with ``--ui``)."""

    def __init__(self, render: Callable[[Project, Callable[[dict], None], Said], Summary],
                 ui_url: str | None = None) -> None:
        self.render, self.ui_url = render, ui_url

    def __call__(self, project: Project, update: Callable[[dict], None],
                 on_wait: Said = lambda why: None) -> Summary:
        return self.render(project, update, on_wait)


@contextlib.contextmanager
def _farm(project: Project, controller: str | None, agents: int | None, setup: Setup, shared: bool,
          priority: int, ui: bool = False, local: LocalAgents | None = None) -> Iterator[Render]:
    """How to render a round: a running controller, or an embedded farm kept up between rounds."""
    if controller:
        def remote(proj: Project, update: Callable[[dict], None], on_wait: Said) -> Summary:
            try:
                return submit_remote(controller, proj, priority=priority, on_update=update,
                                     socket_setup=setup, upload=not shared, unreachable_after=NOTHING_LISTENS_AFTER_S,
                                     reconnect_s=RECONNECT_S, on_wait=on_wait)
            except RunLost as exc:
                ended = isinstance(exc, DownloadLost)
                raise ConnectionLost(f"{exc}; {fetch_later(exc.run_id, controller, ended=ended)}") from None
            except DiskFull as exc:
                raise make_room(exc, controller) from None

        yield Render(remote)
        return
    with EmbeddedFarm(project.root / STATE_DIR, agents, ui=ui, local=local) as farm:
        if farm.ui_url:
            typer.echo(f"dashboard: {farm.ui_url}", err=True)
        yield Render(lambda proj, update, _wait: farm.submit(proj, priority=priority, on_update=update),
                     farm.ui_url)


def say_waiting(why: str) -> None:
    """A follower's wait for a restarting controller, said on stderr (above the bar)."""
    if why:
        log.warning("%s...", why)  # the client's words say it may be restarting, and for how long
    else:
        log.warning("the controller is back; following the run again")


def waiting_shown(bar: ProgressBar) -> Said:
    """`say_waiting`, and `bar` shows the wait (no rate meanwhile: `ProgressBar.waiting`)."""
    def said(why: str) -> None:
        say_waiting(why)
        bar.waiting(why)
    return said


def download_command(run_id: str, controller: str) -> str:
    """`farm download` for a remote run, quoted: it follows the run to its end, then fetches its outputs."""
    return f"`farm download {run_id} DIR --controller {controller}`"


def fetch_later(run_id: str, controller: str, *, ended: bool = False) -> str:
    """How to get a run's outputs once this command has stopped following it (`ended`: the run had
    ended, its outputs were being downloaded)."""
    command = download_command(run_id, controller)
    if ended:
        return f"the run has ended; {command} fetches its outputs once the controller answers again"
    return (f"the run goes on if the controller comes back: {command} waits for its end and fetches its "
            "outputs (`farm status` shows how it is doing)")


def make_room(exc: DiskFull, controller: str) -> DiskFull:
    """A download that filled the disk, saying how to fetch the rest once there is room."""
    return DiskFull(f"{exc}: make room, then {download_command(exc.run_id, controller)} "
                    "fetches them (what came whole is not fetched again)", exc.run_id, exc.folder)


def _serve_until_stopped(url: str | None) -> None:
    """Keep the dashboard up after the run, until Ctrl-C or SIGTERM: the run is over, so either
    ends the command with the run's status (not as an interruption)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:  # the echo inside: a Ctrl-C right after it is read (before the wait) still ends the serving
        typer.echo(f"the run has ended; the dashboard stays up at {url} (press Ctrl-C to stop serving)",
                   err=True)
        # short waits: Python runs a signal's handler in this thread only, and the kernel may hand
        # the signal to another one (the controller's, the dashboard's); an endless wait here would
        # never wake to run it (`tests/test_fxhang_ctrl_c.py`)
        while not stop.wait(INTERRUPT_CHECK_S):
            pass
    except KeyboardInterrupt:
        pass
    typer.echo("stopped serving the dashboard", err=True)


class Interrupted(Exception):
    """Ctrl-C during a round: `done` of `total` jobs were done by the last UPDATE (None: none came);
    `estimated`: that total was an estimate (adaptive chunks, the split not over); `run`: what names
    the run to later commands (its id from an UPDATE, else the project's name: its newest run)."""

    def __init__(self, done: int, total: int | None, estimated: bool = False, run: str = "") -> None:
        shown = "?" if total is None else f"~{total}" if estimated else total
        super().__init__(f"{done} of {shown} jobs done")
        self.done, self.total, self.run = done, total, run


def say_interrupted(stop: Interrupted, project_dir: Path, controller: str | None, as_json: bool,
                    shared: bool = False) -> None:
    """One line (or one JSON object): how far the run got, and how it goes on: for a remote run, the
    commands that follow it, fetch its outputs (`shared`: none to fetch, they come into the project
    in place) and cancel it."""
    if controller:  # the controller keeps the run: leaving does not cancel it
        at = f"--controller {controller}"
        follow = (f"`farm status {at}` shows it (its outputs come into the project's output folder)" if shared
                  else f"{download_command(stop.run, controller)} follows it and fetches its outputs")
        after = f"the run goes on at the controller: {follow}; `farm cancel {stop.run} {at}` cancels it"
    else:
        after = f"`farm submit {project_dir}` again resumes from them (kept in {STATE_DIR}/)"
    message = f"interrupted: {stop}; {after}"
    if as_json:
        typer.echo(json.dumps({"error": message, "state": "interrupted", "code": "interrupted",
                               "done": stop.done, "total": stop.total,
                               **({"run": stop.run} if controller else {})}))
    else:
        typer.echo(message, err=True)


def _round(render: Render, project: Project, as_json: bool, *, logged: bool = False,
           here: bool = True) -> Summary:
    """Render one round of a project loaded (and validated) once for it; `Interrupted` on Ctrl-C.
    `logged`: the run's notes went to stderr as they came (an embedded farm logs here), so the
    text summary does not repeat them; ``--json`` carries them in any case. `here`: as `summary_text`'s."""
    bar = ProgressBar(enabled=None if not as_json else False)
    last: dict = {}

    def update(snapshot: dict) -> None:
        last.update(snapshot)
        bar.update(snapshot)

    try:
        summary = render(project, update, waiting_shown(bar))
    except KeyboardInterrupt:
        raise Interrupted(int(last.get("done") or 0), last.get("total"), bool(last.get("total_estimated")),
                          str(last.get("id") or project.name)) from None
    finally:
        bar.close()
    typer.echo(json.dumps(summary.to_json()) if as_json
               else summary_text(summary, notes=not logged, here=here))
    mark("submit: summary printed")
    return summary
