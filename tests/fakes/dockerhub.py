"""A FAKE of Docker Hub's API (hub.docker.com `/v2`), for tests: no real Hub can run here.

It answers in the wire format of Hub's published OpenAPI description (docker/docs,
`content/reference/api/hub/latest.yaml`) plus the fields live answers carry beyond it:

* `POST /v2/auth/token` `{"identifier", "secret"}` -> `200 {"access_token": JWT}`; wrong credentials
  `401 {"errinfo": {}, "detail", "message"}`.
* `POST /v2/users/login` `{"username", "password"}` (deprecated) -> `200 {"token": JWT}`; wrong credentials
  `401 {"detail": "Incorrect authentication credentials"}`, plus `login_2fa_token` for a password login to an
  account with two-factor authentication.
* `GET /v2/repositories/{ns}/` and the tag lists `GET /v2/namespaces/{ns}/repositories/{repo}/tags` and
  `GET /v2/repositories/{ns}/{repo}/tags`, with `page` and `page_size` (default 10, at most 100): the
  envelope `{"count", "next", "previous", "results"}` with absolute `next`/`previous` links, tags newest
  push first. A tag has `name, digest, media_type, content_type, images[], last_updated, tag_last_pushed,
  tag_last_pulled, tag_status, full_size, ...`. An unknown repository is a 404, but an unknown namespace
  lists as an empty one (`count: 0`), as the real Hub answers.
* `GET /v2/users/{name}/` (a user's public profile, `"type": "User"`) and `GET /v2/orgs/{name}/` (an
  organisation's, `"type": "Organization"`): 200, or 404 for a name that is not one. These are how a
  missing namespace is told from an empty one.
* Bearer tokens (`Authorization: Bearer` or the older `JWT` scheme); no header is anonymous and sees the
  same (every repository here is public); a bad, expired or revoked token is a 401.
* Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a unix time);
  past the quota the answer is `429 {"detail": "Rate limit exceeded", "error": false}` with `Retry-After`.

What it lists is what a REAL registry holds. It reads the storage directory of the CNCF Distribution
registry the test pushes to: `docker/registry/v2/repositories/NS/REPO/_manifests/tags/TAG/current/link`
holds the tag's digest, and that link file's modification time is when the tag was last pushed (the
registry rewrites it on every push of the tag). So tests push, retag and delete with a real client, and
the fake answers as Hub would about the same images.

Knobs let a test make Hub misbehave the ways it does: `omit_digest` (tags listed without a digest),
`entries` (keys that replace a tag entry's, say what a hostile server would send in `images[]`),
`max_page_size`, `quota` (limit per window), `throttle` (the next N matching requests get 429),
`revoke_tokens`/`revoke_at`/`refuse_tokens`, `token_ttl`, `new_login_route`, `two_factor`. `records` is every request
with its arrival time (monotonic clock) and the status it got.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.servers import BackgroundServer

_TAGS = re.compile(r"^/v2/(?:namespaces/([^/]+)/repositories|repositories/([^/]+))/([^/]+)/tags/?$")
_REPOS = re.compile(r"^/v2/repositories/([^/]+)/?$")
_ACCOUNT = re.compile(r"^/v2/(users|orgs)/([^/]+)/?$")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Record:
    """One request as the fake saw it."""

    method: str
    path: str
    query: str
    at: float  # time.monotonic() on arrival
    status: int
    user: str | None  # the user its bearer token belongs to; None when anonymous or refused


@dataclass
class Throttle:
    pattern: re.Pattern[str]
    times: int
    retry_after: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


class FakeDockerHub(BackgroundServer):
    """The fake Hub API on a free loopback port, served from a thread; reads a real registry's storage."""

    def __init__(
        self,
        storage_dir: Path,
        users: dict[str, str],
        *,
        namespaces: set[str] | None = None,
        max_page_size: int = 100,
    ) -> None:
        self.repositories_dir = storage_dir / "docker" / "registry" / "v2" / "repositories"
        self.blobs_dir = storage_dir / "docker" / "registry" / "v2" / "blobs"
        self.users = users  # shared with the registry's token server: one login for both, as on Hub
        self.namespaces: set[str] = set(namespaces or ())  # organisations (users are namespaces too)
        self.max_page_size = max_page_size
        self.omit_digest: set[tuple[str, str]] = set()  # (NS/REPO, TAG) listed without a digest
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}  # (NS/REPO, TAG) -> keys replacing its entry's
        self.quota: tuple[int, int] | None = None  # (requests, window seconds)
        self.token_ttl = 600.0
        self.refuse_tokens = False
        self.revoke_at: re.Pattern[str] | None = None  # the first request matching it finds every token revoked
        self.new_login_route = True
        self.two_factor: set[str] = set()
        self.records: list[Record] = []
        self._throttles: list[Throttle] = []
        self._tokens: dict[str, tuple[str, float]] = {}
        self._window = (0, 0)  # (window start, requests used in it)
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), name="fake-hub")

    # -- knobs ----------------------------------------------------------------------------------------
    def throttle(self, path_regex: str, times: int = 1, retry_after: str = "1") -> None:
        """The next `times` requests whose path matches get 429 with this `Retry-After`."""
        with self._lock:
            self._throttles.append(Throttle(re.compile(path_regex), times, retry_after))

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (as if it had expired)."""
        with self._lock:
            self._tokens.clear()

    @property
    def logins(self) -> int:
        return sum(1 for r in self.records if r.method == "POST" and r.status == 200)

    def requests_to(self, fragment: str) -> list[Record]:
        return [r for r in self.records if fragment in r.path]

    # -- dispatch ---------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        url = urlsplit(target)
        path, query = unquote(url.path), parse_qs(url.query)
        arrived = time.monotonic()
        if self.revoke_at is not None and self.revoke_at.search(path):
            self.revoke_at = None
            self.revoke_tokens()
        user, token_refused = self._bearer_user(headers.get("authorization", ""))
        limited, quota_headers = self._spend_quota(path)
        if limited is not None:
            reply = limited
        elif token_refused:
            reply = Reply(401, {"detail": "Authentication credentials were not provided or are invalid."})
        else:
            reply = self._route(method, path, query, body)
        reply = Reply(reply.status, reply.body, reply.headers + quota_headers)
        with self._lock:
            self.records.append(Record(method, path, url.query, arrived, reply.status, user))
        return reply

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Reply:
        if method == "POST" and path == "/v2/auth/token" and self.new_login_route:
            return self._login(_json(body), "identifier", "secret", "access_token", new_route=True)
        if method == "POST" and path == "/v2/users/login":
            return self._login(_json(body), "username", "password", "token", new_route=False)
        if method == "GET" and (match := _TAGS.match(path)):
            return self._tags(match.group(1) or match.group(2), match.group(3), path, query)
        if method == "GET" and (match := _REPOS.match(path)):
            return self._repositories(match.group(1), path, query)
        if method == "GET" and (match := _ACCOUNT.match(path)):
            return self._account(match.group(1), match.group(2))
        return Reply(404, {"detail": "Not found."})

    # -- authentication ---------------------------------------------------------------------------------
    def _login(self, body: dict[str, Any], user_key: str, secret_key: str, token_key: str, *, new_route: bool) -> Reply:
        user, secret = str(body.get(user_key, "")), str(body.get(secret_key, ""))
        if not user or self.users.get(user) != secret:
            wrong = "Incorrect authentication credentials"
            return Reply(401, {"errinfo": {}, "detail": wrong, "message": wrong} if new_route else {"detail": wrong})
        if user in self.two_factor and not new_route:
            return Reply(
                401,
                {"detail": "Require secondary authentication on MFA enabled account", "login_2fa_token": "2fa-x"},
            )
        return Reply(200, {token_key: self._issue(user)})

    def _issue(self, user: str) -> str:
        now = time.time()
        claims = {"sub": user, "iat": int(now), "exp": int(now + self.token_ttl), "jti": secrets.token_hex(8)}
        signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.{signature}"  # shaped like Hub's JWT
        with self._lock:
            self._tokens[token] = (user, now + self.token_ttl)
        return token

    def _bearer_user(self, header: str) -> tuple[str | None, bool]:
        """(the token's user, whether a token was sent and refused)."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "jwt") or not token:
            return None, False
        with self._lock:
            known = self._tokens.get(token.strip())
        if known is None or known[1] <= time.time() or self.refuse_tokens:
            return None, True
        return known[0], False

    # -- quota ------------------------------------------------------------------------------------------
    def _spend_quota(self, path: str) -> tuple[Reply | None, tuple[tuple[str, str], ...]]:
        with self._lock:
            for rule in self._throttles:
                if rule.times > 0 and rule.pattern.search(path):
                    rule.times -= 1
                    return _too_many(rule.retry_after), ()
            if self.quota is None:
                return None, (("X-RateLimit-Limit", "100000"), ("X-RateLimit-Remaining", "99999"))
            limit, window = self.quota
            now = time.time()
            start = int(now // window * window)  # fixed windows on whole seconds, like Hub's
            used = self._window[1] if self._window[0] == start else 0
            reset = start + window
            if used >= limit:
                return _too_many(str(max(1, math.ceil(reset - now)))), (("X-RateLimit-Reset", str(reset)),)
            self._window = (start, used + 1)
            left = limit - used - 1
        return None, (
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(left)),
            ("X-RateLimit-Reset", str(reset)),
        )

    # -- listings ---------------------------------------------------------------------------------------
    def _namespace_exists(self, namespace: str) -> bool:
        return namespace in self.namespaces or namespace in self.users or (self.repositories_dir / namespace).is_dir()

    def _account(self, kind: str, name: str) -> Reply:
        """A user's public profile (`/v2/users/NAME/`) or an organisation's (`/v2/orgs/NAME/`)."""
        is_user = name in self.users
        if (kind == "users" and not is_user) or (kind == "orgs" and (is_user or not self._namespace_exists(name))):
            return Reply(404, {"message": "User not found" if kind == "users" else "Not found", "errinfo": {}})
        profile: dict[str, Any] = {
            "id": format(zlib.crc32(name.encode()), "032x"),
            "uuid": format(zlib.crc32(name.encode()), "032x"),
            "full_name": "",
            "location": "",
            "company": "",
            "profile_url": "",
            "date_joined": "2020-01-01T00:00:00Z",
            "gravatar_url": "",
            "gravatar_email": "",
            "type": "User" if is_user else "Organization",
        }
        return Reply(200, profile | ({"username": name} if is_user else {"orgname": name, "badge": ""}))

    def _repositories(self, namespace: str, path: str, query: dict[str, list[str]]) -> Reply:
        # Hub answers a namespace that does not exist as an empty one: only `_account` tells them apart.
        directory = self.repositories_dir / namespace
        names = sorted(p.name for p in directory.iterdir() if (p / "_manifests").is_dir()) if directory.is_dir() else []
        results = [self._repository_entry(namespace, name) for name in names]
        return self._page(results, path, query)

    def _repository_entry(self, namespace: str, name: str) -> dict[str, Any]:
        pushed = [t["pushed"] for t in self._tag_states(namespace, name)]
        last = _rfc3339(max(pushed)) if pushed else None
        return {
            "name": name,
            "namespace": namespace,
            "repository_type": "image",
            "status": 1,
            "status_description": "active",
            "description": "",
            "is_private": False,
            "star_count": 0,
            "pull_count": 0,
            "last_updated": last,
            "last_modified": last,
            "date_registered": last,
            "affiliation": "",
            "media_types": [],
            "content_types": ["image"],
            "categories": [],
            "storage_size": 0,
        }

    def _tags(self, namespace: str, name: str, path: str, query: dict[str, list[str]]) -> Reply:
        if not (self.repositories_dir / namespace / name / "_manifests").is_dir():
            return Reply(404, {"message": "httperror 404: object not found", "errinfo": {"namespace": namespace}})
        states = sorted(self._tag_states(namespace, name), key=lambda t: (-t["pushed"], t["name"]))
        return self._page([self._tag_entry(namespace, name, t) for t in states], path, query)

    def _tag_states(self, namespace: str, name: str) -> list[dict[str, Any]]:
        tags_dir = self.repositories_dir / namespace / name / "_manifests" / "tags"
        found = []
        for tag_dir in sorted(tags_dir.iterdir()) if tags_dir.is_dir() else []:
            link = tag_dir / "current" / "link"
            try:
                found.append({"name": tag_dir.name, "digest": link.read_text().strip(), "pushed": link.stat().st_mtime})
            except FileNotFoundError:  # deleted while we looked
                continue
        return found

    def _tag_entry(self, namespace: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        digest, pushed = state["digest"], _rfc3339(state["pushed"])
        manifest = self._blob_json(digest)
        media_type = manifest.get("mediaType", "")
        images = self._images(digest, manifest, pushed)
        entry: dict[str, Any] = {
            "creator": 1,
            "id": zlib.crc32(f"{namespace}/{name}:{state['name']}".encode()),
            "images": images,
            "last_updated": pushed,
            "last_updater": 1,
            "last_updater_username": namespace,
            "name": state["name"],
            "repository": zlib.crc32(f"{namespace}/{name}".encode()),
            "full_size": sum(i["size"] for i in images),
            "v2": True,
            "tag_status": "active",
            "tag_last_pulled": None,
            "tag_last_pushed": pushed,
            "media_type": media_type,
            "content_type": "image",
            "digest": digest,
        }
        if (f"{namespace}/{name}", state["name"]) in self.omit_digest:
            del entry["digest"]
            for image in images:
                image["digest"] = None
        return entry | self.entries.get((f"{namespace}/{name}", state["name"]), {})

    def _images(self, digest: str, manifest: dict[str, Any], pushed: str) -> list[dict[str, Any]]:
        """Hub's `images[]`: one per platform of an index, or the one image a manifest is."""
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            entries = [
                (m.get("digest"), m.get("platform") or {}, int(m.get("size") or 0)) for m in manifest["manifests"]
            ]
        else:
            config = self._blob_json(str((manifest.get("config") or {}).get("digest", "")))
            size = sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or [])
            entries = [(digest, {"architecture": config.get("architecture"), "os": config.get("os")}, size)]
        return [
            {
                "architecture": platform.get("architecture", ""),
                "features": "",
                "variant": platform.get("variant"),
                "digest": image_digest,
                "os": platform.get("os", ""),
                "os_features": "",
                "os_version": None,
                "size": size,
                "status": "active",
                "last_pulled": None,
                "last_pushed": pushed,
            }
            for image_digest, platform, size in entries
        ]

    def _blob_json(self, digest: str) -> dict[str, Any]:
        algorithm, _, hex_digest = digest.partition(":")
        try:
            data = json.loads((self.blobs_dir / algorithm / hex_digest[:2] / hex_digest / "data").read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _page(self, results: list[dict[str, Any]], path: str, query: dict[str, list[str]]) -> Reply:
        size = min(_int(query, "page_size", 10), 100, self.max_page_size)
        page = _int(query, "page", 1)
        pages = max(1, math.ceil(len(results) / size))
        if page < 1 or page > pages:
            return Reply(404, {"detail": "Invalid page."})

        def link(number: int) -> str | None:
            return f"{self.url}{path}?page={number}&page_size={size}" if 1 <= number <= pages else None

        return Reply(
            200,
            {
                "count": len(results),
                "next": link(page + 1),
                "previous": link(page - 1),
                "results": results[(page - 1) * size : page * size],
            },
        )


def _too_many(retry_after: str) -> Reply:
    return Reply(429, {"detail": "Rate limit exceeded", "error": False}, (("Retry-After", retry_after),))


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(1, int((query.get(name) or [str(default)])[0]))
    except ValueError:
        return default


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _handler_for(hub: FakeDockerHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = hub.handle(self.command, self.path, headers, body)
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers:
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _serve

    return Handler
