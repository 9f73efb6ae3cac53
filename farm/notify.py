"""Webhooks: a JSON summary POSTed when a run ends (done, failed or cancelled).

Two sources of hooks (docs/notify.md):

- the controller's own (``farm controller --notify URL``, ``Controller(notify=[...])``): for
  every run;
- a project's (``[notify] webhook = "https://..."`` in ``farm.toml``): for that project's runs,
  but only where the controller allows the hook's host (``--notify-allow HOST``). A project
  comes from a submitter, and its hook makes the *controller* send a request: unchecked, a
  remote submitter could aim it at addresses only the controller reaches (SSRF). The
  embedded farm (``farm submit DIR``) allows every host: submitter and controller are the
  same user on the same machine.

A `Notifier` is an event-stream observer (``controller.events.observe``): it only queues a
delivery; deliveries run in threads of their own, each retried with exponential backoff
(`ATTEMPTS` tries, `BACKOFF_S`, doubled each time: about a minute), each try bounded by
`TIMEOUT_S` per connect and read. Redirects are not followed (a redirect could lead past the
host rule). A failing or hanging hook never delays the run, the loop or other observers.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from farm.words import counted

log = logging.getLogger(__name__)

MAX_URL = 2048  # characters of a webhook URL
MAX_HOOKS = 8  # webhooks per project
ATTEMPTS = 5  # tries per delivery
BACKOFF_S = 4.0  # the wait before the second try; doubled before each next one (4+8+16+32 s)
TIMEOUT_S = 10.0  # per connect and per read of one try
MAX_QUEUED = 256  # deliveries waiting for a sender; beyond it the oldest is dropped (logged)
SENDERS = 4  # deliveries at once: one hanging hook does not hold up the others
CLOSE_GRACE_S = 5.0  # on shutdown, how long deliveries still under way may take
MAX_OUTPUTS = 100  # output paths in a notification (and in the run.finished event)
MAX_FAILURES = 20  # failed jobs listed in a notification, each error cut to MAX_ERROR characters
MAX_ERROR = 500
ALLOW_ANY = "*"


class BadWebhook(ValueError):
    """A webhook URL that cannot be used; the message says why."""


def check_webhook(url: object) -> str:
    """The URL if it is a usable webhook: ``http`` or ``https``, a host, at most `MAX_URL`
    characters, no whitespace or control characters. Raises `BadWebhook` saying why not."""
    if not isinstance(url, str):
        raise BadWebhook(f"expected a URL string, got {url!r}")
    if len(url) > MAX_URL:
        raise BadWebhook(f"is {len(url)} characters long; at most {MAX_URL}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise BadWebhook(f"{url[:80]!r} holds whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise BadWebhook(f"{url[:80]!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadWebhook(f"{url[:80]!r}: only http:// and https:// webhooks are sent")
    if not parts.hostname:
        raise BadWebhook(f"{url[:80]!r} names no host")
    return url


def webhook_host(url: str) -> str:
    """The host a webhook is sent to, lowercase, without port, brackets or a trailing dot."""
    return (urllib.parse.urlsplit(url).hostname or "").lower().rstrip(".")


def webhook_shown(url: str) -> str:
    """A webhook as logs name it: ``scheme://host:port/path``, without credentials, query or
    fragment (where tokens tend to live), so two hooks on one host can be told apart."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc += f":{port}" if port is not None else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_host(host: str) -> str:
    """A host for ``--notify-allow``: a name, an IP address, or ``*`` (any host). Raises `BadWebhook`."""
    host = host.strip().lower().strip("[]")
    if host == ALLOW_ANY:
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(
            label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) for label in labels):
        raise BadWebhook(f"{host[:80]!r} is not a host name, an IP address or {ALLOW_ANY!r}")
    return host.rstrip(".")


