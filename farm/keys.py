"""The keys folder: CURVE key pairs per identity and the public keys a controller allows.

A keys folder (``$FARM_KEYS``, else ``$XDG_CONFIG_HOME/farm/keys``, else ``~/.config/farm/keys``)
holds ``NAME.key`` (a public key) and ``NAME.key_secret`` (its secret, mode 0600) per identity,
and ``allowed/NAME.key`` for every public key a controller accepts. The files are pyzmq/czmq
certificates, so ``zmq.auth.load_certificate`` reads them too. `farm.security` puts them to
use on sockets.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from farm.errors import FarmError

log = logging.getLogger(__name__)

ALLOWED = "allowed"
REVOKED = "revoked"  # allowed/ files moved aside by `revoke`: the controller says "revoked", not "unknown"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What an allowed key may do on the controller (farm.security.ServerSecurity.refusal): serve as an
# agent, submit and steer as a client, or both. Kept in allowed/NAME.key's metadata, which
# zmq.auth and czmq ignore; a file without one (written before roles) counts as "both".
ROLES = ("agent", "client", "both")
DEFAULT_ROLE = "both"
_ROLE_LINE = re.compile(r'^\s*role\s*=\s*"([a-z]+)"\s*$', re.M)
_PUBLIC_TEMPLATE = """#   ZeroMQ CURVE Public Certificate, written by `farm keys`
#   Share it freely: it lets its holder's peers recognise it, nothing more.

metadata
    name = "{name}"{role}
curve
    public-key = "{key}"
"""


class SecurityError(FarmError):
    """Keys or authentication are set up wrongly."""


class KeyFileError(SecurityError):
    """A key file is missing, unreadable, malformed or too widely readable; names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class KeyPair:
    """An identity: its name, Z85 public key and Z85 secret key (as bytes, as pyzmq takes them)."""

    name: str
    public: bytes
    secret: bytes


