"""A local user's idle connections do not take the controller's last file descriptors (real processes).

The controller runs with at most 256 open files (soft and hard, so the CLI cannot raise it), and
the test holds 400 connections: to the HTTP port each with an unfinished request, to the job port
sending nothing. A real client is answered meanwhile, the controller lives, its log stays small.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests
from conftest import wait_for
from join_helpers import farm_processes
from seclimits_helpers import flood, limited, open_fds

FILES = 256
FLOOD = 400
SMALL_LOG = 64 * 1024


def _start(farm, *args: str, prefix: list[str] | None = None):
    proc = farm.start("controller", "controller", "--bind", "tcp://127.0.0.1:0", "--keys-dir",
                      str(farm.folder / "keys"), "--state-dir", str(farm.folder / "state"), *args,
                      prefix=prefix or limited(FILES))
    url = proc.wait_line("controller listening on ").split("listening on ")[1].strip()
    return proc, url


def _status(farm, url: str) -> dict:
    done = farm.run("status", "--controller", url, "--keys-dir", str(farm.folder / "keys"), "--json",
                    timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_unfinished_http_requests_leave_the_controller_answering(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc, url = _start(farm, "--http", "127.0.0.1:0")
        web = proc.wait_line("HTTP API and dashboard on ").split(" on ")[1].strip()
        token = proc.wait_line("?access_token=").rsplit("?access_token=", 1)[1].strip()  # loopback too
        with flood(urlsplit(web).port, FLOOD, b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\n") as held:
            assert len(held) > FILES // 2, f"only {len(held)} connections were made"
            assert open_fds(proc.proc.pid) < FILES - 64  # the HTTP server keeps its hands off the last ones
            answer = requests.get(f"{web}api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                                  timeout=10)
            assert answer.status_code == 200 and "projects" in answer.json()
            assert _status(farm, url)["projects"] == []
            assert open_fds(proc.proc.pid) < FILES - 64
        assert proc.proc.poll() is None, proc.text()[-2000:]
        assert proc.log.stat().st_size < SMALL_LOG, proc.text()[-2000:]
        assert "Too many open files" not in proc.text()


def test_idle_connections_to_the_job_port_leave_the_controller_answering(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc, url = _start(farm)
        agent = farm.start("agent", "agent", "--controller", url, "--keys-dir", str(tmp_path / "keys"),
                           "--id", "a1", "--slots", "1")
        agent.wait_line(f"connected to {url}")
        with flood(int(url.rsplit(":", 1)[1]), 2 * FLOOD) as held:
            assert len(held) > FILES // 2, f"only {len(held)} connections were made"
            # the loop looks at the agent's key in keys/allowed every second: now it cannot open it
            proc.wait_line("keeping the allow list read before", 30)
            status = _status(farm, url)  # answered while the connections are held
            assert status["projects"] == [] and [a["id"] for a in status["agents"]] == ["a1"]
        assert proc.proc.poll() is None, proc.text()[-2000:]
        log = proc.text()
        assert proc.log.stat().st_size < SMALL_LOG, log[-2000:]
        assert len(re.findall("Traceback", log)) == 0, log[-2000:]


def test_long_lived_commands_raise_their_open_files_limit(tmp_path):
    prefix = limited(256, 4096)
    with farm_processes(tmp_path) as farm:
        proc, url = _start(farm, prefix=prefix)
        agent = farm.start("agent", "agent", "--controller", url, "--keys-dir", str(tmp_path / "keys"),
                           "--id", "a1", "--slots", "1", prefix=prefix)
        agent.wait_line(f"connected to {url}")
        for pid in (proc.proc.pid, agent.proc.pid):
            limits = Path(f"/proc/{pid}/limits").read_text()
            assert re.search(r"Max open files\s+4096\s+4096", limits), limits


def test_unfinished_http_requests_leave_the_embedded_ui_farm_rendering(tmp_path, synthetic):
    project = synthetic(jobs=2, name="flooded")
    with farm_processes(tmp_path) as farm:
        proc = farm.start("submit", "submit", str(project), "--agents", "1", "--ui", "--watch",
                          prefix=limited(FILES))
        url = proc.wait_line("dashboard: ").split(" ", 1)[1].strip()
        proc.wait_line("watching for changes")
        base, token = url.split("?access_token=")
        with flood(urlsplit(base).port, FLOOD, b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\n") as held:
            assert len(held) > FILES // 2, f"only {len(held)} connections were made"
            answer = requests.get(f"{base}api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                                  timeout=10)
            assert answer.status_code == 200 and answer.json()["projects"][0]["project"] == "flooded"
            toml = project / "farm.toml"
            toml.write_text(toml.read_text().replace("jobs = 2", "jobs = 3"))  # a round reads farm.toml again
            wait_for(lambda: proc.text().count("watching for changes") >= 2 or proc.proc.poll() is not None,
                     60, "a second round")
            assert open_fds(proc.proc.pid) < FILES - 64
        assert proc.proc.poll() is None, proc.text()[-2000:]
        assert "Too many open files" not in proc.text() and proc.log.stat().st_size < SMALL_LOG
