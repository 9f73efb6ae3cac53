"""The file synchroniser's requests and replies on top of `farm.protocol` (FS_REQUEST / FS_REPLY).

Every request carries ``op`` and a client-chosen ``rid``; the reply echoes ``rid`` with
``ok`` and either the op's fields or ``error``. Block and manifest bytes travel as raw
payload frames after the body::

    manifest {tree, have?}           -> {id, same} + [manifest bytes unless same]
    get      {items: [[hash, offset, length]]}  -> {} + [one frame per item]
    offer    {token} + [manifest]    -> {need} + [concatenated hashes of blocks to send]
    put      {token, items: [[hash, offset]]} + [one frame per item]  -> {bad: [hash]}
    commit   {token}                 -> {}
    abort    {token, error}          -> {}

Between agents (`farm.filesync.peerserver`, `farm.filesync.tracker`; docs/filesync.md)::

    peers    {tree, serve?, members?, agent?, dead?} -> {peers: [[endpoint, key]], members_id}
                                                         + [members unless known]
    claim    {tree, serve?, force} + [concatenated hashes] -> {} + [concatenated hashes granted]
    have     {manifest}              -> {count} + [bitmap over `holdings.block_order`]
    get      (a peer's reply)        -> {missing?: [index]} + [one frame per item, empty if missing]

Each kind of server answers its own ops only (``FileServer.SERVES``); another is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from farm.errors import ProtocolError
from farm.filesync.hashing import HASH_LEN, MAX_BLOCK
from farm.filesync.limits import Limits
from farm.protocol import ANY, MAX_FRAMES, T, check_shape, opt, pack, unpack

MANIFEST, GET, OFFER, PUT, COMMIT, ABORT = "manifest", "get", "offer", "put", "commit", "abort"
PEERS, CLAIM, HAVE = "peers", "claim", "have"
_MAX_RID = 2**63 - 1
_TOKEN_MAX = 256

REQUESTS: dict[str, dict[str, Any]] = {
    MANIFEST: {"op": str, "rid": int, "tree": str, "have": opt(str)},
    GET: {"op": str, "rid": int, "items": [[ANY]]},
    OFFER: {"op": str, "rid": int, "token": str},
    PUT: {"op": str, "rid": int, "token": str, "items": [[ANY]]},
    COMMIT: {"op": str, "rid": int, "token": str},
    ABORT: {"op": str, "rid": int, "token": str, "error": str},
    PEERS: {"op": str, "rid": int, "tree": str, "serve": opt(str), "members": opt(str), "agent": opt(str),
            "dead": opt([str])},
    CLAIM: {"op": str, "rid": int, "tree": str, "serve": opt(str), "force": bool},
    HAVE: {"op": str, "rid": int, "manifest": str},
}
REPLY: dict[str, Any] = {"rid": int, "ok": bool, "error": opt(str), "code": opt(str)}
# error codes, so the sender raises the matching error
VERIFY, UNSAFE, BAD_MANIFEST, REFUSED = "verify", "unsafe", "manifest", "refused"
KEY_ROLE, BUSY = "key_role", "busy"  # the key's role does not cover the op; a peer serving all it may
DISK = "disk"  # the receiver's own disk refused an upload (`farm.filesync.errors.DiskRefused`)
REPLIES: dict[str, dict[str, Any]] = {
    MANIFEST: {**REPLY, "id": str, "same": bool},
    GET: {**REPLY, "missing": opt([int])},
    OFFER: {**REPLY, "need": int},
    PUT: {**REPLY, "bad": [bytes]},
    COMMIT: REPLY,
    ABORT: REPLY,
    PEERS: {**REPLY, "peers": [[str]], "members_id": str},
    CLAIM: REPLY,
    HAVE: {**REPLY, "count": int},
}

Frame = bytes | zmq.Frame


@dataclass
class Request:
    op: str
    rid: int
    body: dict[str, Any]
    payloads: list[Frame]
    user: str | None = None  # the Z85 key the sender authenticated with (CURVE), else None


def frame_len(frame: Frame) -> int:
    return len(frame.buffer) if isinstance(frame, zmq.Frame) else len(frame)


def view(frame: Frame) -> memoryview:
    return frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)


def _head(frames: Sequence[Frame], kind: T) -> tuple[dict[str, Any], list[Frame]]:
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"too many frames ({len(frames)} > {MAX_FRAMES})")
    message = unpack([bytes(view(f)) for f in frames[:2]])  # payload frames are not copied
    if message.type != kind:
        raise ProtocolError(f"expected {kind.name}, got {message.type.name}")
    return message.body, list(frames[2:])


def parse_request(frames: Sequence[Frame]) -> Request:
    """Check one request's frames; raises `ProtocolError` on anything off."""
    body, payloads = _head(frames, T.FS_REQUEST)
    op = body.get("op")
    if not isinstance(op, str) or op not in REQUESTS:  # a list or map is unhashable: test the type first
        raise ProtocolError(f"unknown file-sync operation {str(op)[:80]!r}")
    check_shape(body, REQUESTS[op], f"FS_REQUEST {op}")
    if not 0 <= body["rid"] <= _MAX_RID:
        raise ProtocolError(f"FS_REQUEST {op}: rid out of range")
    if "token" in body and not 0 < len(body["token"]) <= _TOKEN_MAX:
        raise ProtocolError(f"FS_REQUEST {op}: token must be 1..{_TOKEN_MAX} characters")
    return Request(op, body["rid"], body, payloads)


