"""A FAKE Azure Container Registry: the `/acr/v1/` listing API and its AAD token exchange, over TLS.

No ACR can run here, so this fake speaks what azure-containerregistry's `ContainerRegistryClient` sends
and reads, in the real wire format (learn.microsoft.com/rest/api/containerregistry, and the research
notes in the project):

* `GET /acr/v1/_catalog[?n=&last=&orderby=]` -> `{"repositories": [...]}`, sorted.
* `GET /acr/v1/{name}/_tags[?n=&last=&orderby=]` (the name's `/` arrives as `%2F`) ->
  `{"registry", "imageName", "tags": [{"name", "digest", "createdTime", "lastUpdateTime", "signed",
  "changeableAttributes": {...}}]}`, times with 7 fractional digits as ACR writes them; an unknown
  repository is `404 NAME_UNKNOWN`.
* `GET /acr/v1/{name}/_manifests/{digest}` -> `{"registry", "imageName", "manifest": {"digest", "imageSize",
  "createdTime", "lastUpdateTime", "architecture", "os", "mediaType", "configMediaType", "tags",
  "changeableAttributes"}}`, an index's with `references: [{"digest", "architecture", "os"}]` instead of its
  own platform; a single-platform image (linux/amd64) unless a test sets the digest's attributes
  (`attributes[digest]`, merged over the defaults, so a test can also send what ACR never would).
* Pages end where `page_size` says when the client sends no `n`; more is announced with
  `Link: </acr/v1/...?last=X&n=N&orderby=>; rel="next"`, and the last page has no Link header.
* Without a valid bearer token for the needed scope: `401` with
  `WWW-Authenticate: Bearer realm="https://HOST/oauth2/token",service="HOST",scope="..."` (quoted values).
* `POST /oauth2/exchange?api-version=...` form `grant_type=access_token, service, access_token` -> an
  ACR refresh token, if the AAD token was issued by the fake AAD for audience
  `https://containerregistry.azure.net`.
* `POST /oauth2/token?api-version=...` form `grant_type=refresh_token, service, scope, refresh_token` ->
  `{"access_token"}` good for that scope.

Tests change the registry's content directly (`push`, `retag`, `untag`, `delete_repository`), deny a path
with 403 (`deny`), issue tokens that grant nothing (`grant_nothing`: a valid token then meets
`401 ... error="insufficient_scope"`), or expire every refresh token (`revoke_refresh_tokens`).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import trustme

from tests.fakes.aad import FakeAad, Reply, Request, TlsServer

ACR_AUDIENCE = "https://containerregistry.azure.net"
CATALOG_SCOPE = "registry:catalog:*"


@dataclass
class FakeTag:
    digest: str
    created: datetime
    updated: datetime


@dataclass
class Counters:
    exchanges: int = 0
    access_tokens: int = 0
    listing_paths: list[str] = field(default_factory=list)


def acr_time(moment: datetime) -> str:
    """ACR's timestamp format: UTC with seven fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse_acr_time(text: str) -> datetime:
    return datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


