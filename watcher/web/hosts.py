"""Which `Host` the HTTP side answers: a guard against DNS rebinding.

A page on `evil.example` whose name is made to resolve to this server's address can read, from the
victim's browser, whatever the server answers without a credential (`/metrics`, `/healthz`, the console's
login page). Such a request always carries the page's own name as its `Host`, so a request is served only
when its `Host` is one of:

- the host of `WATCHER_PUBLIC_URL`, the host of `WATCHER_LISTEN` (when it names one), and each entry of
  `WATCHER_ALLOWED_HOSTS` (comma-separated names or addresses; `.example.com` allows it and every name
  under it; `*` allows any host, for a proxy that checks it already);
- `localhost` (and names under `.localhost`), which no page elsewhere can be served from;
- any IP address literal (`127.0.0.1`, `[::1]`, a pod's address): a browser sends one only for a page
  loaded from that very address, which is this server. So a health probe or a scrape by address works
  without any setting.

Ports are not compared: a rebinding page cannot take an allowed name, whatever the port; and behind a
proxy or a port mapping the port a client used is not the one the server listens on. Names compare
without case and without a trailing dot. A request without `Host` (HTTP/1.0) is served: browsers always
send one. Anything else gets 400 in the API's error shape. The webhook receivers (`/hooks/v1/`) are not
checked: each request must carry its registry's secret or signature, a page has neither, and a registry
that reaches the watcher by another name (a cluster service name) would otherwise retry a refused
notification forever.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from watcher.errors import InputError
from watcher.settings import Settings, get_settings
from watcher.web.errors import send_error

EXEMPT_PREFIXES = ("/hooks/v1/",)
#: an allowlist entry: a name (`.name` for a domain and all under it) or an address, with or without a port
_ENTRY = re.compile(
    r"^(?:\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)(?::\d+)?$"
)
ANY = "*"


def host_name(value: str) -> str:
    """The host part of a `Host` header or an allowlist entry, without port, brackets, case or final dot."""
    text = value.strip().lower()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text.rstrip(".")


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The names a request's `Host` may be; addresses and `localhost` always."""

    def __init__(self, names: set[str], suffixes: tuple[str, ...] = (), any_host: bool = False) -> None:
        self.names = names
        self.suffixes = (".localhost", *suffixes)
        self.any_host = any_host

    @classmethod
    def from_settings(cls, settings: Settings | None = None, listen: str | None = None) -> AllowedHosts:
        """From the settings; `listen` is where this process listens when not `WATCHER_LISTEN` (`--listen`)."""
        settings = settings or get_settings()
        names = {"localhost"}
        suffixes: list[str] = []
        any_host = False
        for entry in settings.allowed_hosts.split(","):
            if not entry.strip():
                continue
            if entry.strip() == ANY:
                any_host = True
                continue
            name = host_name(entry)
            if not _ENTRY.match(entry.strip()):
                raise InputError(
                    f"WATCHER_ALLOWED_HOSTS: {entry.strip()[:80]!r} is not a host name: "
                    "use comma-separated names such as watcher.example.com or .example.com"
                )
            if name.startswith("."):
                suffixes.append(name)
            else:
                names.add(name)
        if settings.public_url.strip():
            public = urlsplit(settings.public_url.strip()).hostname
            if public:
                names.add(public.rstrip("."))
        for where in {settings.listen, listen or settings.listen}:
            if where.strip().lower() != "off":
                names.add(host_name(where))
        return cls(names - {""}, tuple(suffixes), any_host)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return (
            self.any_host
            or name in self.names
            or is_address(name)
            or any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes)
        )


class HostCheck:
    """ASGI middleware: a request whose `Host` is not allowed gets 400 before any route sees it."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        host = next((value for key, value in scope.get("headers", []) if key == b"host"), None)
        if host is None or self.allowed.allows(host.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        shown = host.decode("latin-1")[:80]
        message = f"host {shown!r} is not served here: add it to WATCHER_ALLOWED_HOSTS"
        await send_error(send, 400, "bad_request", message)
