"""Serving the app with uvicorn: where to listen, and a quiet access log (each request only at DEBUG)."""

from __future__ import annotations

import ipaddress

from watcher.errors import InputError


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces) into a host and a port."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"listen address {text!r} is not valid: use HOST:PORT, e.g. 127.0.0.1:8080")
    if host and not _is_host(host):
        raise InputError(f"listen address {text!r} is not valid: {host!r} is not a host name or IP address")
    return host or "0.0.0.0", int(port_text)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        labels = host.split(".")
        return all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)


def serve_forever(host: str, port: int, loglevel: str = "INFO") -> None:
    import uvicorn

    from watcher import logs
    from watcher.web.app import create_app

    logs.setup(loglevel)
    uvicorn.run(create_app(), host=host, port=port, server_header=False, **logs.uvicorn_options(loglevel))
