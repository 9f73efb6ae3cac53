"""A worker's results message (W_RESULTS): the RESULTS body its agent sends on, packed once.

The worker packs its results (`RESULT_ROW` arrays, as `JobResult.to_wire` makes them) as the body of the
RESULTS message the controller is to get, and sends those bytes with each result's lease and
duration beside them. The agent frees its slots from those two lists, and, when the message has
no files and its jobs are the first its slot was running, sends the bytes on without decoding
them (`farm.agent.outbox.Forwarded`): the controller decodes and checks them as it does every
RESULTS message. Otherwise the agent decodes and checks them first (`read`).
"""

from __future__ import annotations

import operator
from typing import Any

import msgpack

from farm.errors import ProtocolError
from farm.protocol import MAX_BODY, R_DURATION, R_LEASE, T, pack_body, unpack

_LEASE, _DURATION = operator.itemgetter(R_LEASE), operator.itemgetter(R_DURATION)


def packed(results: list[list[Any]]) -> bytes:
    """The W_RESULTS body for these `RESULT_ROW` arrays. Raises msgpack's TypeError, ValueError or
    OverflowError for a value it cannot carry, and ValueError for a body over `MAX_BODY` bytes."""
    inner = msgpack.packb({"results": results}, use_bin_type=True)
    body = msgpack.packb({"leases": list(map(_LEASE, results)), "durations": list(map(_DURATION, results)),
                          "results": inner}, use_bin_type=True)
    if len(body) > MAX_BODY:
        raise ValueError(f"results of {len(body)} bytes exceed a message's {MAX_BODY}")
    return body


def read(body: dict[str, Any]) -> list[list[Any]]:
    """The `RESULT_ROW` arrays inside a W_RESULTS body (its shape checked by `farm.protocol.unpack`), decoded
    and checked as a RESULTS message's are; raises `ProtocolError`, also when their leases are not
    the ones the body lists beside them."""
    results = unpack(pack_body(T.RESULTS, body["results"])).body["results"]
    if list(map(_LEASE, results)) != body["leases"]:
        raise ProtocolError("W_RESULTS: its results are not for the leases it lists")
    return results
