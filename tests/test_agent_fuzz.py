"""Fuzzing a live agent: a hand-written controller sends random and mutated messages of every type
(seeded, bounded) between honest jobs; the agent stays up and returns the honest jobs' right outputs.

A well-formed SHUTDOWN is the one message left out: it is an honest order to stop.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from agent_trust_helpers import RogueController, synthetic_project
from farm_synthetic import payload

from farm.protocol import ANY, PROTOCOL_VERSION, SHAPES, T, pack

SIZE = 24
HONEST = "honest-run"
ROUNDS = 8
PER_ROUND = 60

STRINGS = ["", ".", "..", "../../x", "/etc/passwd", "a\x00b", "\u202e", "x" * 5000, "job-0000001",
           "synthetic",           "frames", "tcp://127.0.0.1:1", "tcp://nohost", "ipc:///tmp/nope", "é"]
NUMBERS = [0, -1, 1, 2**63 - 1, -(2**63), 0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308, 1e-308]


def value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value, hostile where it can be."""
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice(NUMBERS)
    if pick == 3:
        if rng.random() < 0.7:
            return rng.choice(STRINGS)
        return rng.randbytes(rng.randrange(8)).decode("latin-1")
    if pick == 4:
        return rng.randbytes(rng.randrange(16))
    if pick == 5:
        return rng.randrange(-5, 5)
    if pick == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(STRINGS): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def fitting(spec: Any, rng: random.Random, depth: int = 0) -> Any:
    """A random value of the shape ``spec`` describes (so it gets past the shape check to the handler)."""
    if spec is ANY:
        return value(rng, depth)
    if isinstance(spec, dict):
        out = {}
        for key, sub in spec.items():
            optional = isinstance(sub, tuple) and len(sub) == 2 and sub[0] == "optional"
            if optional and rng.random() < 0.3:
                continue
            out[key] = fitting(sub[1] if optional else sub, rng, depth + 1)
        return out
    if isinstance(spec, list):
        return [fitting(spec[0], rng, depth + 1) for _ in range(rng.randrange(4))]
    types = spec if isinstance(spec, tuple) else (spec,)
    kind = rng.choice(types)
    if kind is str:
        return f"fuzz-{rng.randrange(10**6)}" if rng.random() < 0.5 else rng.choice(STRINGS)
    if kind is bool:
        return rng.random() < 0.5
    if kind is int:
        return rng.choice([0, 1, -1, 7, 2**31, 2**63 - 1])
    if kind is float:
        return rng.choice(NUMBERS)
    return value(rng, depth)


def hostile_jobs(rng: random.Random, description: dict[str, Any]) -> dict[str, Any]:
    """A JOBS body that passes the shape check: projects of its own (never the honest one), odd jobs."""
    project = f"fuzz-{rng.randrange(1000)}"
    mutated = dict(description)
    for key in rng.sample(sorted(mutated), rng.randrange(1, 4)):
        mutated[key] = value(rng) if rng.random() < 0.5 else fitting(ANY, rng)
    jobs = [{"lease": f"fuzz-lease-{rng.randrange(10**6)}", "key": rng.choice(STRINGS),
             "project": project if rng.random() < 0.7 else rng.choice(["never-described", *STRINGS]),
             "params": value(rng),
             "deps": rng.choice([None, {}, {"../x": 1}, value(rng)]), "timeout": rng.choice(NUMBERS)}
            for _ in range(rng.randrange(1, 4))]
    projects = rng.choice([{project: mutated}, {project: mutated}, {project: description},
                           {project: value(rng)}, value(rng), {}])
    return {"jobs": [list(job.values()) for job in jobs], "projects": projects}  # JobSpec's order


def message(rng: random.Random, description: dict[str, Any]) -> list[bytes]:
    """One random or mutated message of a random type."""
    kind = rng.choice(list(T))
    pick = rng.randrange(6)
    if kind is T.JOBS and pick < 3:
        frames = pack(kind, hostile_jobs(rng, description))
    elif pick < 3:
        body = fitting(SHAPES[kind], rng)
        if not isinstance(body, dict):
            body = {"x": body}
        frames = pack(kind, body)
    elif pick == 3:  # a valid-looking message with flipped bytes
        frames = pack(kind, fitting(SHAPES[kind], rng) if isinstance(SHAPES[kind], dict) else {})
        body = bytearray(frames[1])
        for _ in range(rng.randrange(1, 4)):
            if body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        frames = [frames[0], bytes(body)[: rng.randrange(len(body) + 1)]]
    elif pick == 4:  # broken framing: wrong version, unknown type, no body, extra frames
        frames = rng.choice([
            [bytes((PROTOCOL_VERSION + 1, kind)), msgpack.packb({})],
            [bytes((PROTOCOL_VERSION, 200)), msgpack.packb({})],
            [bytes((PROTOCOL_VERSION, kind))],
            [bytes((PROTOCOL_VERSION, kind)), msgpack.packb([1, 2])],
            [bytes((PROTOCOL_VERSION, kind)), msgpack.packb({}), *[b"x"] * rng.randrange(1, 5)],
            [rng.randbytes(3), rng.randbytes(10)],
        ])
    else:
        frames = [rng.randbytes(rng.randrange(1, 40)) for _ in range(rng.randrange(1, 4))]
    if kind is T.SHUTDOWN and frames[0] == pack(T.SHUTDOWN)[0]:
        frames = [frames[0], b"\xc1"]  # an honest order to stop is not fuzz: keep it malformed
    return frames


class FuzzController(RogueController):
    """Sends honest jobs again as a real controller would: those a reconnecting agent no longer holds
    (a fuzzed ERROR makes it reconnect), and those it handed back unstarted (a fuzzed job's timeout
    killed the worker they were queued on)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.honest: dict[str, dict[str, Any]] = {}
        self.description: dict[str, Any] = {}

    def poll(self, timeout_ms: int = 20) -> bool:
        before = self.hello
        super().poll(timeout_ms)
        again = [job for lease, job in self.honest.items() if self.results.get(lease, {}).get("requeue")]
        for job in again:
            del self.results[job["lease"]]
        if self.hello is not before:
            again += [job for lease, job in self.honest.items()
                      if lease not in self.results and lease not in self.hello["held"]]
        if again:
            self.send_jobs(again, {HONEST: self.description})
        return False


@pytest.fixture
def fuzz(tmp_path: Path) -> Iterator[FuzzController]:
    ctl = FuzzController(tmp_path)
    yield ctl
    ctl.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_and_mutated_messages_of_every_type_at_a_live_agent(fuzz, tmp_path, seed):
    rng = random.Random(seed)
    project = synthetic_project(tmp_path / "honest", f"jobs = {ROUNDS}\noutput_bytes = {SIZE}")
    fuzz.description = fuzz.publish(project, "honest-tree")
    fuzz.start_agent()
    keys = [f"job-{i:07d}" for i in range(ROUNDS)]
    for i, key in enumerate(keys):
        job = fuzz.job(f"honest-{i}", key, HONEST)
        fuzz.honest[job["lease"]] = job
        fuzz.send_jobs([job], {HONEST: fuzz.description})
        for _ in range(PER_ROUND):
            fuzz.send_raw(message(rng, fuzz.description))
            fuzz.poll(0)
        assert fuzz.alive
    for i, key in enumerate(keys):
        result = fuzz.result(f"honest-{i}", 120)
        assert result["ok"], result.get("error")
        assert result["payloads"] == [payload(key, SIZE)]
    assert fuzz.alive
