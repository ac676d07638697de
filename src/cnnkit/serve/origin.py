"""Only this machine's own pages may drive the playground: Host and Origin checks on every request.

A multipart or body-less POST is a "simple" request in the browser's rules: any web site the user visits can
send one to ``http://127.0.0.1:8000`` without a CORS preflight, so without a check it could start training
runs or keep the CPU busy with uploads. Two headers tell such a request apart, and browsers do not let a page
forge either:

- ``Host`` names the address the browser thinks it is talking to. A DNS-rebinding page (``evil.example``
  re-pointed at 127.0.0.1 after it loaded) is same-origin with itself, so it could read every answer, but its
  requests carry ``Host: evil.example``. Only the names this server listens on are accepted.
- ``Origin`` names the page that sent a request (browsers add it to every cross-origin request and to every
  POST); when present it must be the server's own address. ``Sec-Fetch-Site: cross-site`` catches what
  carries no Origin, such as an ``<img src=".../api/zoo/summary?...">`` on another site.

Requests without these headers (curl, scripts, the test client) are not from a browser page, and pass.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def listening_names(host: str, extra: tuple[str, ...] = ()) -> set[str]:
    """The host names a browser may use to reach a server bound to ``host`` (lower case, no brackets)."""
    names = {*LOOPBACK_NAMES, host.strip("[]").lower(), *(name.strip("[]").lower() for name in extra)}
    if host in WILDCARD_HOSTS:  # every address of this machine: its names and the addresses they resolve to
        names |= machine_names()
    names.discard("")
    return names


def machine_names() -> set[str]:
    names = set()
    try:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn(hostname).lower()}
        names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    except OSError:
        pass
    try:  # the address of the default route: connecting a UDP socket sends nothing, it only picks a route
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed on the internet
            names.add(probe.getsockname()[0])
    except OSError:
        pass
    return names


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"``, ``"[::1]:8000"`` or ``"name"`` -> (name in lower case, port or None); None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


class LocalOriginOnly:
    """ASGI middleware: 403 for a request whose Host is not one of ``names`` (with ``port``, when known), or
    whose Origin is another site's."""

    def __init__(self, app, names: set[str], port: int | None = None):
        self.app, self.names, self.port = app, {name.lower() for name in names}, port

    def host_allowed(self, value: str) -> bool:
        parsed = split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        if name not in self.names:
            return False
        return self.port is None or port == self.port or (port is None and self.port == 80)

    def refusal(self, scope) -> str | None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host")
        if host is None or not self.host_allowed(host):
            return (f"Host {host!r} is not an address this playground serves; open it at "
                    f"{self.own_address()} (to reach it under another name, start it with --allow-host NAME).")
        origin = headers.get("origin")
        if origin is not None:
            if not same_address(origin, host):
                return (f"Requests from the page {origin!r} are refused: only the playground's own pages "
                        f"({self.own_address()}) may use its API.")
        if headers.get("sec-fetch-site") == "cross-site" and scope["path"].startswith("/api/"):
            return "Requests from other web sites are refused: only the playground's own pages may use its API."
        return None

    def own_address(self) -> str:
        name = "127.0.0.1" if "127.0.0.1" in self.names else sorted(self.names)[0]
        if is_ipv6(name):
            name = f"[{name}]"
        return f"http://{name}" + (f":{self.port}" if self.port else "")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self.refusal(scope)
        if problem is None:
            return await self.app(scope, receive, send)
        await JSONResponse({"error": problem}, status_code=403)(scope, receive, send)


def same_address(origin: str, host: str) -> bool:
    """Whether the page ``origin`` ("http://name:port", or "null" for sandboxed and file pages) is the server
    the request was sent to (its Host header), default ports included."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    target = split_host(host)
    return target is not None and (parts.hostname.lower(), origin_port or default) == (target[0], target[1] or default)


def is_ipv6(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).version == 6
    except ValueError:
        return False
