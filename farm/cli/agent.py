"""`farm agent`: a render node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from farm.agent.agent import Agent
from farm.agent.capabilities import MEDIA_TYPES_ENV
from farm.agent.nodetoken import claim as claim_node
from farm.cli.errors import reported
from farm.cli.options import (
    ControllerUrl,
    Insecure,
    Join,
    JoinFile,
    KeysDir,
    ServerKey,
    controller_for,
    join_argument,
)
from farm.errors import FarmError
from farm.ids import check_name
from farm.keys import SecurityError
from farm.plugins import get_plugins
from farm.trace import mark

JOIN_REFUSED_EXIT = 78  # EX_CONFIG; packaging/systemd/farm-agent.service: RestartPreventExitStatus=78


def agent(
    controller: ControllerUrl = None,
    join: Join = None,
    join_file: JoinFile = None,
    slots: Annotated[Optional[int], typer.Option(min=1, help="Jobs run at once (default: the number of cores).")] = None,
    prefetch: Annotated[int, typer.Option(
        min=0, help="Most jobs queued beyond the slots; the controller sends at most ~20 ms of work.")] = 256,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Extra capability to advertise.")] = None,
    media_type: Annotated[Optional[list[str]], typer.Option(
        "--media-type", help="Offer only this media type (repeat for more); the others' plugins are "
                             "neither loaded nor probed. Default: $FARM_MEDIA_TYPES (comma-separated), "
                             "else all installed.")] = None,
    agent_id: Annotated[Optional[str], typer.Option(
        "--id", help="A name for this agent; started again on this machine after a crash, it takes "
                     "the name back at once (its node token: docs/architecture.md).")] = None,
    parent_pid: Annotated[Optional[int], typer.Option(hidden=True)] = None,
    keys_dir: KeysDir = None,
    key: Annotated[str, typer.Option("--key", help="This node's key pair name.")] = "node",
    server_key: ServerKey = "controller",
    insecure: Insecure = False,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where project files are cached, shared across projects (default: the user's cache dir).")] = None,
    cache_size: Annotated[float, typer.Option(
        min=1 / 1024, help="Cache size limit in GiB (least recently used go first; a project larger fails).")] = 20,
    local_assets: Annotated[bool, typer.Option(
        "--local-assets", help="On the controller's own machine, use its project files in place "
                               "(reflinks or hard links) instead of copying them into the cache.")] = False,
    no_peers: Annotated[bool, typer.Option(
        "--no-peers",
        help="Fetch project files from the controller only; serve none to other agents.")] = False,
) -> None:
    """Serve a controller until interrupted; reconnects by itself if the controller goes away.

    Which controller: --join / --join-file / $FARM_JOIN (a token, once), --controller, else one
    found on the local network whose key we know, else this user's controller on this machine.
    A refused join, a key the controller will not take as an agent's (a client key), or no keys for a
    controller that requires them, exits with JOIN_REFUSED_EXIT (a service manager should not restart it).
    """
    with reported():
        if media_type:  # read by the capability check; our workers inherit it
            os.environ[MEDIA_TYPES_ENV] = ",".join(_installed(media_type))
        try:
            url, setup, joined_as = controller_for(controller, join_argument(join, join_file), keys_dir, key,
                                                   server_key, insecure, role="agent", name=agent_id,
                                                   discover_by_default=True)
        except SecurityError as exc:  # a token or key refused: restarting cannot help
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(JOIN_REFUSED_EXIT) from None
        mark("agent: starting")
        # a node's operator sees it join; an embedded farm's agents (started with --parent-pid) stay quiet
        said = None if parent_pid else (lambda line: typer.echo(line, err=True))
        name = check_name(agent_id or joined_as, "agent id") if agent_id or joined_as else None
        # a named agent proves that its restart is the same node (farm.agent.nodetoken); unnamed, it is new
        node = claim_node(name) if name else None
        try:
            agent = Agent(url, on_connect=said, slots=slots, prefetch=prefetch, tags=tag or [],
                          agent_id=name, parent_pid=parent_pid, socket_setup=setup,
                          cache_dir=cache_dir, cache_bytes=int(cache_size * 2**30), local_assets=local_assets,
                          peers=not no_peers, node=node.token if node else None)
            agent.run()
        finally:
            if node is not None:
                node.release()
        if agent.refused_role:  # a client's key, or no keys at all: the same refusal after every restart
            typer.echo(f"error: the agent stops: {agent.refused_role}", err=True)
            raise typer.Exit(JOIN_REFUSED_EXIT)


def _installed(names: list[str]) -> list[str]:
    """``names``, each checked to be an installed media type (loading only its plugin)."""
    plugins = get_plugins()
    for name in names:
        if name not in plugins.media_types:
            raise FarmError(f"--media-type {name}: no installed plugin provides it "
                            f"(installed: {', '.join(sorted(plugins.media_types)) or 'none'})")
    return names
