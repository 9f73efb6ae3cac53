"""Helpers for the HTTP API tests: a controller with its HTTP server, and a Server-Sent Events reader."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from farm.client import Summary, submit
from farm.controller.server import Controller
from farm.http.server import HttpServer
from farm.project import load_project

JSON = {"Content-Type": "application/json"}  # what a control action must declare
TIMEOUT = (5, 30)  # connect, read (seconds): nothing waits forever


@dataclass
class HttpFarm:
    controller: Controller
    http: HttpServer
    base: str  # e.g. http://127.0.0.1:41234

    @property
    def auth(self) -> dict[str, str]:
        """The owner's credential: the server's session token (loopback), as a header."""
        token = self.http.access.session_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _headers(self, kwargs: dict[str, Any], *more: dict[str, str]) -> dict[str, str]:
        """The request's headers: the session token's (unless `auth=False`), `more`, the test's own."""
        own = self.auth if kwargs.pop("auth", True) else {}
        return {k: v for d in (own, *more, kwargs.pop("headers", None) or {}) for k, v in d.items()}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = self._headers(kwargs)
        return requests.get(self.base + path, headers=headers, timeout=TIMEOUT, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = self._headers(kwargs, JSON)
        return requests.post(self.base + path, data=json.dumps(body if body is not None else {}),
                             headers=headers, timeout=TIMEOUT, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        headers = self._headers(kwargs, JSON)
        return requests.patch(self.base + path, data=json.dumps(body), headers=headers, timeout=TIMEOUT,
                              **kwargs)


def start_http_farm(state: Path, host: str = "127.0.0.1", *, keys: Path | None = None, keepalive_s: float = 0.5,
                    connect_host: str | None = None, **options: Any) -> HttpFarm:
    """A controller on a loopback port with its HTTP API on `host` (any free port)."""
    http = HttpServer(host, 0, keys_dir=keys or state / "keys", keepalive_s=keepalive_s, **options)
    ctl = Controller("tcp://127.0.0.1:0", state_dir=state, heartbeat=0.5, liveness=4, http=http)
    ctl.start()
    return HttpFarm(ctl, http, f"http://{connect_host or host}:{http.port}")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HttpFarm]:
    """A controller on loopback with its HTTP API (its session token: `HttpFarm.auth`), stopped after
    the test with its agents."""
    farm = start_http_farm(tmp_path / "state")
    yield farm
    farm.controller.stop(shutdown_agents=True)


class Submitted:
    """`submit` in a thread; the test steers the run through HTTP meanwhile."""

    def __init__(self, url: str, project: Path) -> None:
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(url, project), daemon=True)
        self.thread.start()

    def _run(self, url: str, project: Path) -> None:
        try:
            self.summary = submit(url, load_project(project))
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 120) -> Summary:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


@dataclass
class SseMessage:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    comment: bool = False

    def json(self) -> Any:
        return json.loads("\n".join(self.data))


def sse(response: requests.Response) -> Iterator[SseMessage]:
    """The messages of an event stream, as the EventSource specification splits them (comments too)."""
    message = SseMessage()
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if line == "":
            if message.data or message.id is not None or message.comment or message.event:
                yield message
            message = SseMessage()
        elif line.startswith(":"):
            message.comment = True
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                message.data.append(value)
            elif name == "id":
                message.id = value
            elif name == "event":
                message.event = value


def outside_address() -> str:
    """An address of this machine that is not loopback (what `hostname -I` lists first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        raise RuntimeError("this machine has no non-loopback IPv4 address")
    return address
