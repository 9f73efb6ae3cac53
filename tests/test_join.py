"""Join tokens: a node joins a controller in one command, with its own key (real processes, real sockets)."""

from __future__ import annotations

import json
import stat
import time

import pytest
from conftest import wait_for
from join_helpers import farm_processes

from farm.keys import KeyStore, SecurityError
from farm.tokens import TokenStore, format_join, parse_join, token_keys


def project_with_assets(synthetic, jobs: int = 6):
    project = synthetic(jobs=jobs, inputs="in", output_bytes=16)
    (project / "in").mkdir()
    for i in range(jobs):
        (project / "in" / f"job-{i:07d}.txt").write_text(f"asset {i}")
    return project


def test_a_node_joins_with_one_command_and_renders(tmp_path, synthetic):
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller()
        assert argument.startswith(url + "#")
        node = farm.agent("n1", "--join", argument)
        assert "as n1, 1 slot," in node.wait_line(f"connected to {url} as n1")

        # A client joins too, with a reusable token made by `farm keys invite`, and renders through n1.
        made = farm.run("keys", "invite", "--client", "--reusable", "--json", "--keys-dir", str(tmp_path / "ctl"))
        assert made.returncode == 0, made.stderr
        invite = json.loads(made.stdout)
        assert parse_join(invite["join"])[0] == url and invite["command"].startswith("farm submit --join ")
        project = project_with_assets(synthetic)
        done = farm.run("submit", "--join", invite["join"], "--keys-dir", str(tmp_path / "keys-client"),
                        "--json", str(project))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["jobs"]["done"] == 6
        assert (project / "output" / "job-0000004.txt").read_text() == "asset 4"

        # Each joined under its own key; the keys and tokens are private; no secret is stored.
        ctl = KeyStore(tmp_path / "ctl")
        node_key = KeyStore(tmp_path / "keys-n1").load("node").public
        client_key = KeyStore(tmp_path / "keys-client").load("client").public
        assert ctl.allowed()["n1"] == node_key and client_key in ctl.allowed().values()
        assert node_key != client_key
        assert stat.S_IMODE((tmp_path / "keys-n1" / "node.key_secret").stat().st_mode) == 0o600
        tokens = tmp_path / "ctl" / "tokens"
        assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
        secrets = [argument.rsplit("-", 1)[1], invite["join"].rsplit("-", 1)[1]]
        for record in tokens.iterdir():
            assert stat.S_IMODE(record.stat().st_mode) == 0o600
            assert not any(secret in record.read_text() for secret in secrets)
        listed = json.loads(farm.run("keys", "invites", "--json", "--keys-dir", str(tmp_path / "ctl")).stdout)
        listed = listed["invites"]
        assert {(t["state"], tuple(t["uses"])) for t in listed} >= {("used", ("n1",))}