def default_keys_dir() -> Path:
    if os.environ.get("FARM_KEYS"):
        return Path(os.environ["FARM_KEYS"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "farm" / "keys"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecurityError(f"bad key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise SecurityError(f"bad key role {role!r}: use one of {', '.join(ROLES)}")
    return role


def parse_key(text: str | bytes) -> bytes | None:
    """A Z85 key (40 characters) or a raw 32-byte key as Z85 bytes; None if it is neither."""
    if isinstance(text, bytes) and len(text) == 32:
        return z85.encode(text)
    try:
        raw = (text.encode("ascii") if isinstance(text, str) else bytes(text)).strip()
        return raw if len(raw) == 40 and len(z85.decode(raw)) == 32 else None
    # UnicodeEncodeError is a ValueError; struct.error: a group of five characters past 2**32
    except (ValueError, KeyError, IndexError, TypeError, struct.error):
        return None


def read_certificate(path: Path, *, secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys from a certificate file, with errors that name the file."""
    path = Path(path)
    if secret:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyFileError(path, "no such key file") from None
        except OSError as exc:
            raise KeyFileError(path, f"cannot read it: {exc.strerror}") from None
        if stat.S_ISREG(mode) and mode & 0o077:
            raise KeyFileError(path, f"secret key file is open to group or others (mode "
                                     f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except FileNotFoundError:
        raise KeyFileError(path, "no such key file") from None
    except OSError as exc:
        missing = not path.exists()
        problem = "no such key file" if missing else f"cannot read it: {exc.strerror or exc}"
        raise KeyFileError(path, problem) from None
    except (ValueError, UnicodeError):
        raise KeyFileError(path, "not a key file: it has no public-key line") from None
    if parse_key(public) is None:
        raise KeyFileError(path, "malformed public key (expected 40 Z85 characters)")
    if not secret:
        return public, None
    if secret_key is None:
        raise KeyFileError(path, "has no secret-key line (is it a public key file?)")
    if parse_key(secret_key) is None:
        raise KeyFileError(path, "malformed secret key (expected 40 Z85 characters)")
    if zmq.curve_public(secret_key) != public:
        raise KeyFileError(path, "its public and secret keys do not belong together")
    return public, secret_key


def _classify(ref: str | bytes | Path) -> tuple[str, bytes | Path | str]:
    """("key", Z85 bytes), ("file", path) or ("name", text): how to read a key reference."""
    if isinstance(ref, Path):
        return "file", ref.expanduser()
    key = parse_key(ref)
    if key is not None:
        return "key", key  # Z85 keys may contain "/", so this comes before the path test
    if isinstance(ref, bytes):
        raise SecurityError(f"not a CURVE public key: {ref!r}")
    if os.sep in ref or ref.endswith((PUBLIC_SUFFIX, SECRET_SUFFIX)):
        return "file", Path(ref).expanduser()
    return "name", ref


def _role_in(path: Path) -> str | None:
    """The role written in a key file's metadata; None when it has none (or an unknown one)."""
    try:
        found = _ROLE_LINE.search(path.read_text(errors="replace"))
    except OSError:
        return None
    return found.group(1) if found and found.group(1) in ROLES else None


class KeyStore:
    """A keys folder: identities (`NAME.key` + `NAME.key_secret`) and `allowed/` public keys."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_keys_dir()
        self.allowed_dir = self.root / ALLOWED
        self.revoked_dir = self.root / REVOKED

    def public_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{PUBLIC_SUFFIX}"

    def secret_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{SECRET_SUFFIX}"

    def allowed_path(self, name: str) -> Path:
        return self.allowed_dir / f"{check_name(name)}{PUBLIC_SUFFIX}"

    # -- identities ------------------------------------------------------------------

    def create(self, name: str, *, force: bool = False) -> KeyPair:
        """Make a new key pair; refuses to replace an existing one unless `force`."""
        public_path, secret_path = self.public_path(name), self.secret_path(name)
        existing = [p for p in (public_path, secret_path) if p.exists()]
        if existing and not force:
            raise KeyFileError(existing[0], f"key {name!r} exists already (use --force to replace it; every "
                                            "peer that trusts the old key must then be given the new one)")
        self._make_dirs()
        # Write into a private temp folder and rename into place: the secret is never readable by others.
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
        try:
            made_public, made_secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(made_secret, 0o600)
            os.chmod(made_public, 0o644)
            os.replace(made_secret, secret_path)
            os.replace(made_public, public_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("created key pair %s in %s", name, self.root)
        return self.load(name)

    def load(self, name: str) -> KeyPair:
        """An identity with its secret (checked: present, well-formed, mode 0600, matching its .key)."""
        secret_path = self.secret_path(name)
        if not secret_path.exists() and not secret_path.is_symlink():
            hint = " (only its public key is here)" if self.public_path(name).exists() else ""
            raise KeyFileError(secret_path, f"no secret key {name!r}{hint}; "
                                            f"create one with `farm keys create {name}`")
        public, secret = read_certificate(secret_path, secret=True)
        assert secret is not None
        public_path = self.public_path(name)
        if public_path.exists() and read_certificate(public_path)[0] != public:
            raise KeyFileError(public_path, f"does not match the public key in {secret_path}")
        return KeyPair(name, public, secret)

    def public_key(self, ref: str | bytes | Path) -> bytes:
        """A public key from a Z85 key, a path to a key file, or the name of a key in this folder."""
        kind, value = _classify(ref)
        if kind == "key":
            assert isinstance(value, bytes)
            return value
        if kind == "file":
            return read_certificate(Path(value))[0]
        name = str(value)
        if _NAME.fullmatch(name):
            for path in (self.public_path(name), self.allowed_path(name), self.secret_path(name)):
                if path.exists():
                    return read_certificate(path)[0]
        raise SecurityError(f"{name!r} is not a key file, a 40-character Z85 key, "
                            f"or a key named in {self.root}")

    def add_public(self, name: str, ref: str | bytes | Path, *, force: bool = False) -> bytes:
        """Store a peer's public key as NAME.key (e.g. the controller's, on a node)."""
        key = self.public_key(ref)
        if self.secret_path(name).exists():
            raise KeyFileError(self.secret_path(name), f"{name!r} is one of this machine's own identities")
        self._write_public(self.public_path(name), name, key, force=force)
        return key

    # -- the allow list --------------------------------------------------------------

    def allow(self, ref: str | Path, *, name: str | None = None, force: bool = False,
              role: str | None = None) -> tuple[str, bytes]:
        """Copy a public key into allowed/ (from a file, a name here, or a Z85 key with `name`).

        `role` (ROLES): what the key may do; None: DEFAULT_ROLE for a new key, the role it has for
        one allowed already under that name. Given for an allowed key, it changes its role.
        """
        if role is not None:
            check_role(role)
        kind, value = _classify(ref)
        if name is None:
            if kind == "file":
                name = Path(value).name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX)
            elif kind == "name":
                name = str(value)
            else:
                raise SecurityError("a bare key needs a name: farm keys allow KEY --name NAME")
        key = self.public_key(ref)
        path = self.allowed_path(name)
        if role is None:  # a new key gets the default; one allowed already keeps its role (old files: none)
            role = _role_in(path) if path.is_file() and read_certificate(path)[0] == key else DEFAULT_ROLE
        self._write_public(path, name, key, force=force, role=role)
        log.info("allowed key %s as %s (%s)", name, role, key.decode())
        return name, key

    def role_marks(self) -> dict[str, str | None]:
        """name -> the role written in allowed/NAME.key (None: a file from before roles, or unreadable)."""
        return {name: _role_in(self.allowed_path(name)) for name in self.allowed()}

    def revoke(self, name: str) -> bytes:
        path = self.allowed_path(name)
        if not path.exists():
            names = ", ".join(self.allowed()) or "none"
            raise KeyFileError(path, f"{name!r} is not allowed (allowed: {names})")
        key = read_certificate(path)[0] if path.is_file() else b""
        if key:  # kept aside, so a refused handshake can be told apart from one by a stranger
            self.revoked_dir.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, self.revoked_dir / path.name)
        else:
            path.unlink()
        log.info("revoked key %s", name)
        return key

    def revoked(self) -> dict[str, bytes]:
        """name -> public key of every revoked key that is not allowed again."""
        if not self.revoked_dir.is_dir():
            return {}
        allowed = set(self.allowed().values())
        found = {}
        for path in sorted(self.revoked_dir.glob(f"*{PUBLIC_SUFFIX}")):
            try:
                key = read_certificate(path)[0]
            except KeyFileError as exc:
                log.warning("%s", exc)
                continue
            if key not in allowed:
                found[path.name.removesuffix(PUBLIC_SUFFIX)] = key
        return found

    def allowed(self) -> dict[str, bytes]:
        """name -> public key for every file in allowed/; a malformed one is an error naming it."""
        if not self.allowed_dir.is_dir():
            return {}
        found = {}
        for path in sorted(self.allowed_dir.glob(f"*{PUBLIC_SUFFIX}")):
            found[path.name.removesuffix(PUBLIC_SUFFIX)] = read_certificate(path)[0]
        return found

    def identities(self) -> dict[str, tuple[bytes, bool]]:
        """name -> (public key, whether its secret is here); every secret is checked as `load` does."""
        found: dict[str, tuple[bytes, bool]] = {}
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob(f"*{SECRET_SUFFIX}")):
            name = path.name.removesuffix(SECRET_SUFFIX)
            found[name] = (self.load(name).public, True)
        for path in sorted(self.root.glob(f"*{PUBLIC_SUFFIX}")):
            found.setdefault(path.name.removesuffix(PUBLIC_SUFFIX), (read_certificate(path)[0], False))
        return found

    def listing(self, roles: dict[bytes, str] | None = None) -> list[dict[str, object]]:
        """Every identity and allowed key: name, public key, secret here, allowed, role.

        `roles`: allowed key -> role (`farm.security.allowed_roles`); role is None for a key not allowed.
        """
        allowed = self.allowed()
        roles = roles or {}
        allowed_keys = set(allowed.values())
        identities = self.identities()
        rows: list[dict[str, object]] = [
            {"name": name, "public_key": key.decode(), "secret": has_secret, "allowed": key in allowed_keys,
             "role": roles.get(key, DEFAULT_ROLE) if key in allowed_keys else None}
            for name, (key, has_secret) in identities.items()
        ]
        for name, key in allowed.items():  # allowed keys that are no identity of the same name here
            if identities.get(name, (None,))[0] != key:
                rows.append({"name": name, "public_key": key.decode(), "secret": False, "allowed": True,
                             "role": roles.get(key, DEFAULT_ROLE)})
        return sorted(rows, key=lambda r: (str(r["name"]), not r["secret"]))

    # -- files -----------------------------------------------------------------------

    def _make_dirs(self) -> None:
        for folder in (self.root, self.allowed_dir):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask

    def _write_public(self, path: Path, name: str, key: bytes, *, force: bool,
                      role: str | None = None) -> None:
        if path.exists() and not force:
            if read_certificate(path)[0] != key:
                raise KeyFileError(path, f"a different key is stored as {name!r} already "
                                         "(use --force to replace it)")
            if role in (None, _role_in(path)):
                return  # the same key and role: nothing to do (a new role is written below)
        self._make_dirs()
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(_PUBLIC_TEMPLATE.format(name=name, key=key.decode(),
                                            role="" if role is None else f'\n    role = "{role}"'))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic, and a new inode, which a running ServerSecurity notices

