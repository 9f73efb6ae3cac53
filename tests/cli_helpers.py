"""Running `farm controller` as a user would, for the CLI and secure-defaults tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FARM = [sys.executable, "-m", "farm"]


@dataclass
class Running:
    url: str
    public_key: str  # "" without keys
    env: dict[str, str]  # the environment it runs in, for this user's agents and clients
    keys: Path  # the default keys folder in that environment


@contextlib.contextmanager
def cli_controller(folder: Path, *args: str, bind: str = "tcp://127.0.0.1:0") -> Iterator[Running]:
    """`farm controller --bind BIND ARGS`, its state under `folder`, its user's config folder too.

    The keys folder is the default one ($XDG_CONFIG_HOME/farm/keys), as for a user who set nothing.
    """
    env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
    env["XDG_CONFIG_HOME"] = str(folder / "config")
    command = [*FARM, "controller", "--bind", bind, "--state-dir", str(folder / "state"), *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    url = key = ""
    said: list[str] = []
    try:
        for line in proc.stderr:
            said.append(line)
            if "public key " in line:
                key = line.split("public key ")[1].split(" ")[0]
            if "listening on " in line:
                url = line.split("listening on ")[1].strip()
                break
        assert url, "the controller did not start:\n" + "".join(said[-20:])
        yield Running(url, key, env, folder / "config" / "farm" / "keys")
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