class FakeAcr(TlsServer):
    """FAKE ACR registry; its tokens come from a `FakeAad`'s access tokens."""

    def __init__(self, ca: trustme.CA, aad: FakeAad, *, page_size: int = 2) -> None:
        self.aad = aad
        self.page_size = page_size
        self.repos: dict[str, dict[str, FakeTag]] = {}
        self.denied: set[str] = set()
        self.grants_access = True
        self.counters = Counters()
        self.attributes: dict[str, dict[str, Any]] = {}
        self._refresh_tokens: set[str] = set()
        self._access_tokens: dict[str, str] = {}  # token -> scope
        self._lock = threading.RLock()
        super().__init__(ca, self._handle)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- content, changed by tests ---------------------------------------------------------------------
    def push(self, repository: str, tag: str, content: str | None = None) -> str:
        """Point `tag` at a new manifest (of `content`, else random); returns its digest."""
        digest = "sha256:" + hashlib.sha256((content or secrets.token_hex(16)).encode()).hexdigest()
        self._set(repository, tag, digest)
        return digest

    def retag(self, repository: str, source: str, tag: str) -> str:
        digest = self.repos[repository][source].digest
        self._set(repository, tag, digest)
        return digest

    def untag(self, repository: str, tag: str) -> None:
        with self._lock:
            del self.repos[repository][tag]

    def delete_repository(self, repository: str) -> None:
        with self._lock:
            del self.repos[repository]

    def deny(self, path_prefix: str) -> None:
        """Answer 403 to every listing request under this path (a missing role assignment)."""
        self.denied.add(path_prefix)

    def grant_nothing(self) -> None:
        """Issue access tokens that grant no action, as ACR does for an identity without a role."""
        self.grants_access = False

    def revoke_refresh_tokens(self) -> None:
        """Every ACR refresh and access token issued so far stops working (as when they expire)."""
        with self._lock:
            self._refresh_tokens.clear()
            self._access_tokens.clear()

    def _set(self, repository: str, tag: str, digest: str) -> None:
        now = datetime.now(UTC)
        with self._lock:
            tags = self.repos.setdefault(repository, {})
            old = tags.get(tag)
            tags[tag] = FakeTag(digest, old.created if old else now, now)

    # -- wire -------------------------------------------------------------------------------------------
    def _handle(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/oauth2/exchange":
            return self._exchange(request)
        if request.method == "POST" and request.path == "/oauth2/token":
            return self._token(request)
        if request.method == "GET" and request.path.startswith("/acr/v1/"):
            return self._listing(request)
        return _acr_error(404, "NOT_FOUND", "not found")

    def _exchange(self, request: Request) -> Reply:
        with self._lock:
            self.counters.exchanges += 1
        if request.first("grant_type") != "access_token" or request.first("service") != self.host:
            return _acr_error(400, "BAD_REQUEST", "grant_type must be access_token and service this registry")
        if self.aad.audience_of(request.first("access_token")) != ACR_AUDIENCE:
            return _acr_error(401, "UNAUTHORIZED", "the AAD access token is invalid or for another audience")
        token = secrets.token_urlsafe(24)  # opaque, like the SDK expects when it cannot read an `exp`
        with self._lock:
            self._refresh_tokens.add(token)
        return Reply(200, {"refresh_token": token})

    def _token(self, request: Request) -> Reply:
        with self._lock:
            self.counters.access_tokens += 1
            known = request.first("refresh_token") in self._refresh_tokens
        if request.first("grant_type") != "refresh_token" or not known:
            return _acr_error(401, "UNAUTHORIZED", "authentication required, the refresh token is invalid")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._access_tokens[token] = request.first("scope") if self.grants_access else ""
        return Reply(200, {"access_token": token})

    def _listing(self, request: Request) -> Reply:
        rest = request.path.removeprefix("/acr/v1/")
        if rest == "_catalog":
            scope, repository = CATALOG_SCOPE, None
        elif rest.endswith("/_tags"):
            repository = unquote(rest.removesuffix("/_tags"))
            scope = f"repository:{repository}:metadata_read"
        elif "/_manifests/" in rest:
            repository = unquote(rest.rpartition("/_manifests/")[0])
            scope = f"repository:{repository}:metadata_read"
        else:
            return _acr_error(404, "NOT_FOUND", "unknown API")
        if not self._authorized(request, scope):
            return self._challenge(request, scope)
        with self._lock:
            self.counters.listing_paths.append(request.path + ("?last=" + request.first("last", "query")))
        if any(request.path.startswith(p) for p in self.denied):
            return _acr_error(403, "DENIED", "requested access to the resource is denied")
        if repository is None:
            with self._lock:
                names = sorted(self.repos)
            return self._page(request, names, lambda page: {"repositories": page}, "/acr/v1/_catalog")
        if "/_manifests/" in rest:
            return self._manifest(repository, unquote(rest.rpartition("/_manifests/")[2]))
        return self._tags(request, repository)

    def _manifest(self, repository: str, digest: str) -> Reply:
        with self._lock:
            tags = {name: tag for name, tag in (self.repos.get(repository) or {}).items() if tag.digest == digest}
            extra = dict(self.attributes.get(digest) or {})
        if not tags:
            return _acr_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": repository, "Revision": digest})
        first = min(tags.values(), key=lambda tag: tag.created)
        manifest = {
            "digest": digest,
            "imageSize": 1234,
            "createdTime": acr_time(first.created),
            "lastUpdateTime": acr_time(max(tag.updated for tag in tags.values())),
            "architecture": "amd64",
            "os": "linux",
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "configMediaType": "application/vnd.oci.image.config.v1+json",
            "tags": sorted(tags),
            "changeableAttributes": {
                "deleteEnabled": True,
                "writeEnabled": True,
                "readEnabled": True,
                "listEnabled": True,
            },
        }
        if "references" in extra:  # an index names no platform of its own
            manifest.pop("architecture")
            manifest.pop("os")
        return Reply(200, {"registry": self.host, "imageName": repository, "manifest": manifest | extra})

    def _tags(self, request: Request, repository: str) -> Reply:
        with self._lock:
            tags = dict(self.repos.get(repository) or {})
        if not tags:
            return _acr_error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": repository})

        def body(page: list[str]) -> dict[str, Any]:
            return {
                "registry": self.host,
                "imageName": repository,
                "tags": [_tag_json(name, tags[name]) for name in page],
            }

        return self._page(request, sorted(tags), body, f"/acr/v1/{quote(repository, safe='')}/_tags")

    def _page(self, request: Request, names: list[str], body: Any, path: str) -> Reply:
        last = request.first("last", "query")
        size = int(request.first("n", "query") or self.page_size)
        rest = [n for n in names if n > last] if last else names
        page = rest[:size]
        headers = {}
        if len(rest) > size:
            headers["Link"] = f'<{path}?last={quote(page[-1], safe="")}&n={size}&orderby=>; rel="next"'
        return Reply(200, body(page), headers)

    def _authorized(self, request: Request, scope: str) -> bool:
        header = request.headers.get("authorization", "")
        with self._lock:
            return header.startswith("Bearer ") and self._access_tokens.get(header[7:]) == scope

    def _challenge(self, request: Request, scope: str) -> Reply:
        params = f'realm="{self.url}/oauth2/token",service="{self.host}",scope="{scope}"'
        header = request.headers.get("authorization", "")
        if header:
            with self._lock:
                known = header.removeprefix("Bearer ") in self._access_tokens
            params += ',error="insufficient_scope"' if known else ',error="invalid_token"'
        _, name, action = scope.rsplit(":", 2) if scope.startswith("repository:") else ("", "catalog", "*")
        return _acr_error(
            401,
            "UNAUTHORIZED",
            "authentication required, visit https://aka.ms/acr/authorization for more information.",
            [{"Type": scope.split(":")[0], "Name": name, "Action": action}],
            {"WWW-Authenticate": f"Bearer {params}"},
        )


def _tag_json(name: str, tag: FakeTag) -> dict[str, Any]:
    return {
        "name": name,
        "digest": tag.digest,
        "createdTime": acr_time(tag.created),
        "lastUpdateTime": acr_time(tag.updated),
        "signed": False,
        "changeableAttributes": {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True},
    }


def _acr_error(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return Reply(status, {"errors": [error]}, headers)
