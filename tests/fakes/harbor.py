"""A FAKE Harbor: Harbor's v2.0 REST API in front of a REAL registry. No Harbor can run here.

Everything under `/v2/` is forwarded to a real CNCF Distribution registry from `tests/support`, so tests
push, retag and delete real images through this fake's URL, the way CI pushes to Harbor. Everything
under `/api/v2.0/` is answered by the fake itself, from what the real registry holds (its catalog, tag
lists and manifest digests) and what the fake saw pass through (when each tag and digest was pushed), in
the wire format of goharbor/harbor `api/v2.0/swagger.yaml` and its handlers:

* `GET /api/v2.0/systeminfo` (anonymous is fine) -> `GeneralInfo` with `auth_mode`, `harbor_version`;
  `GET /api/v2.0/ping` -> `Pong` as text/plain.
* `GET /api/v2.0/users/current` -> 401 when anonymous; 412 for a robot account (no user record); 200.
* `GET /api/v2.0/projects?page=&page_size=&with_detail=` -> `[Project]`: public projects plus, for an
  account, the projects it is granted (all of them when it has no grants list, like an administrator).
* `GET /api/v2.0/projects/{p}/repositories?page=&page_size=` -> `[Repository{id, project_id, name:
  "p/repo", artifact_count, ...}]`; needs `repository:list` on the project.
* `GET /api/v2.0/projects/{p}/repositories/{r}/artifacts?with_tag=&page=&page_size=` -> `[Artifact{id,
  type, media_type, manifest_media_type, digest, size, push_time, pull_time, tags: [Tag{id, name,
  push_time, pull_time, immutable, signed, ...}] | null, ...}]`; `{r}` is URL-encoded twice when it
  holds `/` (`a/b` -> `a%252Fb`): the path is decoded once to route, once more for the name. A
  repository that does not exist has no artifacts (200, `[]`), as in Harbor. Needs `artifact:list`.
* Paging as Harbor's `BaseAPI.Links`: `page` (default 1), `page_size` (default 10, at most 100, else
  422); `X-Total-Count`; `Link: </api/v2.0/...?page=N&page_size=S>; rel="prev" , <...>; rel="next"`.
* Times as Go's strfmt.DateTime writes them: UTC with milliseconds; a never-pulled time is Go's zero time
  `0001-01-01T00:00:00.000Z`.
* Basic credentials Harbor does not accept are not refused: the request is served as anonymous (what
  Harbor's security middleware does). Anonymous access to a private project is 401, an account without
  the permission gets 403; errors are `{"errors": [{"code", "message"}]}`; every answer has X-Request-Id.

Tests read `requests` (method, path, User-Agent) to count what watcher sent, set `before_api` to change
the registry between two pages, and `tag_pushed_at(repo, tag)` to compare push times.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx

from tests.support.registry import ALL_MANIFEST_TYPES, OCI_INDEX, RegistryClient
from tests.support.servers import BackgroundServer

API = "/api/v2.0"
HARBOR_VERSION = "v2.11.0-fake"
ZERO_TIME = "0001-01-01T00:00:00.000Z"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
ALL_ACTIONS = frozenset({"repository:list", "artifact:list"})
CONFIG_TYPES = {
    "application/vnd.oci.image.manifest.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json": "application/vnd.docker.container.image.v1+json",
}


def harbor_time(moment: datetime) -> str:
    """Go's strfmt.DateTime: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass
class Account:
    password: str
    #: project -> actions granted ("repository:list", "artifact:list"); None = every project, every action
    grants: dict[str, set[str]] | None = None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    user_agent: str


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None


class HarborError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = Answer(status, {"errors": [{"code": code, "message": message}]})


