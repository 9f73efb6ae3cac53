"""An event stream let in with an API token ends when that token is revoked.

Every request is checked as it comes, but the event stream is one request that lasts: it went on
streaming the farm's events to a revoked token for as long as its reader kept it open.
Real HTTP server and controller, real requests; waits on the stream's own messages.
"""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

import itertools

import requests
from http_helpers import TIMEOUT, sse, start_http_farm

from farm.http.tokens import TokenStore

ENDS_WITHIN = 100  # messages: keep-alives come every 0.5 s; the token file is read again each second


def test_a_stream_ends_with_an_error_when_its_token_is_revoked(tmp_path):
    keys = tmp_path / "keys"
    tokens = TokenStore(keys)
    ops, dash = tokens.new("ops"), tokens.new("dash")
    web = start_http_farm(tmp_path / "state", keys=keys)
    try:
        def open_stream(token: str) -> requests.Response:
            return requests.get(web.base + "/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                                stream=True, timeout=TIMEOUT)

        revoked, kept = open_stream(ops), open_stream(dash)
        assert revoked.status_code == 200 and kept.status_code == 200
        messages, kept_messages = sse(revoked), sse(kept)
        assert next(m for m in messages if m.id is not None)  # streaming: its first id came
        assert next(m for m in kept_messages if m.id is not None)
        tokens.revoke("ops")
        rest = list(itertools.islice(messages, ENDS_WITHIN))
        assert len(rest) < ENDS_WITHIN, "the stream went on after its token was revoked"
        assert rest and rest[-1].event == "error", rest[-3:]
        assert "revoked" in rest[-1].json()["error"] and rest[-1].json()["code"] == "token_revoked"
        assert open_stream(ops).status_code == 401  # and a reconnect is refused
        assert next(m for m in kept_messages if m.comment or m.data)  # the other token's stream goes on
        kept.close()
    finally:
        web.controller.stop()
