"""A user who joined another user's controller can still start their own: the joined controller's
key is kept by address in joined/, never as controller.key (real processes, one home per user)."""

from __future__ import annotations

import json
import subprocess

import pytest
from join_helpers import ENV, FARM, Farm, Proc, farm_processes

from farm.cli.security import JOINED, client_security, joined_keys, record_path, remember_joined
from farm.keys import KeyStore, SecurityError

PROJECT = '[project]\nname = "j"\nmedia_type = "synthetic"\n[synthetic]\njobs = 2\n'


def _user(tmp_path, name: str) -> tuple[dict[str, str], KeyStore]:
    """The environment of a user with fresh XDG folders, and that user's default keys folder."""
    home = tmp_path / name
    env = {k: v for k, v in ENV.items() if k not in ("FARM_JOIN", "FARM_JOIN_FILE")}
    env.update(HOME=str(home), **{f"XDG_{kind}_HOME": str(home / kind.lower())
                                  for kind in ("CONFIG", "STATE", "CACHE", "DATA")})
    return env, KeyStore(home / "config" / "farm" / "keys")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120, env=env)


def _own_controller(farm: Farm, name: str, env: dict[str, str], *args: str) -> Proc:
    log = farm.folder / f"{name}.log"
    with open(log, "wb") as out:
        command = [*FARM, "--log-level", "info", "controller", "--bind", "tcp://127.0.0.1:0", *args]
        proc = subprocess.Popen(command, stderr=out, stdout=subprocess.DEVNULL, env=env)
    farm.procs.append(Proc(proc, log))
    return farm.procs[-1]


def _joined_as_client(farm: Farm, tmp_path, env: dict[str, str]) -> str:
    """Join user A's controller (keys in tmp_path/ctl) as a client with `farm submit --join`; the project."""
    made = _run({**ENV, "FARM_KEYS": str(tmp_path / "ctl")}, "keys", "invite", "--client", "--json")
    assert made.returncode == 0, made.stderr
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    (project / "farm.toml").write_text(PROJECT)
    done = _run(env, "submit", "--join", json.loads(made.stdout)["join"], "--json", str(project))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "done"
    return str(project)


def test_a_user_who_joined_another_controller_starts_their_own(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url_a, node_join = farm.controller()  # user A's, with a render node
        farm.agent("n1", "--join", node_join).wait_line(f"connected to {url_a} as n1")
        env, keys = _user(tmp_path, "b")
        project = _joined_as_client(farm, tmp_path, env)
        a_key = KeyStore(tmp_path / "ctl").load("controller").public
        assert not keys.public_path("controller").exists()  # the join kept A's key by address only
        assert joined_keys(keys) == {a_key: url_a}

        own = _own_controller(farm, "own", env)
        url_b = own.wait_line("controller listening on ").split("listening on ")[1].strip()
        assert keys.load("controller").public != a_key  # a key pair of B's own, made as documented

        # the join still holds without --join, and B's own clients find B's controller
        again = _run(env, "submit", "--controller", url_a, "--json", project)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["state"] == "done"
        status = _run(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["controller"] == url_b


def test_a_controller_key_kept_by_an_older_join_moves_aside(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url_a, node_join = farm.controller()
        farm.agent("n1", "--join", node_join).wait_line(f"connected to {url_a} as n1")
        a_key = KeyStore(tmp_path / "ctl").load("controller").public
        env, keys = _user(tmp_path, "b")
        project = _joined_as_client(farm, tmp_path, env)
        keys.add_public("controller", a_key)  # what joins wrote before: A's public key as controller.key

        own = _own_controller(farm, "own", env)
        moved = own.wait_line("was the public key of a controller we joined")
        assert f"{JOINED}/ holds it already, for {url_a}" in moved
        own.wait_line("controller listening on ")
        assert keys.load("controller").public != a_key
        again = _run(env, "submit", "--controller", url_a, "--json", project)
        assert again.returncode == 0, again.stderr

        # a join older still (no joined/ record): A accepted our client key, so its key moves into joined/
        env_c, keys_c = _user(tmp_path, "c")
        _joined_as_client(farm, tmp_path, env_c)
        record_path(keys_c, url_a, JOINED).unlink()
        keys_c.add_public("controller", a_key)
        made = _run(env_c, "keys", "create", "controller")
        assert made.returncode == 0, made.stderr
        assert "moved it to" in made.stderr and keys_c.load("controller").public != a_key
        assert a_key in joined_keys(keys_c)  # still trusted: discovery, and dialling it beyond loopback

        # a public key imported by hand is not ours to move: a clear error, and --key is the way out
        env_d, keys_d = _user(tmp_path, "d")
        keys_d.add_public("controller", a_key)
        refused = _run(env_d, "controller", "--bind", "tcp://127.0.0.1:0")
        assert refused.returncode != 0
        assert "holds only a public key" in refused.stderr and "--key NAME" in refused.stderr, refused.stderr
        mine = _own_controller(farm, "mine", env_d, "--key", "mine")
        mine.wait_line("controller listening on ")
        assert keys_d.public_key("controller") == a_key and keys_d.load("mine").public != a_key


def test_the_one_joined_controller_is_dialled_with_its_key_at_another_address(tmp_path):
    keys = KeyStore(tmp_path / "keys")
    keys.create("client")
    theirs = KeyStore(tmp_path / "theirs").create("controller").public
    remember_joined(keys, "tcp://10.9.8.7:5555", theirs)
    # the same controller by its host name: no record for that address, no controller.key either
    security = client_security("tcp://render-host:5555", keys.root, "client", "controller", False)
    assert security is not None and security.server_key == theirs
    remember_joined(keys, "tcp://10.9.8.6:5555", KeyStore(tmp_path / "other").create("controller").public)
    with pytest.raises(SecurityError, match="joined several controllers") as refused:  # which one is it?
        client_security("tcp://render-host:5555", keys.root, "client", "controller", False)
    assert "tcp://10.9.8.7:5555" in str(refused.value)


def test_keys_list_shows_the_controllers_joined(tmp_path):
    with farm_processes(tmp_path) as farm:
        _, url, node_join = farm.controller()
        farm.agent("n1", "--join", node_join).wait_line(f"connected to {url} as n1")
        a_key = KeyStore(tmp_path / "ctl").load("controller").public.decode()
        node_keys = str(tmp_path / "keys-n1")
        listed = farm.run("keys", "list", "--json", "--keys-dir", node_keys)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)["keys"]
        assert [r for r in rows if r["joined"]] == [{"name": url, "public_key": a_key, "secret": False,
                                                     "allowed": False, "role": None, "joined": True}]
        assert [r["name"] for r in rows if r["secret"]] == ["node"]  # the node's own pair, as before
        text = farm.run("keys", "list", "--keys-dir", node_keys).stdout.splitlines()
        shown = [" ".join(line.split()) for line in text if line.startswith(url)]
        assert shown == [f"{url} joined - {a_key}"], text
