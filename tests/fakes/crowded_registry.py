"""A fake: a loopback OCI registry that answers slowly and records, as the registry sees it, how many
requests are in flight at once, when each one started, and whose polls overlapped.

Why a fake: the limits under test are measured where a registry would feel them, and the real
`docker-registry` records none of this. It speaks the OCI Distribution API (`/v2/`, `_catalog`,
`tags/list`, manifest `HEAD`/`GET` with `Docker-Content-Digest`) without auth. A repository's owner is
its first path segment, so tests that give each process its own `owner/*` see which processes overlapped.
`throttle(after, retry_after)` answers one request with a 429 and `Retry-After`: the first after `after`
requests that arrives once at least three owners sent one of the last ten (all polls are under way).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.servers import BackgroundServer

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class CrowdedRegistry(BackgroundServer):
    def __init__(self, repositories: dict[str, list[str]], *, delay: float = 0.05) -> None:
        self.repositories = repositories
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        #: per owner (first path segment of a repository): its first and last request's arrival
        self.spans: dict[str, tuple[float, float]] = {}
        #: monotonic arrival time of every request
        self.starts: list[float] = []
        #: monotonic time the throttling 429 was answered
        self.throttled_at: float | None = None
        self._recent: list[str] = []  # owners of the last ten requests
        self._throttle: tuple[int, float] | None = None
        self._lock = threading.Lock()
        super().__init__(_Handler, name="crowded-registry")
        self._httpd.owner = self  # type: ignore[attr-defined]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def throttle(self, after: int, retry_after: float) -> None:
        with self._lock:
            self._throttle = (after, retry_after)

    def enter(self, owner: str) -> float | None:
        """Count a request in; the Retry-After to answer it with, if it is the one to throttle."""
        with self._lock:
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if owner != "-":
                first = self.spans.get(owner, (self.starts[-1], 0.0))[0]
                self.spans[owner] = (first, self.starts[-1])
            self._recent = [*self._recent[-9:], owner]
            if self._throttle is not None and len(self.starts) > self._throttle[0] and len(set(self._recent)) >= 3:
                retry_after = self._throttle[1]
                self._throttle = None
                self.throttled_at = time.monotonic()
                return retry_after
        return None

    def overlapping(self) -> int:
        """The most owners whose requests were under way (between their first and last) at one moment."""
        spans = list(self.spans.values())
        return max((sum(1 for a, b in spans if a <= t <= b) for t, _ in spans), default=0)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def registry(self) -> CrowdedRegistry:
        return self.server.owner  # type: ignore[attr-defined]

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        repository = path.removeprefix("/v2/").split("/tags/")[0].split("/manifests/")[0]
        owner = repository.split("/")[0] if "/" in repository else "-"
        registry = self.registry
        retry_after = registry.enter(owner)
        try:
            time.sleep(registry.delay)
            if retry_after is not None:
                self._answer(429, b"{}", {"Retry-After": f"{retry_after:g}"})
            else:
                self._route(path, repository)
        finally:
            registry.leave()

    do_HEAD = do_GET

    def _route(self, path: str, repository: str) -> None:
        repositories = self.registry.repositories
        if path in ("/v2/", "/v2"):
            self._answer(200, b"{}")
        elif path == "/v2/_catalog":
            self._answer(200, json.dumps({"repositories": sorted(repositories)}).encode())
        elif path.endswith("/tags/list") and repository in repositories:
            self._answer(200, json.dumps({"name": repository, "tags": repositories[repository]}).encode())
        elif "/manifests/" in path and repository in repositories:
            digest = "sha256:" + hashlib.sha256(path.encode()).hexdigest()
            self._answer(200, b'{"schemaVersion": 2}', {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest})
        else:
            self._answer(404, json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]}).encode())