class FakeHarbor(BackgroundServer):
    """The fake; `registry_url` (and its admin login, if it has one) is the real registry behind it."""

    def __init__(
        self,
        registry_url: str,
        *,
        registry_login: tuple[str, str] | None = None,
        accounts: Mapping[str, str] | None = None,
        public: Iterable[str] = (),
    ) -> None:
        self.target = registry_url.rstrip("/")
        self.accounts: dict[str, Account] = {name: Account(pw) for name, pw in (accounts or {}).items()}
        self.public: set[str] = set(public)
        self.requests: list[Seen] = []
        self.before_api: Callable[[str], None] | None = None
        self._tag_pushed: dict[tuple[str, str], datetime] = {}
        self._digest_pushed: dict[tuple[str, str], datetime] = {}
        self._first_seen: dict[tuple[str, ...], datetime] = {}
        self._ids: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()
        self._upstream_lock = threading.Lock()
        login = registry_login or (None, None)
        self._upstream = RegistryClient(self.target, username=login[0], password=login[1])
        self._http = httpx.Client(timeout=30)
        super().__init__(_handler_for(self), name="fake-harbor")

    # -- lifecycle and test helpers -----------------------------------------------------------------
    def close(self) -> None:
        super().close()
        self._http.close()
        self._upstream.close()

    def grant(self, account: str, project: str, *actions: str) -> None:
        """Restrict `account` to what it is granted (the first grant turns "everything" off)."""
        grants = self.accounts[account].grants
        if grants is None:
            grants = self.accounts[account].grants = {}
        grants.setdefault(project, set()).update(actions)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def sent_by_watcher(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.user_agent.startswith("watcher/")]

    def tag_pushed_at(self, repository: str, tag: str) -> datetime:
        with self._lock:
            return self._tag_pushed[(repository, tag)]

    # -- the HTTP side ------------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(Seen(handler.command, handler.path, handler.headers.get("User-Agent", "")))
        if handler.path.startswith(f"{API}/"):
            answer = self._api(handler)
            _send(handler, answer)
        else:
            self._forward(handler)

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        """`/v2/...` goes to the real registry; a manifest PUT that succeeds is remembered with its time."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection", "content-length")
        }
        upstream = self._http.request(handler.command, self.target + handler.path, headers=headers, content=body)
        if handler.command == "PUT" and upstream.status_code == 201 and "/manifests/" in handler.path:
            repo, _, reference = urlsplit(handler.path).path.removeprefix("/v2/").rpartition("/manifests/")
            self._remember_push(repo, reference, upstream.headers.get("docker-content-digest", ""))
        handler.send_response(upstream.status_code)
        for key, value in upstream.headers.multi_items():
            if key.lower() in HOP_BY_HOP:
                continue
            if key.lower() == "location":
                value = value.replace(self.target, self.url)
            handler.send_header(key, value)
        size = len(upstream.content) if handler.command != "HEAD" else int(upstream.headers.get("content-length", 0))
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(upstream.content)

    def _remember_push(self, repo: str, reference: str, digest: str) -> None:
        moment = now()
        with self._lock:
            if digest:
                self._digest_pushed[(repo, digest)] = moment
            if not reference.startswith("sha256:"):
                self._tag_pushed[(repo, reference)] = moment

    def _api(self, handler: BaseHTTPRequestHandler) -> Answer:
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.before_api is not None:
            self.before_api(handler.path)
        try:
            if handler.command != "GET":
                raise HarborError(405, "METHOD_NOT_ALLOWED", f"{handler.command} is not served by this fake")
            account = self._account(handler.headers.get("Authorization"))
            # routing sees the path decoded once (Go's URL.Path); the repository name is decoded again later
            parts = unquote(url.path).removeprefix(API).strip("/").split("/")
            return self._route(parts, query, account)
        except HarborError as exc:
            return exc.answer

    def _route(self, parts: list[str], query: dict[str, str], account: str | None) -> Answer:
        match parts:
            case ["ping"]:
                return Answer(200, text="Pong")
            case ["systeminfo"]:
                return Answer(200, self._systeminfo(account))
            case ["users", "current"]:
                return self._current_user(account)
            case ["projects"]:
                return self._paged(f"{API}/projects", query, self._projects(account))
            case ["projects", project, "repositories"]:
                self._require(account, project, "repository:list")
                return self._paged(f"{API}/projects/{project}/repositories", query, self._repositories(project))
            case ["projects", project, "repositories", name, "artifacts"]:
                self._require(account, project, "artifact:list")
                repository = f"{project}/{unquote(name)}"
                raw = f"{API}/projects/{project}/repositories/{name.replace('%', '%25')}/artifacts"
                return self._paged(raw, query, self._artifacts(repository))
        raise HarborError(404, "NOT_FOUND", f"no route for {API}/{'/'.join(parts)}")

    # -- security -----------------------------------------------------------------------------------
    def _account(self, header: str | None) -> str | None:
        """The account Harbor would see: wrong credentials are served as anonymous, not refused."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self.accounts.get(user)
        return user if known is not None and secrets.compare_digest(known.password, password) else None

    def _visible(self, account: str | None, project: str) -> bool:
        """Public projects, and the projects an account has any grant in (all, without a grants list)."""
        if project in self.public:
            return True
        grants = self.accounts[account].grants if account is not None else {}
        return grants is None or project in grants

    def _allowed(self, account: str | None, project: str, action: str) -> bool:
        if project in self.public and action in ALL_ACTIONS:
            return True
        if account is None:
            return False
        grants = self.accounts[account].grants
        return grants is None or action in grants.get(project, set())

    def _require(self, account: str | None, project: str, action: str) -> None:
        if project not in self._project_names() or not self._allowed(account, project, action):
            if account is None:
                raise HarborError(401, "UNAUTHORIZED", "unauthorized")
            raise HarborError(403, "FORBIDDEN", f"forbidden: {action} on project {project}")

    def _systeminfo(self, account: str | None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "auth_mode": "db_auth",
            "primary_auth_mode": False,
            "self_registration": False,
            "harbor_version": HARBOR_VERSION,
            "banner_message": "",
        }
        if account is not None:  # protected attributes only for a known caller
            info |= {"external_url": self.url, "registry_url": self.url.split("//", 1)[1], "read_only": False}
        return info

    def _current_user(self, account: str | None) -> Answer:
        if account is None:
            raise HarborError(401, "UNAUTHORIZED", "unauthorized")
        if account.startswith("robot$"):
            message = "get current user not available for security context: robot"
            raise HarborError(412, "PRECONDITION", message)
        return Answer(200, {"user_id": self._id("user", account), "username": account, "sysadmin_flag": False})

    # -- what the real registry holds ---------------------------------------------------------------
    def _catalog(self) -> list[str]:
        with self._upstream_lock:
            return sorted(self._upstream.catalog())

    def _project_names(self) -> list[str]:
        return sorted({repo.split("/", 1)[0] for repo in self._catalog() if "/" in repo})

    def _projects(self, account: str | None) -> list[dict[str, Any]]:
        visible = [
            p
            for p in self._project_names()
            if p in self.public
            or (
                account is not None
                and (self.accounts[account].grants is None or p in (self.accounts[account].grants or {}))
            )
        ]
        return [
            {
                "project_id": self._id("project", p),
                "owner_id": 1,
                "owner_name": "admin",
                "name": p,
                "registry_id": 0,
                "creation_time": harbor_time(self._seen("project", p)),
                "update_time": harbor_time(self._seen("project", p)),
                "deleted": False,
                "togglable": True,
                "metadata": {"public": "true" if p in self.public else "false"},
            }
            for p in visible
        ]

    def _repositories(self, project: str) -> list[dict[str, Any]]:
        repos = [r for r in self._catalog() if r.startswith(f"{project}/")]
        return [
            {
                "id": self._id("repository", repo),
                "project_id": self._id("project", project),
                "name": repo,
                "description": "",
                "artifact_count": len(self._artifacts(repo)),
                "pull_count": 0,
                "creation_time": harbor_time(self._seen("repository", repo)),
                "update_time": harbor_time(self._seen("repository", repo)),
            }
            for repo in repos
        ]

    def _artifacts(self, repository: str) -> list[dict[str, Any]]:
        """One artifact per digest the real registry's tags point at, newest push first, as Harbor sorts."""
        by_digest: dict[str, list[str]] = {}
        kinds: dict[str, tuple[str, int]] = {}
        with self._upstream_lock:
            for tag in self._upstream.tags(repository):
                head = self._upstream.request(
                    "HEAD",
                    f"/v2/{repository}/manifests/{tag}",
                    key=f"repository:{repository}",
                    headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
                )
                if head.status_code != 200:
                    continue  # deleted between the tag list and now
                digest = head.headers["docker-content-digest"]
                by_digest.setdefault(digest, []).append(tag)
                kinds[digest] = (head.headers.get("content-type", ""), int(head.headers.get("content-length", 0)))
        artifacts = [
            self._artifact(repository, digest, sorted(tags), *kinds[digest]) for digest, tags in by_digest.items()
        ]
        return sorted(artifacts, key=lambda a: (a["push_time"], a["digest"]), reverse=True)

    def _artifact(self, repository: str, digest: str, tags: list[str], media_type: str, size: int) -> dict[str, Any]:
        project = repository.split("/", 1)[0]
        artifact_id = self._id("artifact", repository, digest)
        repository_id = self._id("repository", repository)
        with self._lock:
            pushed = self._digest_pushed.get((repository, digest))
        return {
            "id": artifact_id,
            "type": "IMAGE",
            "media_type": CONFIG_TYPES.get(media_type, media_type),
            "manifest_media_type": media_type,
            "project_id": self._id("project", project),
            "repository_id": repository_id,
            "digest": digest,
            "size": size,
            "icon": "",
            "push_time": harbor_time(pushed or self._seen("artifact", repository, digest)),
            "pull_time": ZERO_TIME,
            "extra_attrs": {},
            "annotations": None,
            "references": [] if media_type == OCI_INDEX else None,
            "tags": [self._tag(repository, repository_id, artifact_id, tag) for tag in tags] or None,
            "addition_links": {},
            "labels": None,
            "accessories": None,
        }

    def _tag(self, repository: str, repository_id: int, artifact_id: int, tag: str) -> dict[str, Any]:
        with self._lock:
            pushed = self._tag_pushed.get((repository, tag))
        return {
            "id": self._id("tag", repository, tag),
            "repository_id": repository_id,
            "artifact_id": artifact_id,
            "name": tag,
            "push_time": harbor_time(pushed or self._seen("tag", repository, tag)),
            "pull_time": ZERO_TIME,
            "immutable": False,
            "signed": False,
        }

    def _id(self, *key: str) -> int:
        with self._lock:
            return self._ids.setdefault(key, len(self._ids) + 1)

    def _seen(self, *key: str) -> datetime:
        """When the fake first saw something it did not see pushed (it was there before the fake)."""
        with self._lock:
            return self._first_seen.setdefault(key, now())

    # -- paging -------------------------------------------------------------------------------------
    def _paged(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> Answer:
        try:
            page = int(query.get("page", "1"))
            size = int(query.get("page_size", "10"))
        except ValueError:
            raise HarborError(400, "BAD_REQUEST", "page and page_size must be integers") from None
        if size > 100 or size < 0 or page < 1:
            raise HarborError(422, "UNPROCESSABLE_ENTITY", "page_size in query should be less than or equal to 100")
        total = len(items)
        chunk = items[(page - 1) * size : page * size] if size else items
        links = []
        rest = {k: v for k, v in query.items() if k not in ("page", "page_size")}
        if size and page > 1 and (page - 1) * size < total:
            links.append(f'<{path}?{urlencode({**rest, "page": page - 1, "page_size": size})}>; rel="prev"')
        if size and page * size < total:
            links.append(f'<{path}?{urlencode({**rest, "page": page + 1, "page_size": size})}>; rel="next"')
        headers = {"X-Total-Count": str(total)}
        if links:
            headers["Link"] = " , ".join(links)
        return Answer(200, chunk, headers)


def _send(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    if answer.text is not None:
        data, kind = answer.text.encode(), "text/plain"
    else:
        data, kind = json.dumps(answer.body).encode(), "application/json"
    handler.send_response(answer.status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("X-Request-Id", secrets.token_hex(8))
    for key, value in answer.headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def _handler_for(fake: FakeHarbor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle meets delayed ACK (~40 ms a request)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_GET(self) -> None:
            fake.handle(self)

        do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    return Handler
