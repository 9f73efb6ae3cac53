"""Bearer tokens for the HTTP API, kept beside the CURVE keys.

``KEYS/http-tokens.json`` (mode 0600, in the 0700 keys folder; see `farm.keys`) holds, per
token, its name, when it was made and the SHA-256 of the token: the token itself is shown
once, when it is made, and never stored. Tokens are 256 random bits, so a plain hash is as
hard to reverse as the token is to guess. A running server re-reads the file when it
changes, so `farm keys api-token revoke NAME` takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from farm.keys import SecurityError, check_name, default_keys_dir

TOKENS_FILE = "http-tokens.json"
TOKEN_PREFIX = "farm_"  # makes a leaked token recognisable (secret scanners, logs)
REREAD_EVERY_S = 1.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """The API tokens of one keys folder: `new`, `listing`, `revoke`, and `verify` for the server."""

    def __init__(self, keys_dir: Path | str | None = None) -> None:
        self.root = Path(keys_dir).expanduser() if keys_dir is not None else default_keys_dir()
        self.path = self.root / TOKENS_FILE
        self._lock = threading.Lock()
        # (the file's stamp, digest -> name)
        self._cache: tuple[tuple[int, int, int] | None, dict[str, str]] = (None, {})
        self._checked = 0.0

    # -- reading -----------------------------------------------------------------------

    def _read(self) -> list[dict[str, Any]]:
        """The stored entries; an error naming the file if it is unsafe or malformed."""
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return []
        if mode & 0o077:
            raise SecurityError(f"{self.path}: the token file is open to group or others (mode "
                                f"{stat.S_IMODE(mode):04o}); run `chmod 600 {self.path}`")
        try:
            data = json.loads(self.path.read_text())
            entries = data["tokens"]
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("name"), str)
                    and isinstance(e.get("sha256"), str) for e in entries):
                raise TypeError("tokens is not a list of {name, sha256}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SecurityError(f"{self.path}: not a token file ({exc})") from None
        return entries

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def listing(self) -> list[dict[str, Any]]:
        """Every token: ``{"name", "created"}`` (epoch seconds), by name. Never the token itself."""
        return sorted(({"name": e["name"], "created": e.get("created")} for e in self._read()),
                      key=lambda e: e["name"])

    def any(self) -> bool:
        """Whether at least one token exists (a server beyond loopback needs one)."""
        return bool(self._read())

    def verify(self, token: str) -> str | None:
        """The name of the token, or None if it is not (or no longer) one of ours.

        Thread-safe; re-reads the file at most every `REREAD_EVERY_S` when it changed. A file
        that turned unreadable or unsafe admits nobody until it is fixed.
        """
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= REREAD_EVERY_S:
                self._checked = now
                stamp = self._stamp()
                if stamp != self._cache[0]:
                    try:
                        table = {e["sha256"]: e["name"] for e in self._read()}
                    except SecurityError:
                        table = {}
                    self._cache = (stamp, table)
            table = self._cache[1]
        wanted = digest(token)
        found = None
        for known, name in table.items():  # compare all, in constant time each
            if hmac.compare_digest(known, wanted):
                found = name
        return found

    # -- writing -----------------------------------------------------------------------

    def new(self, name: str) -> str:
        """Make a token called `name` (a key name: letters, digits, '.', '_', '-'); returns it, once."""
        check_name(name)
        entries = self._read()
        if any(e["name"] == name for e in entries):
            raise SecurityError(f"a token named {name!r} exists already in {self.path} "
                                f"(revoke it first: farm keys api-token revoke {name})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entries.append({"name": name, "sha256": digest(token), "created": round(time.time())})
        self._write(entries)
        self._checked = 0.0
        return token

    def revoke(self, name: str) -> None:
        entries = self._read()
        kept = [e for e in entries if e["name"] != name]
        if len(kept) == len(entries):
            names = ", ".join(sorted(e["name"] for e in entries)) or "none"
            raise SecurityError(f"no token named {name!r} in {self.path} (tokens: {names})")
        self._write(kept)
        self._checked = 0.0

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # mkdir's mode is masked by the umask
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.root)  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"tokens": entries}, f, indent=1)
            os.replace(tmp, self.path)  # atomic: a running server never reads half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
