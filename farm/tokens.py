"""Join tokens: a secret that lets a new node's own key into a controller's allowed list, once.

A token is ``<id>-<secret>`` (8 + 32 hex digits). The secret seeds a CURVE key pair
(`token_keys`); a joining node connects with that pair, so holding the token is proven in the
CurveZMQ handshake itself and a stranger is still refused there, before any message is read.
The controller keeps, per token, ``tokens/<id>.json`` in its keys folder (mode 0600 in a 0700
folder) with that pair's public key, never the secret: whoever reads the folder cannot join
with what is stored there. A token expires, is single-use or reusable (a fleet), and can be
revoked; each redemption is recorded with the name the key was allowed as.

The join argument a node is given carries where to go, whom to trust and the token:
``<controller-url>#<controller-public-key>.<token>`` (`format_join`, `parse_join`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from farm.endpoints import endpoint_problem
from farm.keys import KeyStore, SecurityError, parse_key

log = logging.getLogger(__name__)

TOKENS = "tokens"
DEFAULT_EXPIRY_S = 24 * 3600.0
PRUNE_AFTER_S = 7 * 86400.0  # an expired token's record is kept this long, to say "expired" rather than "unknown"
_TOKEN = re.compile(r"([0-9a-f]{8})-([0-9a-f]{32})")
_ID = re.compile(r"[0-9a-f]{8}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


KINDS = ("agent", "client")  # who may redeem a token: `farm agent --join` or `farm submit --join`


class JoinRefused(SecurityError):
    """A token that cannot be redeemed: unknown, expired, used, revoked, of the other kind (message says which)."""

    code = "refused"


class KeyRevoked(JoinRefused):
    """A live token presented with a key that was revoked here: the node must join with a fresh key pair."""

    code = "key_revoked"


@dataclass
class Token:
    """One token's record (the public key its secret seeds, not the secret). Times are epoch seconds;
    `expires` None: never."""

    id: str
    public: str
    created: float
    expires: float | None
    single_use: bool
    revoked: bool = False
    kind: str = "agent"  # "agent" or "client" (KINDS); records from before kinds existed were agent tokens
    uses: list[dict[str, object]] = field(default_factory=list)  # {"name", "key", "time"} per redemption

    def state(self, now: float | None = None) -> str:
        """"live", "revoked", "expired" or "used"."""
        now = time.time() if now is None else now
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        if self.single_use and self.uses:
            return "used"
        return "live"

    def row(self) -> dict[str, object]:
        """What `farm keys invites --json` shows."""
        return {"id": self.id, "state": self.state(), "kind": self.kind, "single_use": self.single_use,
                "created": self.created, "expires": self.expires, "expires_at": format_expiry(self.expires),
                "uses": [u.get("name") for u in self.uses]}


def format_expiry(expires: float | None) -> str:
    """An expiry time (epoch seconds, None: never) as people read it: "2026-11-30 18:07" local time."""
    return "never" if expires is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))


def parse_duration(text: str) -> float | None:
    """Seconds from "90s", "30m", "1h", "7d", "2w" or a plain number; None for "never"."""
    text = text.strip().lower()
    if text in ("never", "none", "0"):
        return None
    match = _DURATION.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise SecurityError(f"bad duration {text!r}: use e.g. 30m, 1h, 7d or never")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_join(url: str, server_key: str | bytes, token: str) -> str:
    """The argument of ``farm agent --join`` / ``farm submit --join``."""
    key = server_key.decode() if isinstance(server_key, bytes) else server_key
    return f"{url}#{key}.{token}"


def parse_join(text: str) -> tuple[str, bytes, str]:
    """(controller url, its Z85 public key, token) from a join argument; a `SecurityError` says what
    is wrong (the url too: `farm.endpoints.endpoint_problem`)."""
    url, sep, rest = text.strip().partition("#")
    if not sep or "://" not in url:
        raise SecurityError(f"bad join argument {text[:80]!r}: expected URL#KEY.TOKEN as printed by "
                            "`farm keys invite` (quote it in single quotes: keys contain $ < > & *)")
    key = parse_key(rest[:40])
    if key is None or rest[40:41] != ".":
        raise SecurityError(f"bad join argument: {rest[:40]!r} after '#' is not the controller's "
                            "40-character public key followed by '.'")
    token = rest[41:]
    if not _TOKEN.fullmatch(token):
        raise SecurityError("bad join argument: the token after the key is not ID-SECRET (8 and 32 hex digits)")
    problem = endpoint_problem(url)
    if problem is not None:
        raise SecurityError(f"bad join argument: the controller's address {url[:80]!r} before '#': {problem}")
    return url, key, token


def token_keys(token: str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 CURVE keys seeded by a whole token (``ID-SECRET``); the same on both sides."""
    if not _TOKEN.fullmatch(token):
        raise SecurityError("that is not a join token (ID-SECRET: 8 and 32 hex digits)")
    secret = z85.encode(hashlib.sha256(b"farm join token\0" + token.encode()).digest())
    return zmq.curve_public(secret), secret


