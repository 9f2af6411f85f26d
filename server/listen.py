"""Listen addresses: `host:port` as a person types it, checked before anything binds.

gRPC accepts (and silently wraps) a port above 65535, and binds with SO_REUSEPORT, so a second
server on a taken port starts and shares it; the server therefore checks each address here and
binds with reuse turned off (server.app), so a taken port is a startup error.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


class ListenAddressError(ValueError):
    """A listen address that is not host:port with a port from 0 to 65535."""


@dataclass(frozen=True)
class ListenAddress:
    """A checked address to listen on; port 0 asks the system for a free port."""

    host: str
    port: int

    def text(self) -> str:
        """host:port as gRPC takes it (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(text: str, flag: str = "--listen") -> ListenAddress:
    """host:port (IPv6 as [addr]:port), port 0-65535; ListenAddressError names the flag."""

    def bad(why: str) -> ListenAddressError:
        return ListenAddressError(
            f"{flag} {text!r}: {why} (give HOST:PORT, e.g. 127.0.0.1:7420, [::1]:7420 or "
            "0.0.0.0:7420; port 0 picks a free one)"
        )

    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise bad("no port")
    if not host:
        raise bad("no host")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad("the port is not a number")
    port = int(port_text)
    if port > 65535:
        raise bad("ports go from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("not an IPv6 address in the brackets") from None
    elif ":" in host:
        raise bad("put an IPv6 address in brackets")
    elif any(c.isspace() or c in "/?#@" for c in host):
        raise bad("not a host name or address")
    return ListenAddress(host, port)


def check_free(address: ListenAddress) -> None:
    """Bind the address once, as the server will, and let go: OSError (with the address in its
    message) when another process listens there. Port 0 is always free. SO_REUSEADDR as gRPC
    sets it, so a port left in TIME_WAIT by a server just stopped still counts as free."""
    if address.port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {address.text()}: {e.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as e:
                raise OSError(f"cannot listen on {address.text()}: {e.strerror}") from None
