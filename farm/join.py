"""Joining a controller in one command: a node's own key, let in by a join token.

The controller (`answer`): its job socket admits a peer whose CURVE key is a join token's
key pair (`farm.tokens.token_keys`: only the token's holder has its secret), marked as
joining (`ServerSecurity.joining`); such a peer may send a JOIN and nothing else. A live token
puts the node's own public key into ``allowed/`` under the name it asked for (made unique),
and the answer says that name; a used, expired or revoked token is answered with which.

The node (`join`): makes its own key pair if it has none, proves the token once by
connecting with the token's key pair to the controller whose key the join argument names,
sends its own public key, and from then on connects as itself. The caller keeps the controller's
key by its address (`farm.cli.security.remember_joined`: ``joined/ADDRESS.key``), never as
``controller.key``, which names this user's own controller's key pair.

A token given is always presented: a key the controller allows already costs it nothing (a
restarted `farm agent --join ...` just connects). When the controller refuses the token (used,
expired, gone) but accepted our key before, we connect without it, as a restart would. When
the controller revoked our key, a live token lets in a fresh key pair (made here, replacing the
revoked one), never the revoked key itself, so a stolen copy of that key stays out.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from farm.errors import ConnectionLost, FarmError, ProtocolError
from farm.handshake import (
    NOTHING_LISTENS_AFTER_S,
    HandshakeWatcher,
    accepted_before,
    accepted_name,
    remember_accepted,
)
from farm.keys import KeyPair, KeyStore, SecurityError, check_name, parse_key
from farm.protocol import Message, T, pack, unpack
from farm.tokens import KINDS, JoinRefused, KeyRevoked, TokenStore, parse_join, token_keys

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 15.0


# -- the controller's side ---------------------------------------------------------------


def answer(tokens: TokenStore, token_id: str, msg: Message) -> list[bytes]:
    """The reply frames to a message from a peer that proved join token `token_id`."""
    if msg.type is not T.JOIN:
        return pack(T.ERROR, {"message": "a join token's key may only send JOIN; connect with the node's own key"})
    key = parse_key(msg.body["key"])
    if key is None:
        return pack(T.ERROR, {"message": "JOIN: 'key' is not a 40-character Z85 public key"})
    try:
        wanted = check_name(msg.body["name"])
    except SecurityError:
        wanted = "node" if msg.body["role"] == "agent" else "client"
    role = msg.body["role"] if msg.body["role"] in KINDS else "agent"
    try:
        name = tokens.redeem(token_id, key, wanted, role)
    except JoinRefused as exc:
        log.warning("refused a join by key %s: %s", key.decode(), exc)
        return pack(T.ERROR, {"message": str(exc), "code": exc.code})
    return pack(T.JOINED, {"name": name})


def shared_key(agents: Iterable[Any], agent: Any) -> str | None:
    """A warning when `agent` presents the key of a live agent on another host, else None.

    One key per node: two machines with one key look like one identity, and revoking it cuts
    off both. `agents`: the controller's registry (objects with identity, id, host, key, key_name).
    """
    if agent.key is None:
        return None
    others = sorted({f"{a.id} on {a.host}" for a in agents
                     if a.key == agent.key and a.identity != agent.identity and a.host != agent.host})
    if not others:
        return None
    return (f"agent {agent.id} on {agent.host} presents the same key ({agent.key_name or agent.key}) as "
            f"{', '.join(others)}: give each node its own key (`farm keys invite`, then `farm agent --join` "
            "there); revoking a shared key cuts off every node that uses it")


# -- the node's side -----------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    """Where a node joined and as what: the controller's url and key, our key pair, our name there."""

    url: str
    server_key: bytes
    keys: KeyPair
    name: str | None  # the name our key is allowed as there (None: not known)
    again: bool = False  # joined before: the token was not spent again


def join(argument: str, keys_dir: Path | str | None, key_name: str, *, name: str | None = None,
         role: str = "agent", timeout: float = JOIN_TIMEOUT_S) -> Joined:
    """Redeem a join argument (``URL#KEY.TOKEN``) with our own key pair `key_name` (made if missing).

    Raises `FarmError` with the controller's reason (token used, expired, revoked, ...) or the
    handshake's (`farm.handshake`).
    """
    url, server_key, token = parse_join(argument)
    store = KeyStore(keys_dir)
    if store.secret_path(key_name).exists():
        pair = store.load(key_name)
    else:
        pair = store.create(key_name)
        log.info("made this %s's key pair %r in %s (public key %s)", "node" if role == "agent" else "client",
                    key_name, store.root, pair.public.decode())
    before = accepted_before(store, server_key, pair.public)
    wanted = name or socket.gethostname().split(".")[0] or "node"
    try:
        try:
            given = check_name(_redeem(url, server_key, pair, token, wanted, role, timeout))
        except KeyRevoked as exc:
            log.warning("%s: making a new key pair %r and joining with it", exc, key_name)
            pair = store.create(key_name, force=True)
            given = check_name(_redeem(url, server_key, pair, token, wanted, role, timeout))
    except ConnectionLost as exc:
        if not before:
            raise
        # the controller is away (a restart of both): our own key will do once it is back
        log.info("cannot present the token to %s (%s); our key was accepted before: connecting without it",
                 url, exc)
        return Joined(url, server_key, pair, accepted_name(store, server_key, pair.public), again=True)
    except JoinRefused as exc:
        if not before or exc.code != "refused":  # only a spent, expired or unknown token falls back
            raise
        # a restart with a spent (or expired, removed) token: our own key may still be allowed
        log.info("the controller at %s accepted our key before; connecting without the token (%s)", url, exc)
        return Joined(url, server_key, pair, accepted_name(store, server_key, pair.public), again=True)
    again = before and accepted_name(store, server_key, pair.public) == given
    remember_accepted(store, server_key, pair.public, given)
    if again:
        log.info("the controller at %s knows our key already, as %s: the token was not spent", url, given)
    else:
        log.info("joined the controller at %s as %s", url, given)
    return Joined(url, server_key, pair, given, again=again)


def _redeem(url: str, server_key: bytes, pair: KeyPair, token: str, name: str, role: str, timeout: float) -> str:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    proof_public, proof_secret = token_keys(token)  # the handshake itself proves we hold the token
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = proof_secret, proof_public, server_key
    watcher = HandshakeWatcher(sock, url, our_key=proof_public, server_key=server_key, token=token.split("-")[0],
                               unreachable_after=NOTHING_LISTENS_AFTER_S)
    try:
        sock.connect(url)
        sock.send_multipart(pack(T.JOIN, {"key": pair.public.decode(), "name": name, "role": role}))
        try:
            reply = watcher.receive(timeout, what="the answer to our join token")
        except ConnectionLost as exc:
            if watcher.auth_refused:  # the controller has no such token
                raise JoinRefused(str(exc)) from None
            raise
        try:
            msg = unpack(reply)
        except ProtocolError as exc:
            raise FarmError(f"the controller at {url} answered the join with a bad message: {exc}") from None
        if msg.type is T.JOINED:
            return str(msg.body["name"])
        if msg.type is T.ERROR:
            error = KeyRevoked if msg.body.get("code") == KeyRevoked.code else JoinRefused
            refused = error(f"the controller at {url} refused the join: {msg.body['message']}")
            refused.code = str(msg.body.get("code", "refused"))
            raise refused
        raise FarmError(f"the controller at {url} answered the join with {msg.type.name}")
    finally:
        watcher.close()
        sock.close(linger=0)

