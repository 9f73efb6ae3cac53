"""Each handshake mistake gets its own message, with the keys to compare (real controllers, real clients)."""

from __future__ import annotations

import json
import time

from join_helpers import farm_processes

from farm.cli.security import remember_joined
from farm.join import join
from farm.keys import KeyStore


def last_line(done) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_each_mistake_has_its_own_message(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        ctl = KeyStore(tmp_path / "ctl")
        controller_key = ctl.load("controller").public.decode()

        # A client that joined (its key allowed), and a stranger who holds the right controller key.
        made = json.loads(farm.run("keys", "invite", "--client", "--json", "--keys-dir", str(ctl.root)).stdout)
        mine = KeyStore(tmp_path / "mine")
        joined = join(made["join"], mine.root, "client", role="client")
        assert joined.name is not None
        remember_joined(mine, joined.url, joined.server_key)  # as `--join` does: the key, by address
        stranger = KeyStore(tmp_path / "stranger")
        stranger.create("client")
        stranger.add_public("controller", controller_key)
        wrong = KeyStore(tmp_path / "wrong")
        wrong.create("client")
        wrong.add_public("controller", wrong.create("other").public.decode())

        def status(*args: str) -> str:
            start = time.monotonic()
            line = last_line(farm.run("status", *args))
            assert time.monotonic() - start < 14, f"{line}: said only after the client's 15 s silence limit"
            return line

        messages = {
            "fine": farm.run("status", "--controller", url, "--keys-dir", str(mine.root)),
            "nothing listening": status("--controller", "tcp://127.0.0.1:9"),
            "plain text to keys": status("--controller", url, "--insecure"),
            "not allowed": status("--controller", url, "--keys-dir", str(stranger.root)),
            "wrong server key": status("--controller", url, "--keys-dir", str(wrong.root)),
            "no controller named": status("--keys-dir", str(tmp_path / "empty")),
        }
        assert messages.pop("fine").returncode == 0
        assert assert_revoked(farm, ctl, mine, url)
        assert "nothing listens there" in messages["nothing listening"]
        assert "requires keys and we have none" in messages["plain text to keys"]
        assert "refused the secure handshake" in messages["not allowed"]
        assert "not in its allowed list" in messages["not allowed"]
        assert stranger.load("client").public.decode() in messages["not allowed"]  # the key to allow
        assert "is not its public key" in messages["wrong server key"]
        assert wrong.public_key("other").decode() in messages["wrong server key"]  # the key to compare
        assert "--controller" in messages["no controller named"] and "FARM_CONTROLLER" in messages[
            "no controller named"] and "--controller auto" in messages["no controller named"]
        assert len(set(messages.values())) == len(messages)


def assert_revoked(farm, ctl: KeyStore, mine: KeyStore, url: str) -> bool:
    name = next(n for n, k in ctl.allowed().items() if k == mine.load("client").public)
    assert farm.run("keys", "revoke", name, "--keys-dir", str(ctl.root)).returncode == 0
    line = last_line(farm.run("status", "--controller", url, "--keys-dir", str(mine.root)))
    assert "so it was revoked there" in line and mine.load("client").public.decode() in line
    return True


def test_keys_against_a_controller_without_keys(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc = farm.start("insecure", "controller", "--bind", "tcp://127.0.0.1:0", "--insecure",
                          "--state-dir", str(tmp_path / "state"))
        url = proc.wait_line("controller listening on ").split("listening on ")[1].strip()
        keys = KeyStore(tmp_path / "keys")
        keys.create("client")
        keys.add_public("controller", keys.create("someone").public.decode())
        line = last_line(farm.run("status", "--controller", url, "--keys-dir", str(keys.root)))
        assert "runs without keys (--insecure) and we use CURVE keys" in line

        # The same agent mistake is said in the agent's log, not "controller silent" forever.
        agent = farm.agent("n1", "--controller", url, "--keys-dir", str(keys.root), "--key", "client")
        agent.wait_line("runs without keys (--insecure) and we use CURVE keys")


def test_an_insecure_agent_is_warned_and_told_the_controller_wants_keys(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        agent = farm.agent("n1", "--controller", url, "--insecure")
        agent.wait_line("WITHOUT keys (--insecure)")
        agent.wait_line("requires keys and we have none")
        assert "controller silent" not in agent.text()
