"""The webhook logs name the hook: its URL without credentials, query or fragment."""

from __future__ import annotations

import logging
import time

from conftest import wait_for

from farm.controller.events import Event
from farm.notify import Notifier, webhook_shown


def finished() -> Event:
    return Event(
        1,
        time.time(),
        "run.finished",
        "r-1",
        None,
        None,
        {
            "state": "done",
            "done": 1,
            "failed": 0,
            "elapsed_s": 0.5,
            "error": None,
            "project": "p",
            "media_type": "synthetic",
            "total": 1,
            "reused": 0,
            "units": None,
            "outputs": [],
            "outputs_total": 0,
            "output_dir": "/x",
            "failures": [],
        },
    )


def test_the_log_names_which_hook_failed_and_keeps_its_secrets(caplog):
    import socket

    with socket.socket() as free:  # a port nothing listens on once closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    dead = f"http://user:pass@127.0.0.1:{port}/dead-port?token=s3cret#frag"
    caplog.set_level(logging.WARNING, logger="farm.notify")
    notifier = Notifier([dead], attempts=1, backoff=0.01)
    notifier(finished())
    wait_for(lambda: notifier.given_up == 1, 30, "giving up")
    notifier.close()
    (record,) = [r for r in caplog.records if "failed after" in r.getMessage()]
    message = record.getMessage()
    assert f"webhook to http://127.0.0.1:{port}/dead-port failed after 1 try:" in message, message
    assert "s3cret" not in message and "pass" not in message and "frag" not in message


def test_webhook_shown_drops_what_may_be_secret():
    assert (
        webhook_shown("https://a:b@Hooks.Example.org:8443/x/y?k=v#f") == "https://hooks.example.org:8443/x/y"
    )
    assert webhook_shown("http://[::1]:9/h") == "http://[::1]:9/h"
    assert webhook_shown("http://example.org") == "http://example.org"
