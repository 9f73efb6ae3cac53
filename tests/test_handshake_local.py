"""`farm status` on the controller's own machine, for a controller bound beyond loopback (real processes)."""

from __future__ import annotations

import socket

from join_helpers import farm_processes

from farm.discovery import local_addresses
from farm.keys import KeyStore


def test_status_finds_a_wildcard_controller_of_the_same_user_on_this_machine(tmp_path):
    KeyStore(tmp_path / "ctl").create("controller")  # as the docs say: `farm keys create controller`
    with farm_processes(tmp_path) as farm:
        _, url, _ = farm.controller("--no-announce", bind="tcp://0.0.0.0:0")
        port = url.rsplit(":", 1)[1]
        keys = ["--keys-dir", str(tmp_path / "ctl")]
        targets = [[], ["--controller", f"tcp://127.0.0.1:{port}"], ["--controller", f"tcp://localhost:{port}"]]
        targets += [["--controller", f"tcp://{address}:{port}"] for address in local_addresses()[:2]
                    if ":" not in address]
        for target in targets:
            shown = farm.run("status", *keys, *target, timeout=60)
            assert shown.returncode == 0, (target, shown.stderr)
            assert shown.stdout.startswith("controller "), shown.stdout


def test_a_client_with_no_key_for_a_remote_controller_is_told_how_to_get_one(tmp_path):
    with farm_processes(tmp_path) as farm:
        for command, hint in ((["status"], "farm keys invite --client"), (["agent"], "farm agent --join")):
            refused = farm.run(*command, "--controller", "tcp://10.255.0.1:5555", "--keys-dir",
                               str(tmp_path / "empty"), timeout=60)
            assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
            assert hint in refused.stderr and "--key NAME" in refused.stderr, refused.stderr
            assert "farm keys create" not in refused.stderr


def test_status_counts_connected_and_refused_agents_apart():
    from farm.cli.status import status_text

    agent = {"id": "n1", "host": "h", "jobs": 0, "slots": 1, "done": 0, "failed": 0, "last_heartbeat_s": 0.1,
             "capabilities": []}
    report = {"controller": "tcp://0.0.0.0:5555", "agents": [agent], "projects": [],
              "refused": [{"id": "n2", "host": "h2", "reason": "key n2 revoked", "seconds_ago": 1,
                           "public_key": "K2"}],
              "refused_keys": ["K2", "K3"]}
    text = status_text(report)
    assert "agents (1 connected, 2 refused):" in text and text.count("REFUSED") == 2
    assert "agents (1):" in status_text({**report, "refused": [], "refused_keys": []})


def test_status_names_the_address_dialled_for_a_controller_on_every_interface(tmp_path):
    """`farm status` of a controller bound to 0.0.0.0 showed `controller tcp://0.0.0.0:5555`: an
    address nobody can dial. It shows the one this client dialled, and the bound one after it."""
    from farm.cli.status import status_text

    report = {"controller": "tcp://0.0.0.0:5555", "agents": [], "projects": []}
    first = status_text(report, "tcp://render-host:5555").splitlines()[0]
    assert first == "controller tcp://render-host:5555 (listening on tcp://0.0.0.0:5555)"
    assert status_text({**report, "controller": "tcp://10.0.0.5:5555"}, "tcp://render-host:5555") \
        .splitlines()[0] == "controller tcp://10.0.0.5:5555"  # a named address is one to dial already

    with socket.socket() as probe:  # a free port: one given, the controller reports it as bound
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    KeyStore(tmp_path / "ctl").create("controller")
    with farm_processes(tmp_path) as farm:
        farm.controller("--no-announce", bind=f"tcp://0.0.0.0:{port}")
        shown = farm.run("status", "--keys-dir", str(tmp_path / "ctl"), "--controller",
                         f"tcp://127.0.0.1:{port}", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == \
        f"controller tcp://127.0.0.1:{port} (listening on tcp://0.0.0.0:{port})", shown.stdout


def test_status_shows_counts_and_rates_with_thousands_separators_as_submit_does():
    from farm.cli.progress import progress_text
    from farm.cli.status import status_text

    run = {"id": "world-1", "media_type": "maptiles", "state": "running", "total": 1368, "done": 1200,
           "failed": 0, "running": 4, "rate": 1234.5, "eta_s": 3.0,
           "units": {"name": "tiles", "done": 22000, "total": 87552, "rate": 12345.67, "eta_s": 5.0}}
    def line(project: dict) -> str:
        return status_text({"controller": "tcp://127.0.0.1:5555", "agents": [], "projects": [project]})

    assert "1,200/1,368 done" in line(run) and "tiles 22,000/87,552" in line(run), line(run)
    assert "12,345.7 tiles/s" in line(run) and "1,234.5 jobs/s" in line({**run, "units": {}})
    ended = {**run, "state": "done", "units": {**run["units"], "done": 87552}}
    assert "12,345.7 tiles/s" in progress_text(ended, None)  # farm submit's words for the same rate
