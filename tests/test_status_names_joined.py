"""A client that joined a controller and then names none is told the address it joined, not to go
and join one (a token it does not need). Real `farm controller` and `farm status` processes."""

from __future__ import annotations

import json

from join_helpers import farm_processes

from farm.cli.security import remember_joined
from farm.join import join
from farm.keys import KeyStore


def test_no_controller_named_after_a_join_names_the_one_joined(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        ctl = KeyStore(tmp_path / "ctl")
        invite = farm.run("keys", "invite", "--client", "--json", "--keys-dir", str(ctl.root))
        mine = KeyStore(tmp_path / "mine")
        joined = join(json.loads(invite.stdout)["join"], mine.root, "client", role="client")
        remember_joined(mine, joined.url, joined.server_key)  # as `farm submit --join` does
        assert farm.run("status", "--controller", url, "--keys-dir", str(mine.root)).returncode == 0

        later = farm.run("status", "--json", "--keys-dir", str(mine.root))  # and later forgets --controller
        assert later.returncode == 1, later.stderr
        error = json.loads(later.stdout)
        assert error["code"] == "unreachable", error
        assert f"name the one you joined: --controller {url}" in error["error"], error
        assert "join one once" not in error["error"], error