class TokenStore:
    """The join tokens of a controller's keys folder."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.root = keys.root / TOKENS

    def path(self, token_id: str) -> Path:
        if not _ID.fullmatch(token_id):
            raise JoinRefused(f"no join token {token_id[:20]!r} (a token id is 8 hex digits; see `farm keys invites`)")
        return self.root / f"{token_id}.json"

    def create(self, *, expires_s: float | None = DEFAULT_EXPIRY_S, single_use: bool = True,
               kind: str = "agent") -> str:
        """A new token for `kind` ("agent" or "client"); returns it whole (``ID-SECRET``), the only
        time the secret exists.

        Records of tokens expired for over a week go (each `farm controller` start makes one).
        """
        self.prune(time.time() - PRUNE_AFTER_S)
        token = f"{secrets.token_hex(4)}-{secrets.token_hex(16)}"
        token_id, now = token[:8], time.time()
        if kind not in KINDS:
            raise SecurityError(f"a join token is for one of {', '.join(KINDS)}, not {kind!r}")
        self._save(Token(token_id, token_keys(token)[0].decode(), now,
                         None if expires_s is None else now + expires_s, single_use, kind=kind))
        log.info("created %s join token %s (%s, %s)", kind, token_id,
                 "single-use" if single_use else "reusable", "never expires" if expires_s is None else f"expires in {expires_s:.0f}s")
        return token

    def prune(self, before: float) -> None:
        for token in self.all():
            if token.expires is not None and token.expires < before:
                self.path(token.id).unlink(missing_ok=True)

    def load(self, token_id: str) -> Token:
        path = self.path(token_id)
        try:
            data = json.loads(path.read_text())
            return Token(**data)
        except FileNotFoundError:
            raise JoinRefused(f"no join token {token_id!r} here (never made, or removed)") from None
        except (OSError, ValueError, TypeError) as exc:
            raise JoinRefused(f"{path}: unreadable token record ({exc})") from None

    def all(self) -> list[Token]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.json")):
            try:
                found.append(self.load(path.stem))
            except JoinRefused as exc:
                log.warning("%s", exc)
        return sorted(found, key=lambda t: t.created)

    def stamp(self) -> frozenset[tuple[str, int]]:
        """Names and mtimes of the records: changes when a token is made, used or revoked."""
        try:
            with os.scandir(self.root) as entries:
                return frozenset((e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".json"))
        except OSError:
            return frozenset()

    def by_key(self) -> dict[bytes, str]:
        """Token public key -> token id, for every token on record (whatever its state)."""
        return {t.public.encode(): t.id for t in self.all()}

    def joined_roles(self) -> dict[bytes, str]:
        """Public key -> the role it joined as, for every redemption on record (the last one wins)."""
        found: dict[bytes, str] = {}
        for token in self.all():
            for use in token.uses:
                if isinstance(use.get("key"), str):
                    found[str(use["key"]).encode()] = str(use.get("role") or token.kind)
        return found

    def revoke(self, token_id: str) -> Token:
        token = self.load(token_id)
        token.revoked = True
        self._save(token)
        log.info("revoked join token %s", token_id)
        return token

    def redeem(self, token_id: str, key: bytes, name: str, role: str = "agent") -> str:
        """Allow `key` under `name` (made unique) for a live token; returns the name it was allowed as.

        The caller has proven the token (its handshake used the token's key pair); `role` is
        what it joins as ("agent" or "client"), which must be the token's kind; the key is allowed
        with that role (`farm.keys.ROLES`). A key allowed already for that role keeps its name and
        costs a single-use token nothing; one allowed for the other role becomes "both", which
        spends the token. Raises `JoinRefused` naming the reason: unknown, of the other kind,
        revoked, expired, used; `KeyRevoked` for a live token presented with a key revoked here (a
        fresh key pair may join with it).
        """
        token = self.load(token_id)
        if role != token.kind:
            how = "`farm agent --join`" if token.kind == "agent" else "`farm submit --join`"
            other = "`farm keys invite --client`" if role == "client" else "`farm keys invite` (no --client)"
            refused = JoinRefused(f"join token {token.id} is for {token.kind}s ({how}), not for joining as "
                                  f"{role}: ask for one made with {other}")
            refused.code = "wrong_kind"
            raise refused
        widen = None  # allowed already, for the other role: a live token of this kind makes it "both"
        for allowed_name, allowed_key in self.keys.allowed().items():
            if allowed_key == key:
                if self.keys.role_marks()[allowed_name] in (None, "both", role):
                    return allowed_name
                widen = allowed_name
        state = token.state()
        revoked = [n for n, k in self.keys.revoked().items() if k == key]
        if revoked and state != "live":  # a restart of a revoked node with its old token: not a fallback
            refused = JoinRefused(f"our key {key.decode()} was revoked here (as {revoked[0]}) and join token "
                                  f"{token.id} is {state}: ask for a new join token (`farm keys invite`)")
            refused.code = "key_revoked_token_spent"
            raise refused
        if state == "revoked":
            raise JoinRefused(f"join token {token.id} was revoked (`farm keys revoke-invite`)")
        if state == "used":
            raise JoinRefused(f"join token {token.id} was used already (by {token.uses[0].get('name')}); it is "
                              "single-use: ask for a new one, or a --reusable one for a fleet")
        if state == "expired":
            assert token.expires is not None
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(token.expires))
            raise JoinRefused(f"join token {token.id} expired at {when}")
        if revoked:  # a stolen copy of that key would be let in again too: the node makes a new pair
            raise KeyRevoked(f"the key {key.decode()} was revoked here (as {revoked[0]}); "
                             "join with a fresh key pair")
        name = widen or self._free_name(name)
        self.keys.allow(key.decode(), name=name, role="both" if widen else role)
        token.uses.append({"name": name, "key": key.decode(), "time": time.time(), "role": role})
        self._save(token)
        log.info("%s joined with token %s (key %s)", name, token.id, key.decode())
        return name

    def _free_name(self, wanted: str) -> str:
        taken = set(self.keys.allowed()) | set(self.keys.identities())
        if wanted not in taken:
            return wanted
        for n in range(2, 10_000):
            candidate = f"{wanted[:58]}-{n}"
            if candidate not in taken:
                return candidate
        raise JoinRefused(f"no free name like {wanted!r}")

    def _save(self, token: Token) -> None:
        for folder in (self.keys.root, self.root):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=self.root)  # mkstemp makes it 0600
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(token), f)
        os.replace(tmp, self.path(token.id))
