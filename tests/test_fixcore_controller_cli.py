"""`farm controller`'s words: an address on every interface comes with ones that can be opened,
and `--help` paragraphs wrap at the terminal's width, not at the source's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

FARM = [sys.executable, "-m", "farm"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FARM_KEYS", "FARM_CONTROLLER")}
    return env | {"XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}


def test_a_controller_on_every_interface_says_where_to_open_it(tmp_path):
    env = _env(tmp_path)
    made = subprocess.run(
        [*FARM, "keys", "api-token", "new", "ops"], env=env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    proc = subprocess.Popen(
        [
            *FARM,
            "controller",
            "--bind",
            "tcp://127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "s"),
            "--http",
            "0.0.0.0:0",
            "--no-announce",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "access_token" in line:
                break
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
    text = "".join(seen)
    http = next(line for line in seen if "HTTP API and dashboard on " in line).split(" on ", 1)[1].strip()
    port = http.rsplit(":", 1)[1].strip("/")
    assert http.startswith("http://0.0.0.0:")
    assert f"open it as http://{socket.gethostname()}:{port}/" in text, text
    assert "nodes dial it as" not in text  # a loopback job socket can be dialled as printed
    assert "URL?access_token=TOKEN" in text and "farm keys api-token new NAME" in text, text


def test_help_paragraphs_are_wrapped_by_the_terminal_only(tmp_path):
    done = subprocess.run(
        [*FARM, "controller", "--help"], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # on 200 columns the paragraph is one line (it was cut where the source's lines end)
    assert "(`farm keys`); on loopback its key pair is made if missing, and local agents" in done.stdout, (
        done.stdout
    )
    assert "([notify] in farm.toml)" in done.stdout  # an escaped [section] shows as written


def test_reflowed_keeps_lists_and_escapes_markup():
    from farm.cli.helptext import reflowed

    doc = "First line.\n\nA paragraph\nwrapped [here].\n\n- one\n- two\n"
    assert reflowed(doc) == "First line.\n\nA paragraph wrapped \\[here].\n\n- one\n- two"


def test_openable_urls_of_every_interface_only():
    from farm.cli.invite import openable_urls

    host = socket.gethostname()
    assert openable_urls("tcp://0.0.0.0:5555")[0] == f"tcp://{host}:5555"
    assert openable_urls("http://[::]:8656/")[0] == f"http://{host}:8656/"
    assert openable_urls("tcp://127.0.0.1:5555") == openable_urls("ipc:///tmp/f/jobs") == []
