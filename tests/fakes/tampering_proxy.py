"""A fake: a loopback proxy in front of a real registry that counts every request and, in a `mode`, changes
what the registry served the way a compromised mirror would.

Why a proxy: the real `docker-registry` cannot be made to lie, and the lie must be told in the registry's
own wire format, with its own headers (`Docker-Content-Digest` still the real one). Modes:

- `honest`: every answer as the registry gave it.
- `config`: a blob's body has its JSON's `created` and labels replaced (a valid config, another digest).
- `manifest`: a manifest fetched by digest is replaced by another manifest (`planted`, bytes the test
  gives: a real manifest of another image, so everything it names exists).
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import httpx

from tests.support.servers import BackgroundServer, QuietHandler

MODES = ("honest", "config", "manifest")
#: the `created` a tampered config claims
PLANTED_CREATED = "1999-01-01T00:00:00Z"


class TamperingProxy(BackgroundServer):
    def __init__(self, upstream: str, mode: str = "honest") -> None:
        assert mode in MODES
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.planted: bytes = b""
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=10.0)
        super().__init__(_Handler, name="tampering-proxy")

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.paths)

    def record(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)

    def close(self) -> None:
        super().close()
        self._http.close()


class _Handler(QuietHandler):
    server_version = "tampering-proxy"

    def do_GET(self) -> None:
        proxy: TamperingProxy = self.owner
        proxy.record(self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
        answer = proxy._http.request(self.command, proxy.upstream + self.path, headers=headers)
        body = answer.content
        path = urlsplit(self.path).path
        if answer.status_code == 200 and self.command == "GET":
            if proxy.mode == "config" and "/blobs/" in path:
                config = json.loads(body)
                config["created"] = PLANTED_CREATED
                config.setdefault("config", {})["Labels"] = {"org.opencontainers.image.source": "https://evil.example"}
                body = json.dumps(config).encode()
            elif proxy.mode == "manifest" and "/manifests/sha256:" in path:
                body = proxy.planted
        self.send_response(answer.status_code)
        for key in ("content-type", "docker-content-digest", "www-authenticate", "location"):
            if key in answer.headers:
                self.send_header(key, answer.headers[key])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET
