"""Counts in the controller's messages agree with their number: "1 slot", "2 slots"."""

from __future__ import annotations

import logging

from conftest import wait_for


def test_the_controller_says_an_agents_slots_in_the_right_number(controller, agents, caplog):
    caplog.set_level(logging.INFO, logger="farm.controller.agents")
    agents(controller.url, 1, slots=1)
    agents(controller.url, 1, slots=2)

    def joined() -> list[str]:
        return [r.getMessage() for r in caplog.records if " joined from " in r.getMessage()]

    said = wait_for(lambda: len(joined()) == 2 and joined(), 120, "both agents to join")
    assert any(" with 1 slot (" in line for line in said), said
    assert any(" with 2 slots (" in line for line in said), said
