"""Join commands: what `farm controller` and `farm keys invite` print for a new node to run."""

from __future__ import annotations

import shlex

from farm.errors import FarmError
from farm.keys import KeyStore
from farm.tokens import TokenStore, format_join

URL_FILE = "controller.url"  # in the keys folder: where nodes reach the controller, for `farm keys invite`


def advertised_url(bound: str) -> str:
    """The job url a node on another machine dials: a wildcard host becomes this machine's address."""
    host, _, port = bound.removeprefix("tcp://").rpartition(":")
    if bound.startswith("tcp://") and host in WILDCARDS:
        from farm.discovery import local_addresses

        addresses = local_addresses()
        if addresses:
            return f"tcp://{addresses[0]}:{port}"
    return bound


WILDCARDS = ("0.0.0.0", "*", "[::]", "::")


def openable_urls(bound: str) -> list[str]:
    """For an address on every interface (``tcp://0.0.0.0:5555``, ``http://0.0.0.0:8656/``), the
    addresses another machine can use: this machine's name and its IP addresses. [] for any other."""
    scheme, sep, rest = bound.partition("://")
    hostport, slash, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    if not sep or host not in WILDCARDS:
        return []
    import socket

    from farm.discovery import local_addresses

    names = [socket.gethostname(), *(f"[{a}]" if ":" in a else a for a in local_addresses())]
    return [f"{scheme}://{name}:{port}{slash}{path}" for name in dict.fromkeys(names) if name]


def remember_url(store: KeyStore, url: str) -> None:
    store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (store.root / URL_FILE).write_text(url + "\n")


def known_url(store: KeyStore) -> str:
    try:
        return (store.root / URL_FILE).read_text().strip()
    except OSError:
        raise FarmError(f"no controller address recorded in {store.root / URL_FILE} (start `farm controller` "
                        "once with these keys, or give --url tcp://HOST:PORT)") from None


PROBE_S = 1.0  # how long `listening` waits for a TCP connection


def listening(url: str) -> bool:
    """Whether something accepts TCP connections at `url` (``tcp://HOST:PORT``) within `PROBE_S`.
    A plain connect, closed at once: a ZeroMQ socket drops it as a peer that never greeted."""
    import socket

    host, _, port = url.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S):
            return True
    except (OSError, ValueError):
        return False


def recorded_warning(url: str) -> str | None:
    """Why the address `farm controller` last recorded may not be the one to invite to (nothing listens
    there now: that controller stopped, or another with these keys recorded it last), or None."""
    if listening(url):
        return None
    return (f"nothing answers at {url}, the address `farm controller` last recorded with these keys (that "
            "controller may have stopped): a node joins once it runs there again; give --url to name another")


def invite(store: KeyStore, server_name: str, url: str, *, expires_s: float | None, single_use: bool,
           role: str = "agent") -> tuple[str, str, str]:
    """A new token of kind `role` ("agent", "client"): (token id, join argument, ready command line)."""
    key = store.load(server_name).public
    token = TokenStore(store).create(expires_s=expires_s, single_use=single_use, kind=role)
    argument = format_join(url, key, token)
    command = "agent" if role == "agent" else "submit"
    return token.split("-")[0], argument, f"farm {command} --join {shlex.quote(argument)}" + (
        "" if role == "agent" else " PROJECT")
