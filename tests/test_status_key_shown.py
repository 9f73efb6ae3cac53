"""`farm status` names the key each agent proved: an agent on the controller's machine proves the
controller's own key (named "controller" in its allowed/ folder), which read as `key controller`, as
if the agent were the controller."""

from __future__ import annotations

from farm.cli.status import status_text


def _agent(key: str | None) -> dict:
    return {"id": "render01", "host": "h", "state": "active", "jobs": 0, "slots": 1, "done": 0, "failed": 0,
            "last_heartbeat_s": 0.1, "capabilities": ["synthetic"], "key": key}


def test_the_controllers_own_key_is_said_as_such_and_other_keys_by_name():
    text = status_text({"controller": "tcp://x:1", "agents": [_agent("controller"), _agent("alice"),
                                                              _agent(None)], "projects": []})
    own, alice, plain = [line for line in text.splitlines() if "render01" in line]
    assert own.endswith("key: the controller's own (an agent on its machine)"), own
    assert alice.endswith("key alice"), alice
    assert "key" not in plain.split("synthetic")[-1], plain
