"""Wire format shared by the controller, agents, clients and the file synchroniser.

A message is a list of ZeroMQ frames: ``[version, type][msgpack body][raw payload ...]``; a message
of another protocol version is refused before its body is read. File bytes travel as raw payload
frames, never through msgpack. A job (JOBS, W_JOBS) and a job's result (RESULTS) each travel as a
fixed-order array (`JOB_ROW`, `RESULT_ROW`), not a map: a third of the decode time. Everything from the
network is unpacked with limits and checked against the type's shape before use;
a bad message raises `ProtocolError`, which receivers log and drop.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

import msgpack

from farm.errors import ProtocolError

# 2: JOBS carries each job, RESULTS each result, as a fixed-order array (1: a map each)
PROTOCOL_VERSION = 2
MAX_BODY = 4 * 1024 * 1024  # a msgpack body; file bytes go in payload frames
MAX_FRAMES = 4096
# The largest message a controller or agent socket takes (ZMQ_MAXMSGSIZE): a peer that starts
# a bigger one is disconnected at its header, before memory is set aside for it. A RESULTS
# message must fit, since a job's outputs ride inline; larger outputs would need the upload path.
MAX_MESSAGE = 64 * 1024 * 1024
# A listening socket drops a connection that has not completed its ZMTP (and CURVE) handshake in
# this time (libzmq's default is 30 s): idle connections cannot hold a server's descriptors for long.
HANDSHAKE_MS = 5000
#: the states a QUERY of a run's jobs filters by, in its listing order; "collating": rendered, its
#: outputs being written by the collator thread, not yet done (`farm.controller.control`)
JOB_STATES = ("running", "collating", "queued", "failed", "done", "reused")


class T(enum.IntEnum):
    """Message types. Agents and clients speak to the controller's ROUTER socket."""

    # agent -> controller
    HELLO = 1
    RESULTS = 2
    PROGRESS = 3
    BYE = 4
    JOIN = 5  # a new node or client redeems a join token (farm.join): the one message a token's key may send
    # controller -> agent
    WELCOME = 10
    JOBS = 11
    CANCEL = 12
    SHUTDOWN = 13
    JOINED = 14  # the token was good: the key is allowed under this name
    # both ways
    HEARTBEAT = 20
    # client <-> controller
    SUBMIT = 30
    ACCEPTED = 31
    UPDATE = 32
    FINISHED = 33
    STATUS = 34
    STATUS_REPLY = 35
    CANCEL_PROJECT = 36
    FOLLOW = 37
    UPLOAD = 38
    ERROR = 39
    EVENTS = 40  # subscribe to the event stream (and renew the subscription)
    EVENT_BATCH = 41
    CONTROL = 42  # steer: pause, resume, retry, priority, drain, undrain
    CONTROL_REPLY = 43
    QUERY = 44  # look: a run's snapshot, its jobs (paged), one job's log
    QUERY_REPLY = 45
    # file synchroniser (its own socket)
    FS_REQUEST = 50
    FS_REPLY = 51
    # agent <-> its worker processes (a local socket)
    W_READY = 60
    W_JOBS = 61
    W_PROGRESS = 62
    W_RESULTS = 63


class _Any:
    """Shape marker: any msgpack value."""


ANY = _Any()
NUM = (int, float)


def opt(spec: Any) -> tuple[str, Any]:
    return ("optional", spec)


class Row:
    """Shape marker: a fixed-length array whose items have these shapes, in this order (a named tuple
    on the wire: a third of the decode time of the same fields as a map)."""

    def __init__(self, **items: Any) -> None:
        self.items = items


#: a job as the controller sends it (JOBS) and an agent hands it to its worker (W_JOBS): a `JobSpec`,
#: its fields in order
JOB_ROW = Row(lease=str, key=str, project=str, params=ANY, deps=ANY, timeout=NUM)
_OPT_STR = (str, type(None))
#: a job's outcome as a worker sends it (W_RESULTS) and an agent sends it on (RESULTS): a `JobResult`,
#: its fields in order (error and log: None for none)
RESULT_ROW = Row(lease=str, ok=bool, result=ANY, files=[[ANY]], error=_OPT_STR, log=_OPT_STR, duration=NUM,
                 requeue=bool, retry=bool)
#: positions in a `RESULT_ROW`
R_LEASE, R_OK, R_RESULT, R_FILES, R_ERROR, R_LOG, R_DURATION = range(7)


