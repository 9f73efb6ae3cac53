"""Identifiers that become paths: checked where they enter (farm.toml, split(), HELLO)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from conftest import ROOT, wait_for, write_project

from farm.client import submit
from farm.controller.server import Controller
from farm.errors import ProjectError
from farm.ids import MAX_NAME, BadIdentifier, check_key, check_name
from farm.project import load_project
from farm.protocol import T, pack

CASE = ROOT / "tests" / "cases" / "name-traversal"

# Names that must never become a path component (each with the reason's key words).
HOSTILE = [
    ("", "empty"),
    (".", "folder"),
    ("..", "folder"),
    ("../../escaped/x", "separator"),
    ("/etc/passwd", "separator"),
    ("a/b", "separator"),
    ("a\\b", "separator"),
    ("x\x00y", "U+0000"),
    ("line\nbreak", "U+000A"),
    ("tab\there", "U+0009"),
    ("a" * (MAX_NAME + 1), "too long"),
    ("é" * 120, "too long"),  # 120 characters but 240 bytes
    ("\u202eexe.txt", "RIGHT-TO-LEFT OVERRIDE"),
    ("zero\u200bwidth", "ZERO WIDTH SPACE"),
    ("\ufeffbom", "U+FEFF"),
    ("nb\u00a0sp", "U+00A0"),
    ("para\u2029sep", "PARAGRAPH SEPARATOR"),
    ("\uff0e\uff0e", "NFKC"),  # fullwidth dots: '..' after normalisation
    ("a\uff0fb", "NFKC"),  # fullwidth solidus
    ("\ue000private", "U+E000"),
    ("\U000e0041tag", "U+E0041"),
    ("-rf", "'-'"),
    (" padded", "space"),
    ("padded ", "space"),
    ("sur\udc80rogate", "U+DC80"),
]

FINE = ["x", "synth", "name with spaces é #1", "日本語", "v1.2_final-B", "a" * MAX_NAME, "x..y", ".hidden"]


@pytest.mark.parametrize(("value", "why"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_refused_saying_why(value, why):
    with pytest.raises(BadIdentifier, match="project name") as caught:
        check_name(value, "project name")
    assert why.lower() in str(caught.value).lower()
    assert "\x00" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", FINE)
def test_ordinary_names_pass(value):
    assert check_name(value) == value


@pytest.mark.parametrize("value", [None, 3, b"bytes", ["a"]])
def test_non_strings_are_refused(value):
    with pytest.raises(BadIdentifier, match="expected a string"):
        check_name(value)
    with pytest.raises(BadIdentifier, match="expected a string"):
        check_key(value)


@pytest.mark.parametrize("key", ["job-0000001", "7/12/40", "frames-000001-000010", "segment-00003"])
def test_job_keys_of_the_built_in_media_types_pass(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a//b", "a/", "a/./b", "x\x00", "a/" * 20 + "a",
                                 "k" * 1025, "a/\u202eb"])
def test_hostile_job_keys_are_refused(key):
    with pytest.raises(BadIdentifier, match="job key"):
        check_key(key)


def toml_escape(value: str) -> str:
    return "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\U{ord(c):08X}" for c in value)


def project_with_name(tmp_path: Path, name_line: str) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir(exist_ok=True)
    text = f'[project]\n{name_line}\nmedia_type = "synthetic"\n\n[synthetic]\njobs = 1\n'
    (folder / "farm.toml").write_text(text, encoding="utf-8")
    return folder


IN_TOML = [h for h in HOSTILE if "\udc80" not in h[0]]  # TOML cannot hold a lone surrogate


@pytest.mark.parametrize(("value", "why"), IN_TOML, ids=range(len(IN_TOML)))
def test_a_hostile_project_name_is_refused_at_load_with_its_line(tmp_path, value, why):
    folder = project_with_name(tmp_path, f'name = "{toml_escape(value)}"')
    with pytest.raises(ProjectError) as caught:
        load_project(folder)
    assert str(caught.value).startswith(f"{folder / 'farm.toml'}:2: [project] name: project name ")
    assert why.lower() in str(caught.value).lower()


def test_a_folder_name_that_cannot_be_a_project_name_asks_for_one(tmp_path):
    folder = tmp_path / "-dash"
    folder.mkdir()
    (folder / "farm.toml").write_text('[project]\nmedia_type = "synthetic"\n')
    with pytest.raises(ProjectError, match=r"folder's name; set \[project\] name"):
        load_project(folder)


def test_the_name_traversal_case_is_refused_and_creates_nothing(tmp_path):
    project = tmp_path / "case"
    shutil.copytree(CASE, project)
    before = set(tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "farm", "submit", "--agents", "1", str(project)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    expected = "farm.toml:4: [project] name: project name '../../escaped/name with spaces é #1' contains "
    assert expected + "the path separator '/'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert set(tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escaped").exists()


def test_a_job_key_from_split_that_could_climb_out_fails_the_project(controller, agents, tmp_path,
                                                                      monkeypatch):
    from farm_synthetic import Synthetic

    from farm.mediatype import Job

    def split(self, project):
        yield Job("job-ok", {"i": 0})
        yield Job("../../outside", {"i": 1})

    monkeypatch.setattr(Synthetic, "split", split)  # the controller runs split() in this process
    project = write_project(tmp_path / "p", "synthetic", "jobs = 2")
    agents(controller.url, 1)
    summary = submit(controller.url, load_project(project))
    assert not summary.ok
    assert "split() yielded a bad job: job key '../../outside'" in str(summary.error)


HELLO = {"host": "h", "pid": 1, "slots": 1, "prefetch": 0, "caps": ["synthetic"], "held": [], "version": "0"}


@pytest.mark.parametrize("agent_id", ["../../x", "", "a\x00b", "x" * 300, "\u202eevil", "..", "a/b"])
def test_a_hand_written_agent_with_a_bad_id_is_refused_by_a_real_controller(tmp_path, agent_id):
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ctl.url)
        sock.send_multipart(pack(T.HELLO, {"agent": agent_id, **HELLO}))
        wait_for(lambda: ctl.stats["bad_messages"] >= 1, 10, "the HELLO to be refused")
        assert not ctl.status()["agents"]
        assert not sock.poll(200)  # no WELCOME
        assert ctl.crash is None
    finally:
        sock.close(0)
        ctl.stop()


def test_an_agent_started_with_a_bad_id_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "farm", "agent", "--id", "../evil", "--controller",
                           "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "agent id '../evil' contains the path separator '/'" in proc.stderr
    assert "Traceback" not in proc.stderr
