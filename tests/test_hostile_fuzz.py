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
from blake3 import blake3
from conftest import Background, wait_for
from farm_synthetic import job_key, payload
from hostile_helpers import Raw, status_round_trip
from wire_helpers import result_row

from farm.client import submit
from farm.controller.scheduler import Scheduler
from farm.controller.server import Controller
from farm.filesync import wire
from farm.project import load_project
from farm.protocol import ANY, PROTOCOL_VERSION, SHAPES, T, pack, unpack

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


class StumblingScheduler(Scheduler):
    """A scheduler whose every third dispatch turn raises, as a state a peer provoked might make it."""

    turns = 0

    def dispatch(self, now: float):
        self.turns += 1
        if self.turns % 3 == 0:
            raise RuntimeError("a state no handler foresaw")
        return super().dispatch(now)


def test_an_error_in_a_loop_turn_is_logged_and_the_loop_goes_on(tmp_path, agents, synthetic):
    ctl = Controller("tcp://127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=0.5, liveness=4,
                     scheduler=StumblingScheduler()).start()
    try:
        agents(ctl.url, 1)
        assert submit(ctl.url, load_project(synthetic(jobs=20))).ok
        assert ctl.crash is None and ctl.stats["loop_errors"] > 0
    finally:
        ctl.stop(shutdown_agents=True)


def broken_result(lease: str, rng: random.Random) -> tuple[Any, list[bytes]]:
    """A result for a real lease that the controller must refuse, in one of many ways (its array, or
    something that is not one: too short, too long, a field of the wrong type, protocol 1's map)."""
    way = rng.randrange(14)
    if way >= 10:
        row = result_row({"lease": lease, "ok": True, "duration": 0.01})
        if way == 10:
            return row[:-1], []
        if way == 11:
            return [*row, None], []
        if way == 12:
            return [row[0], "yes", *row[2:]], []
        return {"lease": lease, "ok": True, "result": None, "files": [], "duration": 0.01}, []
    fields, payloads = _broken_fields(lease, rng, way)
    return result_row(fields), payloads


def _broken_fields(lease: str, rng: random.Random, way: int) -> tuple[dict[str, Any], list[bytes]]:
    data = rng.randbytes(16)
    digest = blake3(data).digest()
    ok = {"lease": lease, "ok": True, "result": None, "duration": 0.01}
    if way == 0:
        return {**ok, "files": [["../escape.bin", 16, digest]]}, [data]
    if way == 1:
        return {**ok, "files": [["a.bin", 16, bytes(32)]]}, [data]
    if way == 2:
        return {**ok, "files": [["a.bin", 17, digest]]}, [data]
    if way == 3:
        return {**ok, "files": [["a.bin", 16, digest], ["b.bin", 16, digest]]}, [data]
    if way == 4:
        return {**ok, "files": [[1, 2]]}, [data]
    if way == 5:
        return {**ok, "files": [[rng.choice(["a\x00b", "/abs", "x" * 5000, "", "."]), 16, digest]]}, [data]
    if way == 6:
        return {**ok, "files": [["a.bin", 16, digest], ["a.bin/b", 16, digest]]}, [data, data]
    if way == 7:
        return {**ok, "result": odd_value(rng), "files": [["a.bin", 16, bytes(32)]]}, [data]
    if way == 8:
        return {**ok, "ok": False, "error": "e" * 1_000_000, "log": "\x00" * 100_000, "files": []}, []
    return {**ok, "ok": False, "error": None, "files": [["x", 1, b""]]}, [b"x" * 3]


def test_rogue_agents_answering_real_jobs_with_broken_results_change_nothing(controller, agents, synthetic,
                                                                             caplog):
    """Three rogues (each blocklisted after 3 failures) answer 9 real leases in the ways of `broken_result`."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(3)
    agents(controller.url, 2)  # there first, so a job a rogue failed goes to them
    wait_for(lambda: len(controller.registry) == 2, 30, "the honest agents")
    rogues = [Raw(controller.url) for _ in range(3)]
    for i, rogue in enumerate(rogues):
        rogue.send(T.HELLO, {"agent": f"rogue{i}", "host": "x", "pid": 1, "slots": 1, "prefetch": 0,
                             "caps": ["synthetic"], "held": [], "version": "0"})
    wait_for(lambda: len(controller.registry) == 5, 30, "the rogue agents")
    # at most 3 failures of one job, all by rogues: under its 5 attempts
    project = synthetic(jobs=100, output_bytes=8, log_collations=True, sleep=0.02, extra="[jobs]\nmax_attempts = 5")
    honest = Background(controller.url, project)
    poller = zmq.Poller()
    for rogue in rogues:
        poller.register(rogue.sock, zmq.POLLIN)
    answered = 0
    try:
        while events := dict(poller.poll(2000)):  # until the rogues hear nothing (dropped once silent)
            for rogue in rogues:
                if rogue.sock not in events:
                    continue
                msg = unpack(rogue.sock.recv_multipart())
                for job in msg.body["jobs"] if msg.type is T.JOBS else ():
                    body, payloads = broken_result(job[0], rng)  # its lease
                    rogue.send(T.RESULTS, {"results": [body]}, payloads)
                    answered += 1
        wait_for(honest.done, 120, "the honest project to finish")
    finally:
        for rogue in rogues:
            rogue.close()
    assert answered >= 6
    assert honest.error is None and honest.summary.ok and honest.summary.done == 100, honest.summary
    keys = [job_key(i) for i in range(100)]
    assert sorted((project / "output" / "collated.log").read_text().split()) == keys
    for key in keys:
        assert (project / "output" / f"{key}.bin").read_bytes() == payload(key, 8)
    assert not (project / "escape.bin").exists() and not (project.parent / "escape.bin").exists()
    assert controller.crash is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
