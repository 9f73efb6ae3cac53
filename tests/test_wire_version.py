"""An agent and a controller of different protocol versions: the agent is told which versions each
side speaks and which to upgrade, and stops (exit 78, no restart under systemd) instead of going
silent and saying HELLO again for ever (`farm.wireversion`)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import ROOT

from farm.cli.agent import JOIN_REFUSED_EXIT
from farm.controller.server import Controller
from farm.protocol import PROTOCOL_VERSION, T
from farm.wireversion import silence_hint

# the last commit whose agent spoke protocol 1 (JOBS and RESULTS as maps), just before protocol 2
PROTOCOL_1 = "1eb812b461de0ec928e588e4bded098d109a943f"
HELLO_1 = {"agent": "oldnode", "host": "render-7", "pid": 2, "slots": 1, "prefetch": 0,
           "caps": ["synthetic"], "held": [], "version": "0.0.9"}


def _agent(url: str, farm_path: Path) -> subprocess.CompletedProcess[str]:
    """`farm agent --controller URL` as a node's operator runs it, to its end, with farm and its plugins
    from ``farm_path`` (-P: not this checkout's, from the working folder)."""
    return subprocess.run([sys.executable, "-P", "-m", "farm", "--log-level", "warning", "agent",
                           "--controller", url, "--id", "oldnode"], capture_output=True, text=True,
                          timeout=180,
                          env={**os.environ, "PYTHONPATH": f"{farm_path}{os.pathsep}{farm_path / 'plugins'}"})


def test_a_protocol_1_peer_is_answered_in_protocol_1_naming_both_versions(tmp_path, caplog):
    """The answer is an ERROR framed as protocol 1 framed it, with the one code on which a protocol-1
    agent stops; the controller's log names the agent, its host and farm version, and both protocols."""
    caplog.set_level(logging.WARNING)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state").start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.connect(ctl.url)
        sock.send_multipart([bytes((1, T.HELLO)), msgpack.packb(HELLO_1)])
        assert sock.poll(60_000), "the controller said nothing to a protocol-1 agent"
        head, body = sock.recv_multipart()
        assert head == bytes((1, T.ERROR))
        said = msgpack.unpackb(body)
        assert set(said) == {"message", "code"} and said["code"] == "key_role", said
        assert f"speaks farm protocol {PROTOCOL_VERSION}" in said["message"]
        assert "this program protocol 1: upgrade farm on this machine" in said["message"]
        assert ctl.registry.by_id("oldnode") is None
        lines = [r.getMessage() for r in caplog.records if r.name == "farm.wireversion"]
        assert any("agent 'oldnode', on host 'render-7', farm '0.0.9': it speaks farm protocol 1, this "
                   f"controller {PROTOCOL_VERSION}" in line for line in lines), lines
    finally:
        sock.close(linger=0)
        ctl.stop()


def _protocol_1(tmp_path: Path) -> Path:
    """farm and its plugins as of the last protocol-1 commit, from this repository's history."""
    try:
        tree = subprocess.run(["git", "-C", str(ROOT), "archive", PROTOCOL_1, "farm", "plugins"],
                              capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"this checkout lacks the protocol-1 commit {PROTOCOL_1[:10]} ({exc})")
    old = tmp_path / "farm-protocol-1"
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        archive.extractall(old, filter="data")
    return old


def test_a_real_protocol_1_agent_stops_saying_to_upgrade(tmp_path):
    """`farm agent` of the last protocol-1 commit (taken from this repository's history) against this
    controller: it prints the controller's reason and exits 78, where it once waited in silence."""
    old = _protocol_1(tmp_path)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state").start()
    try:
        done = _agent(ctl.url, old)
    finally:
        ctl.stop()
    assert done.returncode == JOIN_REFUSED_EXIT, done.stderr
    assert (f"error: the agent stops: the controller speaks farm protocol {PROTOCOL_VERSION}"
            in done.stderr), done.stderr
    assert "this program protocol 1: upgrade farm on this machine" in done.stderr, done.stderr


def test_an_agent_refused_by_a_newer_controller_says_both_versions_and_exits(tmp_path):
    """A controller of the next protocol answers this agent's HELLO in its own framing: the agent
    cannot read it as a message, yet says what it said and which protocols, and exits 78."""
    newer = PROTOCOL_VERSION + 1
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    agent = subprocess.Popen([sys.executable, "-m", "farm", "--log-level", "warning", "agent", "--controller",
                              f"tcp://127.0.0.1:{port}", "--id", "oldnode"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert router.poll(120_000), "the agent never said HELLO"
        identity, head, _ = router.recv_multipart()
        assert head == bytes((PROTOCOL_VERSION, T.HELLO))
        message = f"the controller speaks farm protocol {newer}, this program {PROTOCOL_VERSION}: upgrade"
        refusal = msgpack.packb({"message": message, "code": "version"})
        router.send_multipart([identity, bytes((newer, T.ERROR)), refusal])
        _, err = agent.communicate(timeout=180)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        router.close(linger=0)
    assert agent.returncode == JOIN_REFUSED_EXIT, err
    assert (f"error: the agent stops: the controller at tcp://127.0.0.1:{port} speaks farm protocol {newer}, "
            f"this agent {PROTOCOL_VERSION}" in err), err
    assert f"it says: {message}" in err, err


def test_silence_hint_names_an_older_controller_only_before_a_welcome():
    """A protocol-1 controller answers nothing: an agent it never welcomed says why that may be."""
    assert silence_hint(True) == ""
    assert f"protocol version {PROTOCOL_VERSION} is not supported" in silence_hint(False)


def test_an_agent_a_real_protocol_1_controller_never_answers_says_why_that_may_be(tmp_path):
    """A protocol-1 controller drops this agent's HELLO unanswered (it cannot be changed now): the
    agent's 'controller silent' warning says an older controller may be why, and which to upgrade."""
    old = _protocol_1(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{old}{os.pathsep}{old / 'plugins'}"}
    controller = subprocess.Popen([sys.executable, "-P", "-m", "farm", "controller", "--bind", "tcp://127.0.0.1:0",
                                   "--state-dir", str(tmp_path / "state"), "--insecure"], env=env,
                                  stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        assert controller.stderr is not None
        url = next(line.split("listening on ")[1].strip() for line in controller.stderr
                   if "listening on" in line)
        agent = subprocess.Popen([sys.executable, "-m", "farm", "agent", "--controller", url, "--insecure"],
                                 stderr=subprocess.PIPE, text=True)
        assert agent.stderr is not None
        deadline = threading.Timer(180, agent.kill)  # its stderr then ends: the test fails, not hangs
        deadline.start()
        hint = next((line for line in agent.stderr if "controller silent" in line), "")
        deadline.cancel()
    finally:
        for proc in (agent, controller):
            if proc is not None:
                proc.kill()
                proc.communicate()
    assert (f"no answer to this agent's HELLO: a controller of an older farm, speaking a protocol before "
            f"{PROTOCOL_VERSION}, drops it unanswered" in hint), hint
    assert "upgrade farm on the controller's machine" in hint, hint
