"""A forwarding proxy in front of a real registry that injects the failures real networks produce.

Not a fake: every request it does not break is answered by the real registry behind it. Rules match a
request path by regex and either answer with a status, answer with a malformed body, drop the
connection without answering, or forward the request only after a delay (a slow network) — optionally
only after letting the first N matching requests through.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Literal

import httpx

from tests.support.servers import BackgroundServer

Action = Literal["status", "malformed", "drop", "delay"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Rule:
    pattern: re.Pattern[str]
    action: Action
    status: int = 500
    after: int = 0  # let this many matching requests through first
    headers: dict[str, str] | None = None
    seen: int = 0
    seconds: float = 0.0  # how long a `delay` rule holds a request before forwarding it


class FaultProxy(BackgroundServer):
    def __init__(self, target: str, *, tls_cert: tuple[str, str] | None = None) -> None:
        self.target = target.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_GET

        context = None
        if tls_cert is not None:  # serve TLS with a certificate the client does not trust
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls_cert)
        super().__init__(Handler, name="fault-proxy", tls=context)

    def add(
        self,
        path_regex: str,
        action: Action,
        *,
        status: int = 500,
        after: int = 0,
        headers: dict[str, str] | None = None,
        seconds: float = 0.0,
    ) -> Rule:
        rule = Rule(re.compile(path_regex), action, status, after, headers, seconds=seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def close(self) -> None:
        super().close()
        self._http.close()

    def _match(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.pattern.search(path):
                    rule.seen += 1
                    if rule.seen > rule.after:
                        return rule
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((handler.command, handler.path))
        rule = self._match(handler.path)
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
            rule = None
        if rule is not None and rule.action == "drop":
            handler.close_connection = True
            handler.connection.close()
            return
        if rule is not None:
            body = (
                b'{"repositories": ["trunc'
                if rule.action == "malformed"
                else b'{"errors":[{"code":"INJECTED","message":"injected"}]}'
            )
            handler.send_response(200 if rule.action == "malformed" else rule.status)
            for key, value in (rule.headers or {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
        upstream = self._http.request(handler.command, self.target + handler.path, headers=headers)
        handler.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header(
            "Content-Length",
            str(len(upstream.content)) if handler.command != "HEAD" else upstream.headers.get("content-length", "0"),
        )
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(upstream.content)