def parse_reply(frames: Sequence[Frame], op: str) -> tuple[dict[str, Any], list[Frame]]:
    body, payloads = _head(frames, T.FS_REPLY)
    check_shape(body, REPLY, "FS_REPLY")
    if body["ok"]:
        check_shape(body, REPLIES[op], f"FS_REPLY {op}")
    return body, payloads


def reply_rid(frames: Sequence[Frame]) -> int | None:
    """The rid of a reply, or None if it is not a well-formed reply at all."""
    try:
        body, _ = _head(frames, T.FS_REPLY)
        check_shape(body, REPLY, "FS_REPLY")
    except ProtocolError:
        return None
    return int(body["rid"])


def request_frames(op: str, rid: int, fields: dict[str, Any], payloads: Sequence[Frame] = ()) -> list[Any]:
    return [*pack(T.FS_REQUEST, {"op": op, "rid": rid, **fields}), *payloads]


def reply_frames(rid: int, fields: dict[str, Any] | None = None, payloads: Sequence[Any] = ()) -> list[Any]:
    return [*pack(T.FS_REPLY, {"rid": rid, "ok": True, **(fields or {})}), *payloads]


def error_frames(rid: int, error: str, code: str = REFUSED) -> list[Any]:
    return pack(T.FS_REPLY, {"rid": rid, "ok": False, "error": error[:2000], "code": code})


def check_hash(value: Any, where: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_LEN:
        raise ProtocolError(f"{where}: expected a {HASH_LEN}-byte block hash")
    return value


def _int(value: Any, where: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise ProtocolError(f"{where}: expected an integer in 0..{limit}")
    return value


def get_items(items: list[Any], limits: Limits) -> list[tuple[bytes, int, int]]:
    """Validated (hash, offset, length) triples of a get request, within the chunk limit."""
    if not 0 < len(items) <= limits.max_items:
        raise ProtocolError(f"get: 1..{limits.max_items} items allowed, got {len(items)}")
    out, total = [], 0
    for i, item in enumerate(items):
        if len(item) != 3:
            raise ProtocolError(f"get.items[{i}]: expected [hash, offset, length]")
        h = check_hash(item[0], f"get.items[{i}]")
        offset = _int(item[1], f"get.items[{i}].offset", MAX_BLOCK)
        length = _int(item[2], f"get.items[{i}].length", limits.max_chunk)
        total += length
        out.append((h, offset, length))
    if total > limits.max_chunk:
        raise ProtocolError(f"get: asks for {total} bytes, more than {limits.max_chunk} per request")
    return out


def put_items(items: list[Any], payloads: Sequence[Frame], limits: Limits) -> list[tuple[bytes, int, Frame]]:
    """Validated (hash, offset, data) of a put request."""
    if not 0 < len(items) <= limits.max_items or len(items) != len(payloads):
        raise ProtocolError(f"put: expected 1..{limits.max_items} items, one payload frame each")
    out, total = [], 0
    for i, (item, data) in enumerate(zip(items, payloads, strict=True)):
        if len(item) != 2:
            raise ProtocolError(f"put.items[{i}]: expected [hash, offset]")
        h = check_hash(item[0], f"put.items[{i}]")
        offset = _int(item[1], f"put.items[{i}].offset", MAX_BLOCK)
        total += frame_len(data)
        out.append((h, offset, data))
    if total > limits.max_chunk:
        raise ProtocolError(f"put: carries {total} bytes, more than {limits.max_chunk} per request")
    return out
