"""Joining again: a revoked node rejoins with a new token (as a new key), tokens have a kind, and
the token need not stay on the command line (real processes, real sockets)."""

from __future__ import annotations

import json

import join_helpers
from join_helpers import farm_processes

from farm.keys import KeyStore
from farm.tokens import parse_join


def _invite(farm, ctl, *args: str) -> str:
    made = farm.run("keys", "invite", "--json", "--keys-dir", str(ctl), *args)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["join"]


def test_a_revoked_node_rejoins_with_a_new_token_under_a_fresh_key(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller("--heartbeat", "0.2")
        ctl = tmp_path / "ctl"
        node = farm.agent("n1", "--join", argument)
        node.wait_line(f"connected to {url} as n1")
        old_key = KeyStore(tmp_path / "keys-n1").load("node").public
        assert farm.run("keys", "revoke", "n1", "--keys-dir", str(ctl)).returncode == 0
        node.wait_line("was revoked here", 90)  # the controller tells it; it stops (exit 78)
        assert node.proc.wait(60) == 78

        # The old (spent) token with the revoked key: refused, with a reason, and no restart loop.
        spent = farm.run("agent", "--join", argument, "--keys-dir", str(tmp_path / "keys-n1"), "--id", "n1")
        assert spent.returncode == 78 and "Traceback" not in spent.stderr, spent.stderr
        assert "was revoked here" in spent.stderr and "ask for a new join token" in spent.stderr

        # A new token, given as the message said: the node joins again, with a new key pair.
        fresh = _invite(farm, ctl)
        again = farm.agent("n1", "--join", fresh)
        again.wait_line(f"connected to {url} as n1")
        new_key = KeyStore(tmp_path / "keys-n1").load("node").public
        assert new_key != old_key
        allowed = KeyStore(ctl).allowed()
        assert new_key in allowed.values() and old_key not in allowed.values()
        assert "was revoked here" in again.text()
        rows = json.loads(farm.run("keys", "invites", "--json", "--keys-dir", str(ctl)).stdout)["invites"]
        assert [r["state"] for r in rows if r["id"] == parse_join(fresh)[2][:8]] == ["used"]


def test_a_live_token_is_presented_even_when_our_key_was_accepted_before(tmp_path):
    # Accepted before, then the controller lost our key by hand (`allowed/` cleaned): a live token re-admits.
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller()
        ctl = tmp_path / "ctl"
        node = farm.agent("n1", "--join", argument)
        node.wait_line(f"connected to {url} as n1")
        node.stop()
        (ctl / "allowed" / "n1.key").unlink()
        again = farm.agent("n1", "--join", _invite(farm, ctl))
        again.wait_line(f"connected to {url} as n1")
        assert "n1" in KeyStore(ctl).allowed()


def test_agent_and_client_tokens_cannot_be_swapped(tmp_path, synthetic):
    with farm_processes(tmp_path) as farm:
        farm.controller()
        ctl = tmp_path / "ctl"
        agent_token, client_token = _invite(farm, ctl, "--reusable"), _invite(farm, ctl, "--client", "--reusable")
        project = synthetic(jobs=1)
        submit = farm.run("submit", "--join", agent_token, "--keys-dir", str(tmp_path / "snoop"), str(project))
        assert submit.returncode == 1 and "is for agents" in submit.stderr and "--client" in submit.stderr, \
            submit.stderr
        node = farm.run("agent", "--join", client_token, "--keys-dir", str(tmp_path / "keys-x"), "--id", "x")
        assert node.returncode == 78 and "is for clients" in node.stderr, node.stderr
        assert KeyStore(ctl).allowed() == {}
        rows = json.loads(farm.run("keys", "invites", "--json", "--keys-dir", str(ctl)).stdout)["invites"]
        kinds = {r["kind"] for r in rows}
        assert kinds == {"agent", "client"}
        listed = farm.run("keys", "invites", "--keys-dir", str(ctl)).stdout
        assert "client" in listed and "agent" in listed


def test_the_join_argument_comes_from_a_file_or_the_environment_not_argv(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller()
        ctl = tmp_path / "ctl"
        join_file = tmp_path / "join"
        join_file.write_text(argument + "\n")
        join_file.chmod(0o600)
        by_file = farm.agent("n1", "--join-file", str(join_file))
        by_file.wait_line(f"connected to {url} as n1")
        assert argument.rsplit("-", 1)[1] not in " ".join(by_file.proc.args)

        secret = _invite(farm, ctl)
        join_helpers.ENV["FARM_JOIN"] = secret
        try:
            by_env = farm.agent("n2")
        finally:
            del join_helpers.ENV["FARM_JOIN"]
        by_env.wait_line(f"connected to {url} as n2")
        assert {"n1", "n2"} <= set(KeyStore(ctl).allowed())

        # joined once: the token is no longer needed
        by_file.stop()
        plain = farm.agent("n1", "--controller", url)
        plain.wait_line(f"connected to {url} as n1")

        empty = tmp_path / "empty"
        empty.write_text("")
        bad = farm.run("agent", "--join-file", str(empty), "--keys-dir", str(tmp_path / "k3"))
        assert bad.returncode != 0 and "is empty" in bad.stderr and "Traceback" not in bad.stderr


def test_a_joined_node_restarted_with_its_join_command_waits_for_an_absent_controller(tmp_path):
    with farm_processes(tmp_path) as farm:
        controller, url, argument = farm.controller()
        node = farm.agent("n1", "--join", argument)
        node.wait_line(f"connected to {url} as n1")
        node.stop()
        controller.stop()
        # Both restart, the node first: it does not exit, it waits for the controller with its own key.
        again = farm.agent("n1", "--join", argument)
        again.wait_line("connecting without it")
        again.wait_line("nothing listens there")  # the agent's own reconnect loop, still running
        assert again.proc.poll() is None
