"""A malformed controller address is a usage error naming the option (or $FARM_CONTROLLER) and what
is expected, checked as it enters, for every command that dials one: exit 2, with ``--json`` one
object with code ``usage``; never a ZeroMQ traceback (real `farm` processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import zmq

FARM = [sys.executable, "-m", "farm"]
EXPECTED = "expected tcp://HOST:PORT or ipc://PATH"
TOKEN = "01234567-0123456789abcdef0123456789abcdef"


def farm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def usage_object(done: subprocess.CompletedProcess[str]) -> str:
    """The error of the one JSON object a usage error prints, checked for its shape."""
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stdout.strip().splitlines()  # exactly one object, nothing around it
    obj = json.loads(line)
    assert done.returncode == 2 and obj["code"] == "usage" and obj["state"] == "failed", (obj, done.stderr)
    return obj["error"]


# every kind of command that dials a controller, with --json where it has one
COMMANDS = [("status", "--json"), ("submit", "--json", "some_project"), ("cancel", "run", "--json"),
            ("pause", "run", "--json"), ("download", "run", "out", "--json"), ("events", "--json"),
            ("jobs", "run", "--json")]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_an_address_without_a_scheme_is_a_usage_error_naming_the_option(command):
    error = usage_object(farm(*command, "--controller", "127.0.0.1:15555"))
    assert error.endswith(f"--controller '127.0.0.1:15555': {EXPECTED}"), error


@pytest.mark.parametrize(("value", "says"), [
    ("notaurl", EXPECTED), ("http://127.0.0.1:8080", EXPECTED), ("inproc://farm", EXPECTED),
    ("tcp://127.0.0.1", "expected tcp://HOST:PORT"), ("tcp://127.0.0.1:abc", "port 'abc' is not a TCP port"),
    ("ipc://", "the path is missing"), ("ipc:///tmp/" + "x" * 120, "a Unix socket's is at most 107")])
def test_each_malformed_address_says_what_is_wrong(value, says):
    error = usage_object(farm("status", "--json", "--controller", value))
    assert f"--controller {value!r}" in error and says in error, error


def test_an_agent_and_plain_text_name_it_too_without_a_traceback():
    done = farm("agent", "--controller", "127.0.0.1:15555")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--controller '127.0.0.1:15555'" in done.stderr and "tcp://HOST:PORT" in done.stderr, done.stderr


def test_a_bad_farm_controller_variable_is_named_as_the_variable():
    error = usage_object(farm("status", "--json", env={"FARM_CONTROLLER": "127.0.0.1:15555"}))
    assert error.endswith(f"$FARM_CONTROLLER '127.0.0.1:15555': {EXPECTED}"), error


def test_a_port_out_of_range_is_named_itself_not_refused_or_plus_one(tmp_path):
    error = usage_object(farm("status", "--json", "--controller", "tcp://127.0.0.1:99999"))
    assert "port '99999' is not a TCP port (1-65535)" in error and "refused" not in error, error
    done = farm("controller", "--insecure", "--state-dir", str(tmp_path), "--bind", "tcp://127.0.0.1:99999")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--bind 'tcp://127.0.0.1:99999'" in done.stderr and "100000" not in done.stderr, done.stderr


def test_a_join_arguments_address_and_key_are_checked_too(tmp_path):
    """A bad address in URL#KEY.TOKEN, or a key that is no Z85 key, is a `bad join argument`."""
    key = zmq.curve_keypair()[0].decode()
    keys = ["--keys-dir", str(tmp_path / "keys")]
    done = farm("agent", *keys, "--join", f"tcp://127.0.0.1#{key}.{TOKEN}")
    assert done.returncode == 78 and "Traceback" not in done.stderr, done.stderr
    assert "bad join argument: the controller's address 'tcp://127.0.0.1'" in done.stderr, done.stderr
    done = farm("agent", *keys, "--join", f"tcp://127.0.0.1:5555#{'$' * 40}.{TOKEN}")  # past 2**32 in Z85
    assert done.returncode == 78 and "Traceback" not in done.stderr, done.stderr
    assert "is not the controller's 40-character public key" in done.stderr, done.stderr


def test_good_addresses_still_get_through_to_the_dial(tmp_path):
    """ipc:// and a bracketed IPv6 host pass the check: nothing listens, so `unreachable`."""
    for url in (f"ipc://{tmp_path}/none", "tcp://[::1]:9"):
        done = farm("status", "--json", "--insecure", "--controller", url)
        obj = json.loads(done.stdout)
        assert done.returncode == 1 and obj["code"] == "unreachable", (url, obj)