def test_a_single_use_token_works_once_and_a_joined_node_restarts_without_it(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller()
        first = farm.agent("n1", "--join", argument)
        first.wait_line(f"connected to {url} as n1")
        second = farm.run("agent", "--join", argument, "--keys-dir", str(tmp_path / "keys-n2"), "--id", "n2")
        assert second.returncode == 78  # a refused join: a service manager must not restart it
        assert "was used already (by n1)" in second.stderr and "single-use" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert "n2" not in KeyStore(tmp_path / "ctl").allowed()

        first.stop()  # the same node again, same command: its key was accepted, the token is not needed
        again = farm.agent("n1", "--join", argument)
        again.wait_line(f"connected to {url} as n1")


def test_expired_revoked_and_unknown_tokens_are_refused_each_with_its_reason(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller()
        ctl = tmp_path / "ctl"

        def invite(*args: str) -> str:
            made = farm.run("keys", "invite", "--json", "--keys-dir", str(ctl), *args)
            assert made.returncode == 0, made.stderr
            return json.loads(made.stdout)["join"]

        expiring = invite("--expires", "1s")
        store = TokenStore(KeyStore(ctl))
        token_id = parse_join(expiring)[2].split("-")[0]
        wait_for(lambda: store.load(token_id).state() == "expired", 30, "the token to expire")
        revoked = invite("--reusable")
        assert farm.run("keys", "revoke-invite", parse_join(revoked)[2][:8], "--keys-dir", str(ctl)).returncode == 0
        unknown = format_join(url, parse_join(revoked)[1], "0badc0de-" + "0" * 32)

        reasons = {}
        for label, argument in (("expired", expiring), ("revoked", revoked), ("unknown", unknown)):
            refused = farm.run("agent", "--join", argument, "--keys-dir", str(tmp_path / f"keys-{label}"),
                               "--id", label)
            assert refused.returncode == 78 and "Traceback" not in refused.stderr, refused.stderr
            reasons[label] = refused.stderr.strip().splitlines()[-1]
        assert f"join token {token_id} expired at" in reasons["expired"]
        assert "was revoked" in reasons["revoked"]
        assert "refused join token 0badc0de in the handshake" in reasons["unknown"]
        assert KeyStore(ctl).allowed() == {}
        tokens = json.loads(farm.run("keys", "invites", "--json", "--keys-dir", str(ctl)).stdout)["invites"]
        assert sorted(t["state"] for t in tokens) == ["expired", "live", "revoked"]  # the controller's own is live


def test_a_revoked_node_is_told_it_was_revoked(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller("--heartbeat", "0.2")
        node = farm.agent("n1", "--join", argument)
        node.wait_line(f"connected to {url} as n1")
        assert farm.run("keys", "revoke", "n1", "--keys-dir", str(tmp_path / "ctl")).returncode == 0
        line = node.wait_line("was revoked here", 90)  # told by the controller, not left to find out
        assert "this agent's key n1 was revoked here" in line and "farm keys invite" in line
        assert node.proc.wait(60) == 78  # stops: a service manager does not restart it to be refused again


def test_join_arguments_are_checked_where_they_enter(tmp_path):
    key = KeyStore(tmp_path).create("controller").public
    token = TokenStore(KeyStore(tmp_path)).create(expires_s=60)
    argument = format_join("tcp://10.0.0.1:5555", key, token)
    assert parse_join(argument) == ("tcp://10.0.0.1:5555", key, token)
    assert token_keys(token) == token_keys(token) and token_keys(token)[0] != key
    for bad, why in ((argument.replace("#", "@"), "expected URL#KEY.TOKEN"),
                     (argument.replace(key.decode(), "short"), "public key"),
                     (argument[:-3], "ID-SECRET"),
                     ("ftp//x#" + key.decode() + "." + token, "expected URL#KEY.TOKEN")):
        with pytest.raises(SecurityError, match=why):
            parse_join(bad)


def test_a_token_expires_on_time(tmp_path):
    store = TokenStore(KeyStore(tmp_path))
    token = store.create(expires_s=3600, single_use=False)
    record = store.load(token[:8])
    assert record.state() == "live" and record.state(time.time() + 3601) == "expired"
    assert store.create(expires_s=None) and all(t.state() == "live" for t in store.all())


def test_two_nodes_presenting_one_key_are_told_apart_loudly(tmp_path):
    shared = KeyStore(tmp_path / "shared")  # the README's old story: one `node` secret copied to every node
    shared.create("node")
    with farm_processes(tmp_path) as farm:
        controller, url, _ = farm.controller()
        shared.add_public("controller", KeyStore(tmp_path / "ctl").load("controller").public.decode())
        KeyStore(tmp_path / "ctl").allow(shared.load("node").public.decode(), name="node")
        agents = []
        for host in ("host-a", "host-b"):  # two machines: each agent in a UTS namespace of its own
            on_host = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"']
            agents.append(farm.start(host, "agent", "--controller", url, "--keys-dir", str(shared.root),
                                     "--id", host, "--slots", "1", prefix=on_host))
            agents[-1].wait_line(f"connected to {url} as {host}")
        said = "agent host-b on host-b presents the same key (node) as host-a on host-a"
        assert said in controller.wait_line("presents the same key")
        assert said in agents[1].wait_line("the controller says:")
        status = farm.run("status", "--controller", url, "--keys-dir", str(tmp_path / "ctl"), "--key", "controller",
                          "--json")
        assert sorted(a["id"] for a in json.loads(status.stdout)["agents"]) == ["host-a", "host-b"]


def test_records_of_tokens_long_expired_are_pruned(tmp_path):
    store = TokenStore(KeyStore(tmp_path))
    old = store.create(expires_s=60)[:8]
    record = store.load(old)
    record.expires = time.time() - 8 * 86400
    store._save(record)
    fresh = store.create()[:8]
    assert [t.id for t in store.all()] == [fresh]


def test_a_node_without_an_id_is_known_by_its_host_name_across_restarts(tmp_path):
    on_host = ["unshare", "--uts", "sh", "-c", 'hostname render-07 && exec "$0" "$@"']
    with farm_processes(tmp_path) as farm:
        _, url, argument = farm.controller()
        for attempt in range(2):  # the second time the token is not spent: the name comes from the first
            node = farm.start(f"render-07-{attempt}", "agent", "--join", argument, "--keys-dir",
                              str(tmp_path / "keys-r7"), "--slots", "2", prefix=on_host)
            line = node.wait_line(f"connected to {url} as ")
            assert f"connected to {url} as render-07, 2 slots, " in line and "synthetic" in line
            node.stop()
        assert list(KeyStore(tmp_path / "ctl").allowed()) == ["render-07"]
