"""The wait for a silent controller is said once: "...; the controller may be restarting: waiting
up to 10 min for it...", not prefixed by a second "controller restarting?"."""

from __future__ import annotations

import logging

from farm.cli.submit import say_waiting


def test_the_wait_for_a_restarting_controller_says_restarting_once(caplog):
    why = "no answer from tcp://h:5555; the controller may be restarting: waiting up to 10 min for it"
    with caplog.at_level(logging.WARNING):
        say_waiting(why)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.count("restarting") == 1 and said.startswith("no answer from tcp://h:5555"), said