def finished_details(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``run.finished`` event carries beyond its state and counts: enough for a
    notification (`ProjectRun.summary` in; at most `MAX_OUTPUTS` output paths and
    `MAX_FAILURES` failed jobs out, without their logs)."""
    outputs = list(summary.get("outputs") or ())
    failures = [{"job": f["job"], "error": str(f["error"])[:MAX_ERROR], "attempts": f["attempts"]}
                for f in (summary.get("failures") or ())[:MAX_FAILURES]]
    return {"project": summary["project"], "media_type": summary["media_type"],
            "total": summary["jobs"]["total"], "reused": summary["jobs"]["reused"],
            "units": summary.get("units"), "outputs": outputs[:MAX_OUTPUTS], "outputs_total": len(outputs),
            "output_dir": summary.get("output_dir"), "failures": failures,
            "notes": list(summary.get("notes") or ())}


def notification(event: Any) -> dict[str, Any]:
    """The JSON body POSTed for a ``run.finished`` event (`farm.controller.events.Event`)."""
    data = event.data
    return {
        "event": "run.finished",
        "time": event.time,
        "run": event.run,
        "project": data.get("project"),
        "media_type": data.get("media_type"),
        "state": data.get("state"),
        "jobs": {"total": data.get("total"), "done": data.get("done"), "failed": data.get("failed"),
                 "reused": data.get("reused")},
        "units": data.get("units"),
        "elapsed_s": data.get("elapsed_s"),
        "error": data.get("error"),
        "outputs": data.get("outputs", []),
        "outputs_total": data.get("outputs_total", 0),
        "output_dir": data.get("output_dir"),
        "failures": data.get("failures", []),
    }


@functools.cache
def _opener() -> Any:
    """urllib's opener that follows no redirect; built on the first webhook. urllib.request (with
    http.client, email and ssl) costs tens of ms to import, which every `farm` command paid."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx then surfaces as an HTTPError: a redirect could lead past the host rule

    return urllib.request.build_opener(NoRedirect)


