"""Who may use the HTTP API: tokens everywhere (reads included; loopback too), revocation, no
cookie ever, the loopback Host check, and the CLI's refusal to listen beyond loopback without
tokens; `farm keys api-token` and `farm submit --ui` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from http_helpers import TIMEOUT, outside_address, start_http_farm

from farm.errors import FarmError
from farm.http.server import HttpServer, parse_listen
from farm.http.tokens import TokenStore

READS = ["/api/v1/projects", "/api/v1/agents", "/metrics", "/api/v1/openapi.json", "/api/v1/events"]


def _outside() -> str:
    try:
        return outside_address()
    except RuntimeError:
        return "127.0.0.1"  # still beyond loopback for the server: it listens on 0.0.0.0


def test_beyond_loopback_every_request_needs_a_valid_token(tmp_path: Path):
    keys = tmp_path / "keys"
    with pytest.raises(FarmError, match="farm keys api-token new"):
        HttpServer("0.0.0.0", 0, keys_dir=keys)  # no token at all: it will not start
    token = TokenStore(keys).new("ci")
    other = TokenStore(keys).new("spare")
    web = start_http_farm(tmp_path / "state", "0.0.0.0", keys=keys, connect_host=_outside())
    try:
        for path in [*READS, "/api/v1/projects/x/jobs", "/api/v1/projects/x"]:
            bare = requests.get(web.base + path, timeout=TIMEOUT)
            assert bare.status_code == 401, path
            assert bare.json()["error"].startswith("this API needs a token")
            assert bare.headers["www-authenticate"].startswith("Bearer")
            wrong = requests.get(web.base + path, headers={"Authorization": "Bearer farm_guess"}, timeout=TIMEOUT)
            assert wrong.status_code == 401, path
        good = {"Authorization": f"Bearer {token}"}
        for path in READS[:-1]:
            assert requests.get(web.base + path, headers=good, timeout=TIMEOUT).status_code == 200, path
        with requests.get(web.base + "/api/v1/events", headers=good, stream=True, timeout=TIMEOUT) as stream:
            assert stream.status_code == 200
        control = requests.post(web.base + "/api/v1/agents/a/drain", data="{}", timeout=TIMEOUT,
                                headers={"Content-Type": "application/json"})
        assert control.status_code == 401
        # the page opened with the token sets no cookie (a browser sends those of 127.0.0.1 to every
        # port), and a cookie is no credential
        opened = requests.get(web.base + f"/?access_token={token}", timeout=TIMEOUT)
        assert opened.status_code == 200 and "<html" in opened.text
        assert "set-cookie" not in opened.headers
        assert requests.get(web.base + "/api/v1/agents", cookies={"farm_token": token},
                            timeout=TIMEOUT).status_code == 401
        # revoked: refused from the next read of the token file on (within a second)
        TokenStore(keys).revoke("ci")
        wait_for(lambda: requests.get(web.base + "/api/v1/projects", headers=good, timeout=TIMEOUT).status_code
                 == 401, timeout=10, what="the revoked token refused")
        spare = {"Authorization": f"Bearer {other}"}
        assert requests.get(web.base + "/api/v1/projects", headers=spare, timeout=TIMEOUT).status_code == 200
    finally:
        web.controller.stop()


def test_loopback_answers_only_requests_addressed_to_this_machine(tmp_path: Path):
    web = start_http_farm(tmp_path / "state")
    try:
        assert web.get("/api/v1/projects").status_code == 200  # with the session token
        for host in ("localhost", f"localhost:{web.http.port}", f"[::1]:{web.http.port}", "127.0.0.2"):
            assert web.get("/api/v1/projects", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", f"evil.example:{web.http.port}", "192.0.2.7", ""):  # DNS rebinding
            refused = web.get("/api/v1/projects", headers={"Host": host})
            assert refused.status_code == 400, host
            assert "not this machine" in refused.json()["error"]
        big = requests.post(web.base + "/api/v1/projects/x/retry", data=b" " * (2 << 20), timeout=TIMEOUT,
                            headers={**web.auth, "Content-Type": "application/json"})
        assert big.status_code == 413 and "at most" in big.json()["error"]
    finally:
        web.controller.stop()


def test_token_store_files_and_errors(tmp_path: Path):
    store = TokenStore(tmp_path / "keys")
    token = store.new("grafana")
    assert token.startswith("farm_") and len(token) > 40
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert token not in store.path.read_text()  # only its hash is kept
    assert store.verify(token) == "grafana" and store.verify(token + "x") is None
    with pytest.raises(FarmError, match="exists already"):
        store.new("grafana")
    with pytest.raises(FarmError, match="bad key name"):
        store.new("../etc")
    with pytest.raises(FarmError, match="no token named 'nobody'"):
        store.revoke("nobody")
    store.path.chmod(0o644)
    with pytest.raises(FarmError, match="chmod 600"):
        store.listing()
    store.path.chmod(0o600)
    store.path.write_text("{not json")
    with pytest.raises(FarmError, match="not a token file"):
        store.listing()
    assert TokenStore(tmp_path / "keys").verify(token) is None  # an unreadable file admits nobody


def test_listen_addresses_parse_or_name_the_problem():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("0.0.0.0") == ("0.0.0.0", 8642)
    assert parse_listen("::1") == ("::1", 8642)
    for bad in ("host:port", "1.2.3.4:70000", "[::1]9000", "a:b:c"):
        with pytest.raises(FarmError, match="--http"):
            parse_listen(bad)


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FARM_KEYS"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


def test_cli_tokens_and_a_controller_that_refuses_to_listen_beyond_loopback_without_one(tmp_path: Path):
    env = _cli_env(tmp_path)
    farm = [sys.executable, "-m", "farm"]
    command = [*farm, "controller", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
               "--http", "0.0.0.0:0"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "farm keys api-token new" in refused.stderr and "Traceback" not in refused.stderr

    made = subprocess.run([*farm, "keys", "api-token", "new", "ops"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    listed = subprocess.run([*farm, "keys", "api-token", "list", "--json"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert [row["name"] for row in json.loads(listed.stdout)["tokens"]] == ["ops"]
    assert token not in listed.stdout

    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if "HTTP API and dashboard on " in line:
                url = line.split(" on ", 1)[1].strip()
                break
        assert url.startswith("http://0.0.0.0:"), url
        base = url.replace("0.0.0.0", _outside()).rstrip("/")
        assert requests.get(base + "/api/v1/agents", timeout=TIMEOUT).status_code == 401
        answer = requests.get(base + "/api/v1/agents", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.json() == {"agents": []}
        # the controller's socket is CURVE (loopback keys); the API's in-process client needs none
        steer = requests.post(base + "/api/v1/agents/nobody/drain", data="{}", timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert steer.status_code == 404 and "nobody" in steer.json()["error"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        proc.stderr.close()
    revoked = subprocess.run([*farm, "keys", "api-token", "revoke", "ops"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert revoked.returncode == 0 and TokenStore(tmp_path / "config" / "farm" / "keys").listing() == []


def test_submit_ui_serves_the_embedded_farm_behind_a_session_token(tmp_path: Path, synthetic):
    project = synthetic(jobs=6, name="shown")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "farm", "submit", str(project), "--agents", "1", "--ui"],
                            env=_cli_env(tmp_path), stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if line.startswith("dashboard: "):
                url = line.split(" ", 1)[1].strip()
            if "stays up" in line:
                break
        assert "?access_token=" in url and url.startswith("http://127.0.0.1:")
        base = url.split("?")[0].rstrip("/")
        assert requests.get(base + "/api/v1/projects", timeout=TIMEOUT).status_code == 401  # other local users
        page = requests.get(url, timeout=TIMEOUT)  # the printed address: the page, and no cookie
        assert page.status_code == 200 and "set-cookie" not in page.headers
        token = url.split("access_token=", 1)[1]
        opened = requests.get(base + "/api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                              timeout=TIMEOUT)
        assert opened.status_code == 200
        (run,) = opened.json()["projects"]
        assert run["project"] == "shown" and run["state"] == "done" and run["done"] == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_dashboard_files_are_served_without_a_token_and_nothing_else_is(tmp_path: Path):
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>farm</title>")
    (static / "js" / "app.js").write_text("console.log('hi')")
    (tmp_path / "secret.txt").write_text("not for you")
    keys = tmp_path / "keys"
    token = TokenStore(keys).new("ci")
    web = start_http_farm(tmp_path / "state", "0.0.0.0", keys=keys, connect_host="127.0.0.1", static_dir=static)
    try:
        page = requests.get(web.base + "/", timeout=TIMEOUT)
        assert page.status_code == 200 and "<title>farm</title>" in page.text
        assert requests.get(web.base + "/js/app.js", timeout=TIMEOUT).status_code == 200
        for path in ("/api/v1/projects", "/metrics", "/missing.js", "/../secret.txt", "/js/../../secret.txt",
                     "/%2e%2e/secret.txt"):
            refused = requests.get(web.base + path, timeout=TIMEOUT)
            assert refused.status_code == 401, path
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(web.base + "/%2e%2e/secret.txt", headers=auth, timeout=TIMEOUT).status_code == 404
        assert requests.get(web.base + "/api/v1/projects", headers=auth, timeout=TIMEOUT).status_code == 200
    finally:
        web.controller.stop()


def test_a_taken_http_port_is_an_error_naming_it(tmp_path: Path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "farm", "controller", "--bind", "tcp://127.0.0.1:0", "--state-dir",
                   str(tmp_path / "state"), "--http", f"127.0.0.1:{port}"]
        done = subprocess.run(command, env=_cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
