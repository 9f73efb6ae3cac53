"""Finding a controller on the local network: mDNS / DNS-SD (the `zeroconf` library).

A controller reachable beyond loopback announces ``_farm._tcp.local.`` with its job port and,
in the TXT record, its CURVE public key (``key``) and file-service port (``files``).
An agent or client looking for one (`discover`) takes only a controller whose announced key
it already trusts: a key in its keys folder (imported, or kept by an earlier join) or the key
of the join argument it was given. Anyone can announce anything on a LAN, so an announcement
with another key is reported and ignored; and the CURVE handshake then proves the controller
holds the secret of the key it announced.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

from farm.keys import parse_key

log = logging.getLogger(__name__)

SERVICE = "_farm._tcp.local."
DISCOVER_S = 5.0


@dataclass(frozen=True)
class Found:
    """An announced controller: its job url, public key (Z85), file port and DNS-SD name."""

    url: str
    key: bytes
    files_port: int | None
    name: str


class Announcer:
    """Announce a controller listening on `url` (host ``0.0.0.0``/``*``: every non-loopback IPv4 address)."""

    def __init__(self, url: str, public_key: str, files_port: int | None = None) -> None:
        from zeroconf import Error, ServiceInfo, Zeroconf

        host, _, port = url.removeprefix("tcp://").rpartition(":")
        addresses = local_addresses() if host in ("0.0.0.0", "*", "") else [socket.gethostbyname(host)]
        if not addresses:
            raise OSError(f"no network address to announce {url} on")
        label = f"farm-{socket.gethostname().split('.')[0]}-{addresses[0].replace('.', '-')}-{port}"[:63]
        properties = {"key": public_key, "v": "1"}
        if files_port is not None:
            properties["files"] = str(files_port)
        self.info = ServiceInfo(SERVICE, f"{label}.{SERVICE}", port=int(port), properties=properties,
                                addresses=[socket.inet_aton(a) for a in addresses], server=f"{label}.local.")
        self.zeroconf = Zeroconf()
        try:
            self.zeroconf.register_service(self.info, allow_name_change=True)
        except Error as exc:
            self.zeroconf.close()
            raise OSError(f"mDNS: {type(exc).__name__}: {exc}") from None
        self.addresses = addresses
        log.info("announcing %s on the local network (mDNS %s) at %s", url, SERVICE, ", ".join(addresses))

    def close(self) -> None:
        try:
            self.zeroconf.unregister_service(self.info)
        finally:
            self.zeroconf.close()


def discover(trusted: dict[bytes, str], timeout: float = DISCOVER_S) -> tuple[Found | None, list[Found]]:
    """Browse the LAN for `timeout` seconds at most: (the first controller whose key is in `trusted`, the others).

    `trusted`: Z85 key -> where we know it from (for messages). Returns as soon as a trusted
    one answers; the others (untrusted keys) are returned for the caller to report.
    """
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    found: list[Found] = []
    hit = threading.Event()
    zc = Zeroconf()

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            info = zc.get_service_info(type_, name, timeout=2000)
            if info is None or not info.port:
                return
            props = {k.decode(errors="replace"): (v or b"") for k, v in info.properties.items()}
            key = parse_key(props.get("key", b""))
            addresses = info.parsed_addresses()
            if key is None or not addresses:
                log.warning("ignoring %s on the local network: no valid controller key or address", name)
                return
            files = props.get("files", b"")
            entry = Found(f"tcp://{addresses[0]}:{info.port}", key,
                          int(files) if files.isdigit() else None, name)
            found.append(entry)
            if key in trusted:
                hit.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

    browser = ServiceBrowser(zc, SERVICE, Listener())
    try:
        hit.wait(timeout)
    finally:
        browser.cancel()
        zc.close()
    good = next((f for f in found if f.key in trusted), None)
    others = {f.url: f for f in found if f.key not in trusted and (good is None or f.url != good.url)}
    return good, list(others.values())


def local_addresses() -> list[str]:
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found