class JobSpec(NamedTuple):
    """What an agent needs to run one job; travels controller -> agent -> worker unchanged.

    ``deps`` maps each dependency's key to its result (None, as a controller may send it: none);
    ``timeout`` is in seconds. Immutable (a named tuple: cheap to make, on the dispatch path of
    every job). JOBS and W_JOBS messages carry it as itself, an array (`JOB_ROW`).
    """

    lease: str
    key: str
    project: str  # the run id
    params: Any
    deps: dict[str, Any] | None
    timeout: float

    @classmethod
    def from_rows(cls, rows: list[list[Any]]) -> list[JobSpec]:
        """The jobs of a JOBS or W_JOBS message (`JOB_ROW` arrays, checked by `unpack`); what they mean
        is checked by their receiver."""
        return list(map(tuple.__new__, itertools.repeat(cls), rows))


#: one output file of a result: [relative name, size in bytes, BLAKE3 digest]; its bytes travel beside
OutputEntry = list[Any]


@dataclass(slots=True)
class JobResult:
    """One job's outcome, as a worker reports it and the controller collates it.

    ``files`` lists the outputs (`OutputEntry`), whose bytes ride as payload frames in the same
    order; ``duration`` is the job's run time in seconds; ``requeue``: it never started (run it
    again without counting an attempt); ``retry`` False: the plugin failed it for good.
    """

    lease: str
    ok: bool
    result: Any = None
    files: list[OutputEntry] = field(default_factory=list)
    error: str | None = None
    log: str | None = None
    duration: float = 0.0
    requeue: bool = False
    retry: bool = True

    def to_wire(self) -> list[Any]:
        """Its `RESULT_ROW` array."""
        return [self.lease, self.ok, self.result, self.files, self.error, self.log, self.duration,
                self.requeue, self.retry]

    @classmethod
    def from_wire(cls, row: list[Any]) -> JobResult:
        """From a `RESULT_ROW` array (checked by `unpack`)."""
        return cls(*row)


SHAPES: dict[T, dict[str, Any]] = {
    T.HELLO: {
        "agent": str,
        "host": str,
        "pid": int,
        "slots": int,
        "prefetch": int,
        "caps": [str],
        "held": [str],
        "version": str,
        "missing": opt(ANY),
        "session": opt(str),  # a secret per agent process: a reconnect shows it, an impostor cannot
        "node": opt(str),  # a secret per node and agent id: a restart shows it (farm.agent.nodetoken)
        "broken": opt(str),  # why this agent cannot run anything (its workers die at start)
        "plugins": opt(ANY),  # {media type: plugin version}; checked by farm.controller.versions
    },
    T.RESULTS: {"results": [RESULT_ROW]},
    T.PROGRESS: {"lease": str, "fraction": NUM},
    T.BYE: {},
    T.JOIN: {"key": str, "name": str, "role": str},  # our own public key, the name we would like
    T.JOINED: {"name": str},
    T.WELCOME: {"heartbeat": NUM, "liveness": int, "files": opt(str),
                "agent": opt(str),  # the id the controller knows the agent by
                "warning": opt(str)},  # e.g. another node presents our key (farm.join.shared_key)
    T.JOBS: {"jobs": [JOB_ROW], "projects": ANY},
    T.CANCEL: {"leases": [str]},
    T.SHUTDOWN: {},
    T.HEARTBEAT: {},
    T.SUBMIT: {"project": ANY, "priority": int, "upload": opt(bool)},
    T.UPLOAD: {"token": str, "files": str},
    T.ACCEPTED: {"project": str, "total": opt(int)},
    T.UPDATE: ANY,
    T.FINISHED: ANY,
    T.STATUS: {},
    T.STATUS_REPLY: ANY,
    T.CANCEL_PROJECT: {"project": str},
    T.FOLLOW: {"project": str},
    T.ERROR: {"message": str, "code": opt(str)},  # code: see farm.errors.ControlError
    T.EVENTS: {"since": opt(int), "epoch": opt(str)},  # the last seq seen (of that epoch); missing: from now on
    T.EVENT_BATCH: {"events": [ANY], "missed": int, "last": int, "epoch": opt(str), "reset": opt(bool)},
    # what each field means, and its bounds, is farm.controller.control's to check
    T.CONTROL: {"action": str, "project": opt(str), "agent": opt(str), "keys": opt([str]), "priority": opt(int)},
    T.CONTROL_REPLY: ANY,
    T.QUERY: {"what": str, "project": str, "key": opt(str), "state": opt(str), "offset": opt(int),
              "limit": opt(int)},
    T.QUERY_REPLY: ANY,
    T.FS_REQUEST: ANY,
    T.FS_REPLY: ANY,
    T.W_READY: {"pid": int},
    T.W_JOBS: {"jobs": [JOB_ROW], "projects": {}, "threads": int},  # projects: id -> description, new to it
    T.W_PROGRESS: {"lease": str, "fraction": NUM},
    # each result's lease and duration, and the RESULTS body the agent sends on (farm.agent.wresults)
    T.W_RESULTS: {"leases": [str], "durations": [NUM], "results": bytes},
}


