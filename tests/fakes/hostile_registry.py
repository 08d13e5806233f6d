"""A fake: a loopback OCI registry that misbehaves on purpose, one `mode` for each attack the watcher must
survive, and a `Recorder` on a second port that notes every Authorization header it is sent.

Why a fake: the real `docker-registry` cannot be made to lie. In `normal` mode this speaks the OCI
Distribution API as the spec describes it (`/v2/`, `_catalog`, `tags/list`, manifest `HEAD`/`GET` with
`Docker-Content-Digest`), optionally behind Basic auth; every other mode changes one thing:

network and credentials
- `foreign_link`: catalog and tag pages carry `Link: <RECORDER/...>; rel="next"` to another origin.
- `redirect_foreign_realm`: every `/v2/<repo>/...` request is redirected (307) to the recorder, which
  challenges with `Bearer realm="RECORDER/token"`.
- `http_realm`: the registry (serve it with TLS) challenges with a realm over plain http on the recorder.
- `foreign_realm`: the registry challenges with `Bearer realm="RECORDER/token"` (a realm another host may
  legitimately be; the network policy still decides whether it may be reached).
- `huge_body`: tag lists are `huge_bytes` long (default 40 MiB), streamed with a Content-Length.
- `endless_chunks`: tag lists are a chunked body that never ends (the server gives up after 60 s).
- `slow`: tag lists arrive one byte a second.
- `endless_pages`: every catalog and tag page links to one more page on the registry itself, forever.

data
- `non_string_tags`: tags `[1, 2, null, {"a": 1}, "v1"]`; catalog `[1, "REPO"...]`.
- `path_tricks`: tags `a/../../b`, `v1#frag`, `v1?x=1`, `%2e%2e`, and the real ones; catalog adds `../../etc`.
- `bad_digest`: manifests answer `Docker-Content-Digest: not-a-digest; rm -rf /`.
- `long_names`: the catalog adds a 600-character repository, tag lists add a 300-character tag.
- `sha512_digest`: every digest is a valid `sha512:` digest (128 hex digits).
- `catastrophic_tags`: tag lists add `"a" * 40 + "!"` (for `--include-tags '(a+)+$'`).
- `forged_lines`: tag lists are refused (403 `DENIED`) with an `errors[].message` of `FORGED_MESSAGE`, whose
  CR/LF and other control characters would start log lines of their own if written verbatim.

Tests switch `server.mode` between polls (back to `normal` for "the next poll succeeds") and may edit
`server.repositories` (repository -> tag -> digest) to make real changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.servers import BackgroundServer, QuietHandler

MODES = (
    "normal",
    "foreign_link",
    "redirect_foreign_realm",
    "http_realm",
    "foreign_realm",
    "huge_body",
    "endless_chunks",
    "slow",
    "endless_pages",
    "non_string_tags",
    "path_tricks",
    "bad_digest",
    "long_names",
    "sha512_digest",
    "catastrophic_tags",
    "forged_lines",
)
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ENDLESS_SECONDS = 60.0  # the server's own bound on an endless or slow answer
#: a registry error message that, written raw, forges log lines (text and JSON alike) and an escape sequence
FORGED_MESSAGE = (
    "denied\r\n[2026-01-01 00:00:00,000 INFO watcher] registry 'r1': polled in 0.1s: 1 repositories"
    '\n{"time": "2026-01-01T00:00:00.000+00:00", "level": "INFO", "logger": "watcher", "message": "forged"}'
    "\rforged after a carriage return\x0bforged after a vertical tab\x85forged after NEL"
    "\u2028forged after a line separator\x1b[2Jcleared screen"
)


def digest_of(text: str, algorithm: str = "sha256") -> str:
    """A well-formed digest derived from `text`."""
    return f"{algorithm}:{hashlib.new(algorithm, text.encode()).hexdigest()}"


class Recorder(BackgroundServer):
    """The other host: records every request's Authorization header (None when absent), challenges
    `/v2/...` with a bearer realm on itself, hands out tokens at `/token`, and serves a tag list of its
    own (`["planted"]`) to anyone who shows a token — so a merged foreign page would be visible. `host` and
    `port` put it on another loopback address (127.0.0.2, for the network policy's tests)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self._lock = threading.Lock()
        super().__init__(_RecorderHandler, name="recorder", host=host, port=port)

    @property
    def authorizations(self) -> list[str]:
        """Every Authorization header this host was sent."""
        with self._lock:
            return [auth for _, auth in self.requests if auth is not None]

    def record(self, path: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append((path, authorization))


class _QuietHandler(QuietHandler):
    """What both hosts' handlers share besides: one way to answer."""

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _RecorderHandler(_QuietHandler):
    server_version = "recorder"

    @property
    def recorder(self) -> Recorder:
        return self.owner

    def do_GET(self) -> None:
        self.recorder.record(self.path, self.headers.get("Authorization"))
        path = urlsplit(self.path).path
        if path == "/token":
            self._answer(200, json.dumps({"token": "planted-token", "expires_in": 300}).encode())
        elif self.headers.get("Authorization", "").startswith("Bearer planted-token"):
            tags = {"name": "planted", "tags": ["planted"]}
            self._answer(200, json.dumps(tags).encode(), {"Content-Type": "application/json"})
        else:
            realm = f"{self.recorder.url}/token"
            self._answer(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="recorder"'})

    do_HEAD = do_GET


class HostileRegistry(BackgroundServer):
    """The misbehaving registry. `username`/`password` turn on Basic auth (normal mode challenges Basic)."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: Any = None,
        repositories: dict[str, dict[str, str]] | None = None,
        huge_bytes: int = 40 * 1024 * 1024,
    ) -> None:
        self.recorder = recorder
        self.mode = "normal"
        self.username = username
        self.password = password
        self.huge_bytes = huge_bytes
        self.repositories: dict[str, dict[str, str]] = repositories or {
            "team/app": {"v1": digest_of("team/app:v1"), "v2": digest_of("team/app:v2")},
            "team/web": {"latest": digest_of("team/web:latest")},
        }
        self.requests: list[str] = []
        super().__init__(_HostileHandler, name="hostile-registry", tls=tls)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def catalog(self) -> list[Any]:
        names: list[Any] = sorted(self.repositories)
        if self.mode == "non_string_tags":
            names = [1, {"a": 1}, None, *names]
        elif self.mode == "path_tricks":
            names = ["../../etc", "team/app/../../x", *names]
        elif self.mode == "long_names":
            names = ["a" * 600, *names]
        return names

    def tags(self, repository: str) -> list[Any] | None:
        known = self.repositories.get(repository)
        if known is None:
            return None
        tags: list[Any] = sorted(known)
        if self.mode == "non_string_tags":
            tags = [1, 2, None, {"a": 1}, *tags]
        elif self.mode == "path_tricks":
            tags = ["a/../../b", "v1#frag", "v1?x=1", "%2e%2e", *tags]
        elif self.mode == "long_names":
            tags = ["t" * 300, *tags]
        elif self.mode == "catastrophic_tags":
            tags = ["a" * 40 + "!", *tags]
        return tags

    def digest(self, repository: str, reference: str) -> str | None:
        found = self.repositories.get(repository, {}).get(reference)
        if found is None:
            return None
        if self.mode == "bad_digest":
            return "not-a-digest; rm -rf /"
        if self.mode == "sha512_digest":
            return digest_of(f"{repository}:{reference}:{found}", "sha512")
        return found


class _HostileHandler(_QuietHandler):
    server_version = "hostile-registry"

    @property
    def registry(self) -> HostileRegistry:
        return self.owner

    # -- answering --------------------------------------------------------------------------------

    def _json(self, document: Any, headers: dict[str, str] | None = None) -> None:
        self._answer(200, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._answer(status, body, {"Content-Type": "application/json"})

    def _authorized(self) -> bool:
        """Basic auth when the registry has a login; in `http_realm` mode a bearer flow whose realm is http."""
        registry = self.registry
        given = self.headers.get("Authorization", "")
        if registry.mode in ("http_realm", "foreign_realm"):
            if given == "Bearer registry-token":
                return True
            realm = f"http://{registry.recorder.url.removeprefix('http://')}/token"
            self._answer(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
            return False
        if registry.username is None:
            return True
        expected = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        if given == f"Basic {expected}":
            return True
        self._answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="hostile"'})
        return False

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:
        registry = self.registry
        registry.requests.append(f"{self.command} {self.path}")
        path = unquote(urlsplit(self.path).path)
        if not self._authorized():
            return
        if path == "/v2/" or path == "/v2":
            self._json({})
            return
        if registry.mode == "redirect_foreign_realm" and path.startswith("/v2/"):
            self._answer(307, b"", {"Location": f"{registry.recorder.url}{self.path}"})
            return
        if path == "/v2/_catalog":
            self._json({"repositories": registry.catalog()}, self._foreign_link("/v2/_catalog"))
            return
        repository, route, reference = _split(path)
        if route == "/tags/list":
            self._tags(repository)
        elif route == "/manifests/":
            self._manifest(repository, reference)
        else:
            self._error(404, "NOT_FOUND", "no such route")

    do_HEAD = do_GET

    def _foreign_link(self, path: str) -> dict[str, str]:
        if self.registry.mode == "endless_pages":
            page = len(self.registry.requests)  # a new `last=` each time: no loop to detect, just no end
            return {"Link": f'<{path}?n=1000&last=page{page}>; rel="next"'}
        if self.registry.mode != "foreign_link" or "last=" in self.path:
            return {}
        return {"Link": f'<{self.registry.recorder.url}{path}?n=1000&last=zzz>; rel="next"'}

    def _tags(self, repository: str) -> None:
        registry = self.registry
        tags = registry.tags(repository)
        if registry.mode == "forged_lines":
            self._error(403, "DENIED", FORGED_MESSAGE)
            return
        if tags is None:
            self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return
        body = json.dumps({"name": repository, "tags": tags}).encode()
        if registry.mode == "huge_body":
            self._huge(body)
        elif registry.mode == "endless_chunks":
            self._endless()
        elif registry.mode == "slow":
            self._slow(body)
        else:
            self._json({"name": repository, "tags": tags}, self._foreign_link(f"/v2/{repository}/tags/list"))

    def _manifest(self, repository: str, reference: str) -> None:
        digest = self.registry.digest(repository, reference)
        if digest is None:
            self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE}).encode()
        self._answer(200, body, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest})

    # -- hostile bodies ---------------------------------------------------------------------------
    def _huge(self, valid: bytes) -> None:
        """A valid JSON document padded with whitespace to `huge_bytes`, written in 1 MiB pieces."""
        size = max(self.registry.huge_bytes, len(valid))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        padding = size - len(valid)
        chunk = b" " * (1024 * 1024)
        try:
            while padding > 0:
                piece = chunk[: min(padding, len(chunk))]
                self.wfile.write(piece)
                padding -= len(piece)
            self.wfile.write(valid)
        except OSError:
            return  # the client stopped reading: what a bounded client does

    def _endless(self) -> None:
        """A chunked body that never ends (until the client hangs up, or ENDLESS_SECONDS pass)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + ENDLESS_SECONDS
        try:
            self._chunk(b'{"name": "x", "tags": [')
            filler = b'"t",' * 16000
            while time.monotonic() < deadline:
                self._chunk(filler)
        except OSError:
            return
        self.close_connection = True

    def _slow(self, body: bytes) -> None:
        """The valid body, one byte a second (within ENDLESS_SECONDS)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        deadline = time.monotonic() + ENDLESS_SECONDS
        try:
            for index in range(len(body)):
                if time.monotonic() > deadline:
                    break
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            return
        self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _split(path: str) -> tuple[str, str, str]:
    """`/v2/<repository>/tags/list` or `/v2/<repository>/manifests/<reference>` → (repository, route, ref)."""
    inner = path.removeprefix("/v2/")
    if inner.endswith("/tags/list"):
        return inner.removesuffix("/tags/list"), "/tags/list", ""
    repository, marker, reference = inner.rpartition("/manifests/")
    if marker:
        return repository, "/manifests/", reference
    return inner, "", ""
