"""An embedded farm's agent process, started without the command line's machinery.

    python -P -m farm.agent.local ipc://DIR/jobs --id local-1 --parent-pid PID
                                  [--slots 1] [--media-type frames ...] [--local-assets] [--log-level info]

What `farm agent --controller ipc://... --parent-pid PID` does for `farm.embedded`, minus what
only a user's node needs: typer builds a pydantic adapter for each of the command's options and
the key, join and discovery tools load, about 0.3 s of CPU per agent here (0.8 s of wall time
under load) before the agent begins. Only an ``ipc://`` controller is taken: the embedded
farm's private socket, which needs no keys (its folder's mode guards it), as `farm agent`
decides for such an address.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from farm import trace
from farm.agent.capabilities import MEDIA_TYPES_ENV
from farm.agent.pool import EarlyWorkers
from farm.errors import FarmError

CACHE_BYTES = 20 * 2**30  # the asset cache's limit, as `farm agent`'s default --cache-size


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m farm.agent.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("controller", help="the embedded controller's ipc:// address")
    parser.add_argument("--id", required=True, help="this agent's name")
    parser.add_argument("--parent-pid", type=int, required=True, help="stop when this process is gone")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--media-type", action="append", default=[], help="offer only these (repeatable)")
    parser.add_argument("--local-assets", action="store_true", help="use the project's files in place")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if not args.controller.lower().startswith("ipc://"):
        parser.error(f"{args.controller}: only an embedded farm's ipc:// controller (use `farm agent`)")
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    return args


def main(argv: list[str]) -> int:
    trace.mark_process_start("farm agent")
    args = parse(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.media_type:  # read by the capability check; our workers inherit it
        os.environ[MEDIA_TYPES_ENV] = ",".join(args.media_type)
    try:
        # the workers first: their start overlaps our imports and probes (EarlyWorkers says why)
        workers = EarlyWorkers(args.slots)
    except FarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    trace.mark("agent: workers started")
    from farm.agent.agent import Agent  # after the arguments: a usage error costs no import

    trace.mark("agent: starting")
    try:
        agent = Agent(args.controller, agent_id=args.id, parent_pid=args.parent_pid, cache_bytes=CACHE_BYTES,
                      local_assets=args.local_assets, workers=workers, peers=False)  # peers: TCP only
    except FarmError as exc:
        workers.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    agent.absent_level = logging.DEBUG  # our farm's controller may still be binding: no noise
    try:
        agent.run()
    except FarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