@dataclass
class Message:
    type: T
    body: dict[str, Any]
    payloads: list[bytes] = field(default_factory=list)


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def pack(type: T, body: dict[str, Any] | None = None, payloads: Sequence[bytes] = ()) -> list[bytes]:
    """Frames for one message."""
    return [bytes((PROTOCOL_VERSION, type)), msgpack.packb(body or {}, use_bin_type=True), *payloads]


def pack_body(type: T, body: bytes, payloads: Sequence[bytes] = ()) -> list[bytes]:
    """Frames for one message whose body is packed already (a worker's results an agent sends on)."""
    return [bytes((PROTOCOL_VERSION, type)), body, *payloads]


def unpack(frames: Sequence[bytes]) -> Message:
    """Parse and check one message's frames; raises `ProtocolError` on anything off."""
    if len(frames) < 2:
        raise ProtocolError(f"expected at least 2 frames, got {len(frames)}")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"too many frames ({len(frames)} > {MAX_FRAMES})")
    head = bytes(frames[0])
    if len(head) != 2:
        raise ProtocolError(f"bad header frame of {len(head)} bytes")
    if head[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {head[0]} is not supported (this side speaks {PROTOCOL_VERSION})")
    try:
        kind = T(head[1])
    except ValueError:
        raise ProtocolError(f"unknown message type {head[1]}") from None
    raw = bytes(frames[1])
    if len(raw) > MAX_BODY:
        raise ProtocolError(f"message body of {len(raw)} bytes exceeds {MAX_BODY}")
    try:
        body = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, ext_hook=_reject_ext, use_list=True
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"undecodable {kind.name} body: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind.name} body must be a map, got {type(body).__name__}")
    if kind is T.RESULTS:
        _check_results(body)  # the hot path: same rules as the RESULT_ROW shape, written out
    elif kind is T.W_RESULTS:
        _check_w_results(body)  # likewise
    elif kind is T.JOBS or kind is T.W_JOBS:
        _check_jobs(body, kind)  # likewise
    else:
        check_shape(body, SHAPES[kind], kind.name)
    return Message(kind, body, [bytes(f) for f in frames[2:]])


def _check_results(body: dict[str, Any]) -> None:
    """The `RESULT_ROW` shape of each result, checked a field at a time over all of them (C loops, no
    Python call per result); anything off gets the generic check's message."""
    results = body.get("results")
    if not (results.__class__ is list and _LIST.issuperset(map(type, results))
            and _RESULT_LENGTH.issuperset(map(len, results))):
        _malformed(body)
    if not results:
        return
    leases, oks, _, files, errors, logs, durations, requeues, retries = zip(*results)
    if not (_STR.issuperset(map(type, leases)) and _BOOL.issuperset(map(type, oks))
            and _LIST.issuperset(map(type, files)) and _NUMS.issuperset(map(type, durations))
            and _OPT_STRS.issuperset(map(type, errors)) and _OPT_STRS.issuperset(map(type, logs))
            and _BOOL.issuperset(map(type, requeues)) and _BOOL.issuperset(map(type, retries))):
        _malformed(body)
    if any(files):  # each output entry an array (what it holds: `farm.controller.staging`)
        for entries in filter(None, files):
            if not _LIST.issuperset(map(type, entries)):
                _malformed(body)


def _check_w_results(body: dict[str, Any]) -> None:
    """The W_RESULTS shape, its lists checked in C loops; as many durations as leases."""
    leases, durations = body.get("leases"), body.get("durations")
    if not (leases.__class__ is list and durations.__class__ is list and len(leases) == len(durations)
            and _STR.issuperset(map(type, leases)) and _NUMS.issuperset(map(type, durations))
            and body.get("results").__class__ is bytes):
        check_shape(body, SHAPES[T.W_RESULTS], "W_RESULTS")  # slow path: says what is wrong
        raise ProtocolError("W_RESULTS: not as many durations as leases")


_JOBS_REST = {T.JOBS: {k: v for k, v in SHAPES[T.JOBS].items() if k != "jobs"},
              T.W_JOBS: {k: v for k, v in SHAPES[T.W_JOBS].items() if k != "jobs"}}
_LIST, _STR, _NUMS, _BOOL, _OPT_STRS = {list}, {str}, {int, float}, {bool}, set(_OPT_STR)
_ROW_LENGTH, _RESULT_LENGTH = {len(JOB_ROW.items)}, {len(RESULT_ROW.items)}


