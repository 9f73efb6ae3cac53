"""Webhook notifications: real runs on real agents, POSTed to a real local HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Background, wait_for

from farm.client import Client, submit
from farm.controller.events import Event
from farm.controller.server import Controller
from farm.errors import ProjectError
from farm.notify import MAX_URL, BadWebhook, Notifier, check_host, check_webhook
from farm.project import load_project

HANG = "hang"  # a scripted answer: hold the request until the hook is released



@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Agents started here keep their file cache to this test (other tests' agents share ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

class Hook:
    """A local HTTP server that records POSTs. `script` answers the first requests in turn
    (a status code, or `HANG`); later ones get 200."""

    def __init__(self, *script: int | str) -> None:
        self.script = list(script)
        self.requests: list[dict] = []  # {"path", "headers", "body", "time"}, in arrival order
        self.hanging = 0
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": json.loads(body), "time": time.monotonic()})
                answer = hook.script.pop(0) if hook.script else 200
                if answer == HANG:
                    hook.hanging += 1
                    hook.release.wait(120)
                    hook.hanging -= 1
                    answer = 200
                self.send_response(answer)
                if 300 <= answer < 400:
                    self.send_header("Location", f"http://127.0.0.1:{hook.port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    made: list[Hook] = []

    def make(*script: int | str) -> Hook:
        made.append(Hook(*script))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture
def notifying(tmp_path):
    """A controller with webhooks: notifying(notify=[...], notify_allow=[...])."""
    started: list[Controller] = []

    def start(**kwargs: object) -> Controller:
        ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / f"state{len(started)}", heartbeat=0.5,
                         liveness=4, **kwargs)
        started.append(ctl.start())
        return ctl

    yield start
    for ctl in started:
        ctl.stop(shutdown_agents=True)


def finished_event(run: str = "r-1") -> Event:
    return Event(1, time.time(), "run.finished", run, None, None,
                 {"state": "done", "done": 2, "failed": 0, "elapsed_s": 1.5, "error": None, "project": "p",
                  "media_type": "synthetic", "total": 2, "reused": 0, "units": None, "outputs": [],
                  "outputs_total": 0, "output_dir": "/x", "failures": []})


# -- real runs -------------------------------------------------------------------------------------


def test_a_finished_and_a_failed_run_post_their_summaries(notifying, hook, agents, synthetic):
    receiver = hook()
    ctl = notifying(notify=[receiver.url("/done")])
    agents(ctl.url, 2)
    summary = submit(ctl.url, load_project(synthetic(jobs=8, units_per_job=2, log_collations=True)))
    assert summary.ok
    wait_for(lambda: receiver.requests, 30, "the webhook")
    first = receiver.requests[0]
    assert first["path"] == "/done"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["headers"]["X-Farm-Event"] == "run.finished"
    assert len(first["headers"]["X-Farm-Delivery"]) == 32
    body = first["body"]
    assert body["run"] == summary.id and body["project"] == "synth" and body["media_type"] == "synthetic"
    assert body["state"] == "done" and body["error"] is None and body["failures"] == []
    assert body["jobs"] == {"total": 8, "done": 8, "failed": 0, "reused": 0}
    assert body["units"]["name"] == "items" and body["units"]["done"] == body["units"]["total"] == 16
    assert body["elapsed_s"] > 0 and body["outputs"] == summary.outputs and body["outputs_total"] == 1
    assert body["output_dir"] == summary.output_dir

    failing = submit(ctl.url, load_project(synthetic(jobs=3, fail=["job-0000001"], name="broken",
                                                     extra="[jobs]\nmax_attempts = 1\n")))
    assert failing.state == "failed"
    wait_for(lambda: len(receiver.requests) == 2, 30, "the second webhook")
    body = receiver.requests[1]["body"]
    assert body["run"] == failing.id and body["state"] == "failed" and body["project"] == "broken"
    assert body["jobs"] == {"total": 3, "done": 2, "failed": 1, "reused": 0}
    assert body["failures"] == [{"job": "job-0000001", "error": "RenderError: job-0000001 is set to fail",
                                 "attempts": 1}]
    wait_for(lambda: ctl.notifier.sent == 2, 30, "the notifier to count the second post")  # counted after its answer
    assert ctl.notifier.given_up == 0


def test_a_cancelled_run_is_told_too(notifying, hook, synthetic):
    receiver = hook()
    ctl = notifying(notify=[receiver.url()])
    run = Background(ctl.url, synthetic(jobs=5, units_per_job=3))  # no agents: it waits
    wait_for(lambda: ctl.status()["projects"], 60, "the run")
    run_id = ctl.status()["projects"][0]["id"]
    with Client(ctl.url) as client:
        client.cancel(run_id)
    wait_for(lambda: receiver.requests, 30, "the webhook")
    body = receiver.bodies()[0]
    assert body["run"] == run_id and body["state"] == "cancelled"
    assert body["jobs"]["done"] == 0 and body["units"]["total"] == 15 and body["units"]["done"] == 0
    run.thread.join(30)


def test_a_hanging_hook_delays_neither_the_run_nor_the_other_hooks(notifying, hook, agents, synthetic):
    stuck, receiver = hook(HANG, HANG), hook()
    ctl = notifying(notify=[stuck.url(), receiver.url()])
    ctl.notifier.timeout = 60.0  # it hangs for as long as the test wants
    agents(ctl.url, 1)
    first = submit(ctl.url, load_project(synthetic(jobs=3)))
    wait_for(lambda: stuck.hanging == 1 and receiver.requests, 30, "one hook hanging, the other served")
    started = time.monotonic()
    second = submit(ctl.url, load_project(synthetic(jobs=3, name="second")))
    took = time.monotonic() - started
    assert first.ok and second.ok
    # both runs' hooks to it are held (until released below), and nothing waited on them
    wait_for(lambda: len(receiver.requests) == 2 and stuck.hanging == 2, 30, "the second run's webhooks")
    assert took < 30, took
    assert [b["run"] for b in receiver.bodies()] == [first.id, second.id]
    stuck.release.set()
    wait_for(lambda: ctl.notifier.sent == 4, 30, "the held hooks to finish")


def test_a_timed_out_hook_is_given_up_and_the_controller_stops_promptly(notifying, hook, agents, synthetic):
    stuck = hook(HANG, HANG, HANG)
    ctl = notifying(notify=[stuck.url()])
    ctl.notifier.timeout, ctl.notifier.attempts, ctl.notifier.backoff = 0.5, 2, 0.05
    agents(ctl.url, 1)
    assert submit(ctl.url, load_project(synthetic(jobs=2))).ok
    wait_for(lambda: ctl.notifier.given_up == 1, 30, "the hook given up")
    assert len(stuck.requests) == 2  # two tries, each cut off by the timeout
    submit(ctl.url, load_project(synthetic(jobs=2)))
    wait_for(lambda: len(stuck.requests) == 3, 30, "the third try")
    started = time.monotonic()
    ctl.stop(shutdown_agents=True)
    assert time.monotonic() - started < 15  # the loop's own stop, plus the notifier's grace at most


def test_project_hooks_go_only_to_hosts_the_controller_allows(notifying, hook, agents, synthetic):
    receiver = hook()
    ctl = notifying(notify_allow=["hooks.example.org"])
    agents(ctl.url, 1)
    project = synthetic(jobs=2, extra=f'[notify]\nwebhook = "{receiver.url()}"\n')
    refused = submit(ctl.url, load_project(project))
    assert refused.ok
    assert ctl.events.drain(10)
    assert ctl.notifier.skipped == [(refused.id, "127.0.0.1")]
    # the submitter is told, not only the controller's log (it would wait for a notification)
    assert refused.notes == ["not sending the project's webhook to 127.0.0.1: this controller does not allow "
                             "that host (farm controller --notify-allow 127.0.0.1)"], refused.notes
    ctl.notifier.close(0)  # nothing was queued: nothing is sent
    assert receiver.requests == []

    allowing = notifying(notify_allow=["127.0.0.1"])
    agents(allowing.url, 1)
    allowed = submit(allowing.url, load_project(project))
    wait_for(lambda: receiver.requests, 30, "the project's webhook")
    assert receiver.requests[0]["body"]["run"] == allowed.id and allowing.notifier.skipped == []
    assert allowed.notes == [], allowed.notes


def test_the_embedded_farm_sends_the_projects_webhook_before_it_exits(hook, synthetic):
    receiver = hook()
    hooks = json.dumps([receiver.url("/a"), receiver.url("/b")])
    project = synthetic(jobs=3, extra=f"[notify]\nwebhook = {hooks}\n")
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(project), "--agents", "1", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # still one JSON object, and nothing else
    assert summary["jobs"]["done"] == 3
    assert sorted(r["path"] for r in receiver.requests) == ["/a", "/b"]  # sent before the process ended
    assert {r["body"]["state"] for r in receiver.requests} == {"done"}


# -- retries, without a run ------------------------------------------------------------------------


def test_a_hook_failing_twice_is_retried_with_backoff_until_it_succeeds(hook):
    receiver = hook(500, 503)
    notifier = Notifier([receiver.url()], backoff=0.1)
    notifier(finished_event())
    wait_for(lambda: notifier.sent == 1, 30, "the third try")
    assert notifier.given_up == 0 and len(receiver.requests) == 3
    assert len({r["headers"]["X-Farm-Delivery"] for r in receiver.requests}) == 1  # one delivery, three tries
    assert receiver.bodies()[0] == receiver.bodies()[2] and receiver.bodies()[0]["run"] == "r-1"
    t = [r["time"] for r in receiver.requests]
    assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2  # the wait doubles
    notifier.close()


@pytest.mark.parametrize(("script", "tries"), [
    ((404,), 1),  # the receiver says no: another try cannot help
    ((302,), 1),  # a redirect is not followed (it could lead past the host rule)
    ((500, 500, 500), 3),
    ((429, 429, 429), 3),
])
def test_hooks_that_keep_failing_are_given_up(hook, script, tries):
    receiver = hook(*script)
    notifier = Notifier([receiver.url()], attempts=3, backoff=0.02)
    notifier(finished_event())
    wait_for(lambda: notifier.given_up == 1, 30, "giving up")
    assert notifier.sent == 0 and len(receiver.requests) == tries
    assert all(r["path"] == "/hook" for r in receiver.requests)  # never /elsewhere
    notifier.close()


def test_an_unreachable_hook_is_given_up(hook):
    gone = hook()
    url = gone.url()
    gone.close()  # nothing listens on its port any more
    notifier = Notifier([url], attempts=2, backoff=0.02)
    notifier(finished_event())
    wait_for(lambda: notifier.given_up == 1, 30, "giving up")
    notifier.close()


def test_nothing_is_sent_once_the_grace_after_closing_has_run_out(hook):
    receiver = hook()
    notifier = Notifier([receiver.url()])
    notifier.close(0)
    notifier(finished_event())
    wait_for(lambda: notifier.given_up == 1, 30, "the late delivery dropped")
    assert receiver.requests == [] and notifier.sent == 0


# -- where URLs enter ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ('"ftp://hooks.example.org/x"', "only http:// and https:// webhooks are sent"),
    ('"file:///etc/passwd"', "only http:// and https://"),
    ('"https://"', "names no host"),
    ('"hooks.example.org/x"', "only http:// and https://"),
    ('"https://hooks.example.org:99999/"', "is not a URL"),
    ('"https://hooks.example.org/a b"', "whitespace or control characters"),
    ("42", "expected a list of strings"),
    (f'"https://hooks.example.org/{"x" * MAX_URL}"', f"at most {MAX_URL}"),
    ("[" + ", ".join(['"https://a.example.org/"'] * 9) + "]", "9 webhooks; at most 8"),
])
def test_a_bad_webhook_in_farm_toml_names_file_line_and_key(synthetic, value, message):
    project = synthetic(jobs=1, extra=f"[notify]\n# who hears of it\nwebhook = {value}\n")
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    text = str(caught.value)
    assert "farm.toml:6: [notify] webhook: " in text and message in text, text


def test_an_unknown_notify_key_is_named(synthetic):
    project = synthetic(jobs=1, extra='[notify]\nwebhok = "https://hooks.example.org/"\n')
    with pytest.raises(ProjectError, match=r"farm.toml:5: \[notify\] webhok: unknown key"):
        load_project(project)


def test_good_webhooks_and_hosts_pass():
    for url in ("https://hooks.example.org/x?y=1", "http://127.0.0.1:8080/", "https://[::1]/h",
                "HTTPS://user:pw@Hooks.Example.org/"):
        assert check_webhook(url) == url
    assert [check_host(h) for h in ("Hooks.Example.ORG", "[::1]", "10.0.0.1", "*")] == [
        "hooks.example.org", "::1", "10.0.0.1", "*"]
    for bad in ("", "a b", "-" * 300, "x..y", "a/b"):
        with pytest.raises(BadWebhook):
            check_host(bad)
    notifier = Notifier(allow=["hooks.example.org"])
    assert notifier.allows("https://HOOKS.example.org:8443/x") and notifier.allows("http://hooks.example.org./")
    for elsewhere in ("https://127.0.0.1/", "https://hooks.example.org.evil.net/", "https://evil.net/hooks.example.org",
                      "https://hooks.example.org@evil.net/", "http://2130706433/"):
        assert not notifier.allows(elsewhere), elsewhere
    assert Notifier(allow=["*"]).allows("http://10.1.2.3/")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--notify", "ftp://x", "only http:// and https://"),
    ("--notify-allow", "a b", "is not a host name"),
])
def test_controller_flags_are_checked(tmp_path, flag, value, message):
    done = subprocess.run([sys.executable, "-m", "farm", "controller", flag, value, "--state-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
