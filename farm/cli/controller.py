"""`farm controller`: a long-running controller for many agents and projects."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from farm.cli.errors import reported
from farm.controller.server import Controller

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "farm"


def controller(
    bind: Annotated[str, typer.Option(help="Where agents and clients connect.")] = "tcp://127.0.0.1:5555",
    state_dir: Annotated[Optional[Path], typer.Option(help="Where the controller keeps its state.")] = None,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 1.0,
    liveness: Annotated[int, typer.Option(help="Missed heartbeats before an agent is declared dead.")] = 3,
) -> None:
    """Run a controller until interrupted (Ctrl-C or SIGTERM)."""
    with reported():
        ctl = Controller(bind, state_dir=state_dir or default_state_dir(), heartbeat=heartbeat, liveness=liveness)
        signal.signal(signal.SIGTERM, lambda *_: ctl.stop())
        try:
            ctl.start()
            typer.echo(f"controller listening on {ctl.url}", err=True)
            while ctl._thread is not None and ctl._thread.is_alive():
                ctl._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            ctl.stop()
