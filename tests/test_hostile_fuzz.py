"""Fuzz: random and mutated messages of every type at a live controller while an honest project renders.

Messages are made from the protocol's own shapes (`farm.protocol.SHAPES`), then mutated:
fields dropped or given values of other types, odd strings (NUL, ``..``, very long),
extreme numbers, deep nesting, extra or missing frames, raw bytes. Seeded and bounded,
so a failure replays. The project must finish with every output correct, and the
controller must still be up and answering.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import msgpack
import pytest
import zmq
from conftest import Background, wait_for
from farm_synthetic import job_key, payload
from hostile_helpers import status_round_trip

from farm.client import submit
from farm.controller.server import Controller
from farm.filesync import wire
from farm.project import load_project
from farm.protocol import ANY, PROTOCOL_VERSION, SHAPES, T, pack

ODD_STRINGS = ["", "\x00", "a\x00b", "../../etc/passwd", "/", "/etc", "/dev/zero", "/proc/self", "x" * 5000,
               "é" * 100, "\ud7ff", "{}", "%s%n", "synthetic\x00"]
ODD_NUMBERS = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, math.nan, math.inf, -math.inf, -0.0, 1e308]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 5)
    if pick == 0:
        return rng.choice(ODD_STRINGS)
    if pick == 1:
        return rng.choice(ODD_NUMBERS)
    if pick == 2:
        return rng.choice([None, True, False])
    if pick == 3:
        return rng.randbytes(rng.randrange(0, 64))
    if pick == 4:
        return "".join(rng.choice("abc/._-\x00") for _ in range(rng.randrange(1, 30)))
    if pick in (5, 6):
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    nested: Any = 1
    for _ in range(rng.randrange(1, 200)):
        nested = [nested] if rng.random() < 0.5 else {"k": nested}
    return nested


def shaped(spec: Any, rng: random.Random) -> Any:
    """A value of the shape ``spec`` describes, with odd but well-typed contents."""
    if spec is ANY:
        return odd_value(rng)
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "optional":
        return None if rng.random() < 0.3 else shaped(spec[1], rng)
    if isinstance(spec, dict):
        return {key: shaped(sub, rng) for key, sub in spec.items()}
    if isinstance(spec, list):
        return [shaped(spec[0], rng) for _ in range(rng.randrange(0, 4))]
    types = spec if isinstance(spec, tuple) else (spec,)
    kind = rng.choice(types)
    if kind is str:
        text = rng.choice(ODD_STRINGS + ["fuzz-" + str(rng.randrange(10**6))])
        return text if not text.startswith("synth") else "fuzz"  # never the honest run's name or media type
    if kind is bool:
        return rng.random() < 0.5
    if kind is int:
        return rng.choice([n for n in ODD_NUMBERS if isinstance(n, int)])
    if kind is float:
        return rng.choice([n for n in ODD_NUMBERS if isinstance(n, float)])
    return odd_value(rng)


def mutated(body: Any, rng: random.Random) -> Any:
    if not isinstance(body, dict) or not body:
        return odd_value(rng)
    body = dict(body)
    key = rng.choice(list(body))
    action = rng.randrange(4)
    if action == 0:
        del body[key]
    elif action == 1:
        body[key] = odd_value(rng)
    elif action == 2:
        body[rng.choice(ODD_STRINGS) or "extra"] = odd_value(rng)
    else:
        body[key] = [body[key]] * rng.randrange(0, 3)
    return body


def message(kind: T, rng: random.Random) -> list[bytes]:
    """One fuzzed message of type ``kind``: shaped, mutated, or broken at the frame level."""
    spec = SHAPES[kind]
    body = shaped(spec, rng)
    if kind is T.SUBMIT and rng.random() < 0.5:  # its project is ANY on the wire; give it a root to trip on
        body["project"] = {"root": rng.choice(ODD_STRINGS), "output": rng.choice([None, *ODD_STRINGS])}
    way = rng.randrange(6)
    if way == 0:
        return pack(kind, body if isinstance(body, dict) else {})
    if way == 1:
        return pack(kind, mutated(body, rng))
    if way == 2:  # payload frames the body does not account for
        return [*pack(kind, body if isinstance(body, dict) else {}), *(rng.randbytes(8) for _ in range(3))]
    if way == 3:  # a body that is not msgpack, or is msgpack of a non-map, or is truncated
        raw = msgpack.packb(body, use_bin_type=True)
        return [bytes((PROTOCOL_VERSION, kind)), rng.choice([raw[: len(raw) // 2], b"\x91" * 5000 + b"\xc0",
                                                             msgpack.packb([1, 2]), rng.randbytes(40)])]
    if way == 4:  # another protocol version, or a header of the wrong length
        return [rng.choice([bytes((PROTOCOL_VERSION + 1, kind)), bytes((PROTOCOL_VERSION, kind, 0)), b""]),
                msgpack.packb({}, use_bin_type=True)]
    return [rng.randbytes(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 4))]


def fs_request(rng: random.Random) -> list[bytes]:
    op = rng.choice([wire.MANIFEST, wire.GET, wire.OFFER, wire.PUT, wire.COMMIT, wire.ABORT, "nope"])
    spec = wire.REQUESTS.get(op, {"op": str})
    body = {**shaped(spec, rng), "op": op}
    if rng.random() < 0.5:
        body = mutated(body, rng)
    return wire.request_frames(op, rng.randrange(2**31), {}) if rng.random() < 0.1 else \
        [bytes((PROTOCOL_VERSION, T.FS_REQUEST)), msgpack.packb(body, use_bin_type=True)]


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_messages_of_every_type_while_an_honest_project_renders(controller, agents, synthetic, seed,
                                                                      caplog):
    """Every handler copes: no message ends in an unexpected exception (fenced or not), nothing crashes."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(seed)
    agents(controller.url, 2)
    project = synthetic(jobs=200, output_bytes=8, log_collations=True, sleep=0.005)
    honest = Background(controller.url, project)
    context = zmq.Context.instance()
    fuzzers = []
    for i in range(6):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(controller.url if i < 5 else controller.assets.endpoint)
        fuzzers.append(sock)
    try:
        # some pose as agents first (capabilities never include the honest run's media type)
        for sock in fuzzers[:2]:
            sock.send_multipart(pack(T.HELLO, {"agent": "fuzz", "host": "x", "pid": 1, "slots": 2, "prefetch": 0,
                                               "caps": ["fuzz"], "held": [], "version": "0"}))
        kinds = list(T)
        for n in range(3000):
            if n % 10 == 9:
                fuzzers[5].send_multipart(fs_request(rng), zmq.NOBLOCK)
            else:
                rng.choice(fuzzers[:5]).send_multipart(message(kinds[n % len(kinds)], rng), zmq.NOBLOCK)
        assert status_round_trip(controller.url, timeout=10) < 5
        wait_for(honest.done, 120, "the honest project to finish")
    finally:
        for sock in fuzzers:
            sock.close(0)
    assert honest.error is None, honest.error
    assert honest.summary is not None and honest.summary.ok and honest.summary.done == 200, honest.summary
    keys = [job_key(i) for i in range(200)]
    assert sorted((project / "output" / "collated.log").read_text().split()) == keys
    for key in keys:
        assert (project / "output" / f"{key}.bin").read_bytes() == payload(key, 8)
    assert controller.crash is None and controller.stats["bad_messages"] > 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors and controller.stats["handler_errors"] == 0, errors[:5]
    assert status_round_trip(controller.url) < 5


class StumblingController(Controller):
    """A controller whose every third dispatch turn raises, as a state a peer provoked might make it."""

    turns = 0

    def _dispatch(self, now: float) -> None:
        self.turns += 1
        if self.turns % 3 == 0:
            raise RuntimeError("a state no handler foresaw")
        super()._dispatch(now)


def test_an_error_in_a_loop_turn_is_logged_and_the_loop_goes_on(tmp_path, agents, synthetic):
    ctl = StumblingController("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4).start()
    try:
        agents(ctl.url, 1)
        assert submit(ctl.url, load_project(synthetic(jobs=20))).ok
        assert ctl.crash is None and ctl.stats["loop_errors"] > 0
    finally:
        ctl.stop(shutdown_agents=True)