def _check_jobs(body: dict[str, Any], kind: T) -> None:
    """The `JOB_ROW` shape of each job (JOBS, W_JOBS), checked a field at a time over all of them (C
    loops, no Python call per job); anything off gets the generic check's message."""
    jobs = body.get("jobs")
    if not (jobs.__class__ is list and _LIST.issuperset(map(type, jobs))
            and _ROW_LENGTH.issuperset(map(len, jobs))) or (jobs and not _good_fields(jobs)):
        check_shape(body, SHAPES[kind], kind.name)  # slow path: says what is wrong
        raise ProtocolError(f"{kind.name}: malformed job")  # a shape the generic check allows, we do not
    check_shape(body, _JOBS_REST[kind], kind.name)


def _good_fields(rows: list[Any]) -> bool:
    leases, keys, projects, _, _, timeouts = zip(*rows)
    return (_STR.issuperset(map(type, leases)) and _STR.issuperset(map(type, keys))
            and _STR.issuperset(map(type, projects)) and _NUMS.issuperset(map(type, timeouts)))


def _malformed(body: dict[str, Any]) -> NoReturn:
    check_shape(body, SHAPES[T.RESULTS], "RESULTS")  # slow path: says what is wrong
    raise ProtocolError("RESULTS: malformed result")  # a shape the generic check allows but we do not


def check_shape(value: Any, spec: Any, where: str) -> None:
    """Raise `ProtocolError` unless ``value`` has the shape ``spec`` describes.

    A spec is a type (or tuple of types), ``ANY``, ``[item_spec]`` for a list, or a dict
    of key -> spec (keys wrapped in `opt` may be missing or None). Specs are compiled
    once into checker functions: this runs for every message on the hot path.
    """
    try:
        _compiled(spec)(value)
    except _ShapeError as exc:
        raise ProtocolError(f"{where}{''.join(reversed(exc.path))}: {exc.message}") from None


class _ShapeError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []


# id(spec) -> (spec, its checker): the spec held, so no other spec made later takes its id
_CACHE: dict[int, tuple[Any, Any]] = {}


def _compiled(spec: Any) -> Any:
    entry = _CACHE.get(id(spec))
    if entry is None or entry[0] is not spec:
        entry = _CACHE[id(spec)] = (spec, _compile(spec))
    return entry[1]


def _compile(spec: Any) -> Any:
    if spec is ANY:
        return lambda value: None
    if isinstance(spec, dict):
        fields = []
        for key, sub in spec.items():
            optional = isinstance(sub, tuple) and len(sub) == 2 and sub[0] == "optional"
            fields.append((key, optional, _compile(sub[1] if optional else sub)))

        def check_map(value: Any) -> None:
            if value.__class__ is not dict:
                raise _ShapeError(f"expected a map, got {type(value).__name__}")
            for key, optional, check in fields:
                item = value.get(key, _MISSING)
                if item is _MISSING or (optional and item is None):
                    if optional:
                        continue
                    error = _ShapeError(f"missing field {key!r}")
                    raise error
                try:
                    check(item)
                except _ShapeError as exc:
                    exc.path.append(f".{key}")
                    raise

        return check_map
    if isinstance(spec, Row):
        names, checks = list(spec.items), [_compile(item) for item in spec.items.values()]

        def check_row(value: Any) -> None:
            if value.__class__ is not list or len(value) != len(checks):
                got = f"{len(value)} items" if value.__class__ is list else type(value).__name__
                raise _ShapeError(f"expected an array of {len(checks)} ({', '.join(names)}), got {got}")
            for name, check, item in zip(names, checks, value, strict=True):
                try:
                    check(item)
                except _ShapeError as exc:
                    exc.path.append(f".{name}")
                    raise

        return check_row
    if isinstance(spec, list):
        check_item = _compile(spec[0])

        def check_list(value: Any) -> None:
            if value.__class__ is not list:
                raise _ShapeError(f"expected a list, got {type(value).__name__}")
            for i, item in enumerate(value):
                try:
                    check_item(item)
                except _ShapeError as exc:
                    exc.path.append(f"[{i}]")
                    raise

        return check_list
    types = spec if isinstance(spec, tuple) else (spec,)
    allow_bool = bool in types

    def check_type(value: Any) -> None:
        if not isinstance(value, types) or (value.__class__ is bool and not allow_bool):
            got = "a boolean" if value.__class__ is bool else type(value).__name__
            raise _ShapeError(f"expected {_names(types)}, got {got}")

    return check_type


_MISSING = object()


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)
