"""A FAKE of GCR's tag-list extension, for tests only: a thin proxy in front of a REAL registry.

Everything (auth challenges, blobs, manifests, catalog) is passed through to the real Distribution registry
untouched; only `GET /v2/<name>/tags/list` answers gain GCR's `manifest` map, as go-containerregistry's
`pkg/v1/google/list.go` reads it:

    {"name": ..., "tags": [...], "child": [],
     "manifest": {"sha256:…": {"imageSizeBytes": "…", "layerId": "", "mediaType": "…", "tag": ["latest"],
                              "timeCreatedMs": "…", "timeUploadedMs": "…"}}}

Digests come from `HEAD` on the real registry (with the caller's own bearer token); `timeUploadedMs` is the
moment the proxy saw the manifest PUT (or first saw the digest), as a string like GCR or, with
`millis_as_int=True`, an integer like Artifact Registry. `hide` leaves digests out of the map, so a client
must fall back to `HEAD` for their tags. `timeCreatedMs` is "0" (unknown), as GCR sends it for an image
it did not build, unless `entries[digest]` says otherwise: its keys replace the entry's (a build time, or what
a hostile server would send). `calls` records the method and path of every request it proxied.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.servers import BackgroundServer

__all__ = ["FakeGcr"]

_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}


class FakeGcr(BackgroundServer):
    def __init__(self, upstream: str, *, millis_as_int: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.millis_as_int = millis_as_int
        self.hide: set[str] = set()
        self.entries: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.uploaded_ms: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=10.0)
        super().__init__(_handler_for(self), name="fake-gcr")

    def close(self) -> None:
        super().close()
        self._http.close()

    def count(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.calls if m == method and fragment in p)

    # -- proxying ---------------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        with self._lock:
            self.calls.append((method, urlsplit(path).path))
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        response = self._http.request(method, self.upstream + path, headers=sent, content=body or None)
        if method == "PUT" and response.status_code == 201 and "/manifests/" in path:
            self._record_upload(path, response.headers.get("docker-content-digest", ""))
        if method == "GET" and response.status_code == 200 and urlsplit(path).path.endswith("/tags/list"):
            return self._with_manifest_map(response, headers.get("Authorization") or headers.get("authorization"))
        return response

    def _record_upload(self, path: str, digest: str) -> None:
        repository = urlsplit(path).path.removeprefix("/v2/").rsplit("/manifests/", 1)[0]
        with self._lock:
            self.uploaded_ms.setdefault((repository, digest), time.time_ns() // 1_000_000)

    def _with_manifest_map(self, response: httpx.Response, authorization: str | None) -> httpx.Response:
        body = response.json()
        repository = str(body.get("name", ""))
        by_digest: dict[str, dict[str, Any]] = {}
        for tag in body.get("tags") or []:
            head = self._http.head(
                f"{self.upstream}/v2/{repository}/manifests/{tag}",
                headers={"Accept": _MANIFEST_TYPES, **({"Authorization": authorization} if authorization else {})},
            )
            digest = head.headers.get("docker-content-digest")
            if head.status_code != 200 or not digest or digest in self.hide:
                continue
            entry = by_digest.setdefault(digest, self._entry(repository, digest, head))
            entry["tag"].append(tag)
        body["manifest"] = by_digest
        body.setdefault("child", [])
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
        return httpx.Response(200, headers=headers, content=json.dumps(body).encode())

    def _entry(self, repository: str, digest: str, head: httpx.Response) -> dict[str, Any]:
        with self._lock:
            millis = self.uploaded_ms.setdefault((repository, digest), time.time_ns() // 1_000_000)
        return {
            "imageSizeBytes": head.headers.get("content-length", "0"),
            "layerId": "",
            "mediaType": head.headers.get("content-type", ""),
            "tag": [],
            "timeCreatedMs": "0",
            "timeUploadedMs": millis if self.millis_as_int else str(millis),
        } | self.entries.get(digest, {})


def _handler_for(fake: FakeGcr) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            response = fake.forward(self.command, self.path, dict(self.headers.items()), body)
            content = response.content
            self.send_response(response.status_code)
            for key, value in response.headers.multi_items():
                if key.lower() in _HOP_BY_HOP:
                    continue
                if key.lower() == "location":
                    value = value.replace(fake.upstream, fake.url)
                self.send_header(key, value)
            length_header = response.headers.get("content-length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length_header or str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _proxy

    return Handler
