"""Serving the app with uvicorn: where to listen, a quiet access log (each request only at DEBUG), and the
HTTP side of `watcher run`, which serves from a process of its own next to the Celery worker (a server
thread inside a process that forks its pool would hand the children its socket and its locks)."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from watcher.errors import InputError, StateError

log = logging.getLogger("watcher")
OFF = "off"
ADMIN_TOKEN_FILE = "admin.token"


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


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line, not a server's log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StateError(f"cannot listen on {host}:{port}: {exc.strerror} (WATCHER_LISTEN or --listen)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_forever(host: str, port: int, loglevel: str = "INFO") -> None:
    import uvicorn

    from watcher import logs
    from watcher.web.app import create_app

    logs.setup(loglevel)
    sock = bind(host, port)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = uvicorn.Config(
        create_app(listen), server_header=False, timeout_graceful_shutdown=5, **logs.uvicorn_options(loglevel)
    )
    uvicorn.Server(config).run(sockets=[sock])


def start_beside_worker(listen: str, loglevel: str) -> subprocess.Popen[bytes] | None:
    """`watcher run`'s HTTP side: `watcher serve` as a child process, once it answers (None when `off`)."""
    if listen.strip().lower() == OFF:
        return None
    host, port = parse_listen(listen)
    bind(host, port).close()  # a port in use stops `watcher run` at once, with one line
    from watcher.runtime import parent  # here, not in the child: nothing is imported between fork and exec

    child = subprocess.Popen(
        [sys.executable, "-m", "watcher", "serve", "--listen", listen, "--loglevel", loglevel],
        env=os.environ.copy(),
        preexec_fn=functools.partial(parent.end_with_parent, os.getpid()),  # a worker killed outright keeps no port
    )
    deadline = time.monotonic() + 20
    while not _answers(host, port):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise StateError(f"the HTTP service did not start on {listen}: see the lines above (WATCHER_LISTEN)")
        time.sleep(0.1)
    return child


def _answers(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()


def console_url(listen: str) -> str:
    host, port = parse_listen(listen)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/console/"


def first_admin_token(data_dir: Path) -> Path | None:
    """On the embedded defaults, a first start with no token writes an admin token to the data dir (0600),
    so a newcomer can log in to the console; the path is logged, the token never is. It is the deployment's:
    an operator of workspace `default`, which may create workspaces and act in any."""
    from watcher.db import session_scope
    from watcher.registrations import tokens
    from watcher.runtime.private_files import create_private, private_dir

    with session_scope() as session:
        if tokens.has_any(session):
            return None
        path = Path(data_dir).resolve() / ADMIN_TOKEN_FILE
        token = tokens.create(session, "admin", "operator")
        private_dir(path.parent)
        if path.exists():
            path.unlink()
        create_private(path, token + "\n")
    return path