class Notifier:
    """Sends webhooks for finished runs; an observer of the controller's event stream.

    :param webhooks: the controller's own hooks, for every run (checked with `check_webhook`).
    :param allow: hosts whose project hooks are honoured; ``"*"`` among them honours all.
    :param project_hooks: run id -> that run's project hooks (``[notify] webhook``); asked on
        the run's ``run.submitted`` event, from the observer thread.
    :param attempts, backoff, timeout: tries per delivery, the first wait between tries in
        seconds (doubled each time), and the per connect/read timeout in seconds.

    ``sent`` and ``given_up`` count deliveries; ``skipped`` lists (run, host) of project hooks
    refused by the host rule.
    """

    def __init__(self, webhooks: Iterable[str] = (), allow: Iterable[str] = (), *,
                 project_hooks: Callable[[str], Sequence[str]] = lambda run: (),
                 attempts: int = ATTEMPTS, backoff: float = BACKOFF_S, timeout: float = TIMEOUT_S) -> None:
        self.webhooks = [check_webhook(url) for url in webhooks]
        self.allow = {check_host(host) for host in allow}
        self.project_hooks = project_hooks
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.sent = 0
        self.given_up = 0
        self.skipped: list[tuple[str, str]] = []
        self._runs: dict[str, list[str]] = {}  # run id -> its project hooks that passed the host rule
        self._queue: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._ready = threading.Condition()
        self._closing = threading.Event()
        self._deadline = float("inf")  # monotonic: after close(), when deliveries stop trying
        self._senders: list[threading.Thread] = []

    def allows(self, url: str) -> bool:
        """Whether a project's hook may be sent: its host is allowed (or every host is)."""
        return ALLOW_ANY in self.allow or webhook_host(url) in self.allow

    # -- the observer (the event thread) -------------------------------------------------

    #: the events it acts on (`EventBus.observe`'s types: it is handed no others)
    EVENT_TYPES = frozenset({"run.submitted", "run.finished"})

    def __call__(self, event: Any) -> None:
        if event.type == "run.submitted":
            self._runs[event.run] = self._admitted(event.run)
        elif event.type == "run.finished":
            urls = list(dict.fromkeys([*self.webhooks, *self._runs.pop(event.run, ())]))
            if urls:
                body = json.dumps(notification(event), default=str).encode()
                for url in urls:
                    self._enqueue(url, body, event.run)

    def _admitted(self, run_id: str) -> list[str]:
        admitted = []
        for url in self.project_hooks(run_id) or ():
            if self.allows(url):
                admitted.append(url)
            else:
                host = webhook_host(url)
                self.skipped.append((run_id, host))  # said as the run's note when it was submitted
        return admitted

    def _enqueue(self, url: str, body: bytes, run_id: str) -> None:
        with self._ready:
            if len(self._queue) >= MAX_QUEUED:
                dropped = self._queue.popleft()
                self.given_up += 1
                log.warning("%s: too many webhooks waiting; dropped the one to %s", dropped[2],
                            webhook_shown(dropped[0]))
            self._queue.append((url, body, run_id))
            if len(self._senders) < SENDERS:
                sender = threading.Thread(target=self._send_loop, name="farm-notify", daemon=True)
                self._senders.append(sender)
                sender.start()
            self._ready.notify()

    # -- senders (threads of their own) -----------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing.is_set():
                    self._ready.wait()
                if not self._queue:
                    return
                url, body, run_id = self._queue.popleft()
            self._deliver(url, body, run_id)

    def _deliver(self, url: str, body: bytes, run_id: str) -> None:
        delivery = uuid.uuid4().hex  # the same on every try: a receiver can drop repeats
        host = webhook_shown(url)  # the URL, less what may be secret
        if time.monotonic() >= self._deadline:  # still queued when the grace ran out
            with self._ready:
                self.given_up += 1
            log.warning("%s: webhook to %s not sent: the controller stopped first", run_id, host)
            return
        wait = self.backoff
        for attempt in range(1, self.attempts + 1):
            error, retry = self._post(url, body, delivery)
            if error is None:
                with self._ready:  # counters shared by the sender threads
                    self.sent += 1
                log.info("%s: webhook to %s delivered (try %d)", run_id, host, attempt)
                return
            if not retry or attempt == self.attempts or time.monotonic() >= self._deadline:
                with self._ready:
                    self.given_up += 1
                log.warning("%s: webhook to %s failed after %s: %s", run_id, host, counted(attempt, "try", "tries"),
                            error)
                return
            log.info("%s: webhook to %s failed (try %d of %d): %s; again in %.1fs", run_id, host, attempt,
                     self.attempts, error, wait)
            self._closing.wait(wait)  # closing: the tries left go at once, until the grace ends
            wait *= 2

    def _post(self, url: str, body: bytes, delivery: str) -> tuple[str | None, bool]:
        """One try: (None, _) when delivered, else (why, whether another try may help)."""
        import urllib.error
        import urllib.request

        from farm import __version__

        opener = _opener()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"farm/{__version__}",
            "X-Farm-Event": "run.finished", "X-Farm-Delivery": delivery})
        try:
            with opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                return None, False
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                return f"HTTP {exc.code} redirect (not followed)", False
            return f"HTTP {exc.code} {exc.reason}", exc.code in (408, 425, 429) or exc.code >= 500
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}", True
        except ValueError as exc:  # a URL urllib cannot use (check_webhook lets few through)
            return f"{type(exc).__name__}: {exc}", False

    def close(self, grace: float = CLOSE_GRACE_S) -> None:
        """Let queued deliveries try for up to `grace` seconds more, then stop the senders."""
        self._deadline = time.monotonic() + grace
        with self._ready:
            self._closing.set()
            self._ready.notify_all()
        for sender in self._senders:
            sender.join(max(0.0, self._deadline - time.monotonic()))
