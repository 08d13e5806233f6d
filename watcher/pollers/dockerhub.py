"""`--provider dockerhub`: Docker Hub, listed through Hub's own API; the registry only for what it lacks.

Docker Hub's registry has no catalog, so a namespace (a user or an organisation) is listed through the Hub
API: `GET /v2/repositories/NS/` names its repositories and `GET /v2/namespaces/NS/repositories/REPO/tags`
gives each tag with its digest and last push time. A tag the API gives without a digest is resolved with a
manifest `HEAD` on the registry, which Docker Hub does not count as a pull (a `GET` would).

The API's bearer token comes from `POST /v2/auth/token` (the deprecated `/v2/users/login` where that route
is missing), is cached until shortly before it expires, and a 401 logs in again once; a second 401 is a
credentials error, never a loop. `WATCHER_DOCKERHUB_API_URL` points the poller at another Hub API
(tests, mirrors); the registry is the registry's URL (`https://registry.hub.docker.com` by default).

A tag entry also says its image: `images[]` (each platform's os, architecture and variant), `full_size` and
`media_type`/`content_type`. The listing keeps them as sent (`Heard`, bounded) and `said` checks them when a
poll describes its new digests: no request, and no manifest `GET`, which Hub counts as a pull.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from watcher import errors
from watcher.diff import TagState
from watcher.errors import InputError
from watcher.pollers.base import TagFilter, gather_all
from watcher.pollers.oci import OciPoller
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.hostlimits import HostLimits
from watcher.registry.http import ApiClient, json_object
from watcher.registry.pager import Page, read_list
from watcher.registry.said import Heard, SaidImage, said_image, said_kind, said_platform, said_platforms, said_size

API_URL_ENV = "WATCHER_DOCKERHUB_API_URL"
DEFAULT_API_URL = "https://hub.docker.com"
PAGE_SIZE = 100  # the API's maximum
TOKEN_LIFETIME_SECONDS = 600.0  # what Hub documents for /v2/auth/token, when the token does not say
TOKEN_MARGIN_SECONDS = 60.0
_STATUS_ERRORS: dict[int, type[errors.RegistryError]] = {
    401: errors.AuthError,
    403: errors.PermissionError_,
    404: errors.ScopeError,
    429: errors.RateLimitedError,
}


class DockerHubPoller(OciPoller):
    provider: ClassVar[str] = "dockerhub"
    credential_fields: ClassVar[tuple[str, ...]] = ("username", "password")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})
    option_fields: ClassVar[tuple[str, ...]] = ("namespace",)
    default_url: ClassVar[str] = "https://registry.hub.docker.com"
    default_limits: ClassVar[HostLimits] = HostLimits(max_concurrency=4)

    def __init__(self, spec: RegistrySpec) -> None:
        super().__init__(spec)
        self.namespace = str(spec.options.get("namespace") or spec.credentials.get("username") or "")
        username, password = spec.credentials.get("username"), spec.credentials.get("password")
        login = (username, password) if username and password else None
        self.api = HubApi(os.environ.get(API_URL_ENV) or DEFAULT_API_URL, login, self.limits)
        #: what the listing's tag entries said of each digest, as sent: (media_type, content_type, full_size,
        #: images)
        self.heard: Heard[tuple[object, object, object, object]] = Heard()

    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        super().validate(spec)
        if not spec.options.get("namespace") and not spec.credentials.get("username"):
            raise InputError(
                f"registry {spec.name!r}: --namespace is missing: name the Docker Hub user or organisation "
                "to watch (anonymous access lists its public repositories), or give --username"
            )

    async def verify(self) -> None:
        """Credentials, namespace and listing through the API; then the registry the HEADs go to."""
        await self.api.token()
        repos = await self.discover(Scope.from_options(self.spec.options))
        await self.client.ping()
        if repos:
            await self.tags(repos[0], lambda _tag: False)

    async def repositories(self) -> list[object]:
        """The namespace's repositories. Hub answers an empty page for a namespace that does not exist, so
        an empty listing is believed only once the namespace is known to exist: a mistyped or deleted
        namespace fails the poll instead of watching nothing (or reporting every repository removed)."""
        path = f"/v2/repositories/{quote(self.namespace, safe='')}/"
        what = f"repositories of namespace {self.namespace!r}"
        missing = f"namespace {self.namespace!r} does not exist on Docker Hub: check --namespace"
        entries = await self.api.listing(path, what, missing=missing)
        if not entries and not await self.api.namespace_exists(self.namespace):
            raise errors.ScopeError(missing)
        return [self._in_namespace(e["name"]) for e in entries or []]

    def _in_namespace(self, name: object) -> object:
        """`NS/NAME` for a name the API gave as a string; anything else as sent, for `discover` to ignore."""
        return f"{self.namespace}/{name}" if isinstance(name, str) else name

    async def repository_tags(self, repository: str, scope: Scope) -> dict[str, TagState]:
        """Nothing for a repository a full poll would not list: outside the namespace and not named by
        `--repository`. Every Hub repository can be listed, so a webhook naming another namespace's would
        otherwise report that repository's tags as added, and the next full poll as removed."""
        literal = scope.literal_repositories() or []
        if repository.rpartition("/")[0] != self.namespace and repository not in literal:
            return {}
        return await super().repository_tags(repository, scope)

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        namespace, _, name = repository.rpartition("/")
        namespace = namespace or self.namespace
        path = f"/v2/namespaces/{quote(namespace, safe='')}/repositories/{quote(name, safe='')}/tags"
        entries = await self.api.listing(path, f"tags of {repository}")
        if entries is None:
            return None
        states: dict[str, TagState] = {}
        heard: list[tuple[str, tuple[object, object, object, object]]] = []
        unresolved: list[tuple[str, datetime | None]] = []
        for entry in entries:
            tag = entry["name"]
            if not self.valid_tag(repository, tag) or not isinstance(tag, str) or not wanted(tag):
                continue
            pushed_at = parse_time(entry.get("tag_last_pushed")) or parse_time(entry.get("last_updated"))
            digest = entry.get("digest")
            if digest is None or digest == "":  # Hub leaves it out for some images: ask the registry
                unresolved.append((tag, pushed_at))
            else:
                states[tag] = TagState(self.valid_digest(repository, tag, digest), pushed_at)
                said = (entry.get("media_type"), entry.get("content_type"), entry.get("full_size"), entry.get("images"))
                heard.append((states[tag].digest, said))
        self.heard.add(repository, heard)
        path_in_registry = f"{namespace}/{name}"
        digests = await gather_all([self.client.manifest_digest(path_in_registry, tag) for tag, _ in unresolved])
        for (tag, pushed_at), found in zip(unresolved, digests, strict=True):
            if found is not None:  # None: the tag went away between the API's answer and the HEAD
                states[tag] = TagState(self.valid_digest(repository, tag, found), pushed_at)
        return states

    async def said(self, wanted: Mapping[str, str]) -> list[SaidImage]:
        """Kind, platforms and size of the wanted digests, as the listing's tag entries said them."""
        return self.heard.said(wanted, hub_said)

    def forget(self, repositories: Iterable[str]) -> None:
        self.heard.forget(repositories)

    @property
    def requests(self) -> int:
        return self.client.requests + self.api.requests

    @property
    def codes(self) -> Counter[str]:
        return self.client.codes + self.api.codes

    async def aclose(self) -> None:
        try:
            await self.api.aclose()
        finally:
            await super().aclose()


class HubApi(ApiClient):
    """Docker Hub's own API: a cached bearer token (one fresh login on a 401) and paginated listings."""

    def __init__(self, base_url: str, login: tuple[str, str] | None, limits: HostLimits) -> None:
        super().__init__(base_url, limits)
        self._login = login
        self._token: str | None = None
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0

    # -- authentication -------------------------------------------------------------------------------
    async def token(self, refused: str | None = None) -> str | None:
        """The bearer token: logs in when there is none yet, it is about to expire, or `refused` was it."""
        if self._login is None:
            return None
        async with self._lock:  # concurrent listings share one login
            if self._token is None or self._token == refused or time.monotonic() >= self._fresh_until:
                self._token = None
                token = await self._log_in(*self._login)
                self._token, self._fresh_until = token, time.monotonic() + usable_seconds(token)
            return self._token

    async def _log_in(self, username: str, secret: str) -> str:
        what = "login to the Docker Hub API"
        response = await self._send("POST", "/v2/auth/token", what, json={"identifier": username, "secret": secret})
        if response.status_code in (404, 405):  # an API without the new route: the deprecated one
            body = {"username": username, "password": secret}
            response = await self._send("POST", "/v2/users/login", what, json=body)
        if response.status_code != 200:
            raise login_error(response, what)
        answer = json_object(response, what)
        token = answer.get("access_token") or answer.get("token")
        if not isinstance(token, str) or not token:
            raise errors.BadResponseError(f"{what}: the answer holds no token")
        self.logins += 1
        return token

    async def get(self, url: str, what: str) -> httpx.Response:
        """GET with the bearer token; a 401 logs in again once, and a second 401 is the answer."""
        token = await self.token()
        response = await self._send("GET", url, what, headers=bearer(token))
        if response.status_code == 401 and token is not None:
            await response.aclose()
            token = await self.token(refused=token)
            response = await self._send("GET", url, what, headers=bearer(token))
        return response

    # -- namespaces -----------------------------------------------------------------------------------
    async def namespace_exists(self, namespace: str) -> bool:
        """Whether Hub knows `namespace` as a user (`/v2/users/NS/`) or an organisation (`/v2/orgs/NS/`).

        Only two 404s prove it missing; a 401 or 403 (an organisation's details may need its members'
        token) leaves it presumed to exist, and any other failure is raised, so the poll is tried again.
        """
        refused = False
        for kind in ("users", "orgs"):
            what = f"namespace {namespace!r} on Docker Hub"
            response = await self.get(f"/v2/{kind}/{quote(namespace, safe='')}/", what)
            status = response.status_code
            if status not in (200, 401, 403, 404):
                raise status_error(response, what)
            await response.aclose()
            if status == 200:
                return True
            refused = refused or status in (401, 403)
        return refused

    # -- listings -------------------------------------------------------------------------------------
    async def listing(self, path: str, what: str, *, missing: str | None = None) -> list[dict[str, Any]] | None:
        """Every entry of a paginated listing, each with a `name`; None on 404 unless `missing` says why.

        Hub pages by offset: a push or delete while the pages are read can shift an entry past us. The
        envelope's `count` catches that (it changes, or the names do not add up): the pager
        (`watcher.registry.pager`) then reads the listing once more, and a second mismatch fails it rather
        than report a tag as gone. The next page is the envelope's `next` URL.
        """

        async def read_page(url: str) -> Page[dict[str, Any]] | None:
            response = await self.get(url, what)
            if response.status_code == 404:  # first page: gone; a later one: the listing shrank under us
                return None
            if response.status_code != 200:
                raise status_error(response, what)
            page = json_object(response, what)
            link = page.get("next")
            return Page(page_results(page, what), link if isinstance(link, str) and link else None, page.get("count"))

        # names may be any JSON value; the poller checks them
        entries = await read_list(
            self.guard, what, f"{path}?page_size={PAGE_SIZE}", read_page, distinct=lambda e: repr(e["name"])
        )
        if entries is None and missing is not None:
            raise errors.ScopeError(missing)
        return entries


def hub_said(digest: str, sent: tuple[object, object, object, object]) -> SaidImage | None:
    """A tag entry's (media_type, content_type, full_size, images) of `digest`, checked: its platforms from
    `images[]`; an image whose `content_type` is not `image` is an artifact; without a media type, several
    platforms make an index."""
    media_type, content_type, size, images = sent
    entries = images if isinstance(images, list) else []
    platforms = said_platforms(
        said_platform(i.get("os"), i.get("architecture"), i.get("variant")) for i in entries if isinstance(i, dict)
    )
    kind = said_kind(media_type)
    if kind == "image" and isinstance(content_type, str) and content_type and content_type != "image":
        kind = "artifact"
    if kind is None and media_type in (None, "") and platforms is not None and len(platforms) > 1:
        kind = "index"
    return said_image(digest, kind, platforms, size=said_size(size))


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def usable_seconds(token: str) -> float:
    """How long to use a token: its JWT `exp` (or Hub's documented 10 minutes), less a margin."""
    lifetime = TOKEN_LIFETIME_SECONDS
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        lifetime = float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError):
        pass
    return max(lifetime - TOKEN_MARGIN_SECONDS, lifetime / 2, 0.0)


def page_results(page: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The entries of a page; each has a `name`, whose value the poller checks (it may be anything)."""
    results = page.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) and "name" in r for r in results):
        raise errors.BadResponseError(f"{what}: 'results' is not a list of named entries")
    return results


def hub_detail(response: httpx.Response) -> str:
    """Hub's own words for a failure (`detail` or `message`), one short line."""
    try:
        body = json.loads(response.content)
        text = body.get("detail") or body.get("message") or ""
    except (ValueError, AttributeError, RecursionError):
        return ""
    return " ".join(str(text).split())[:200]


def status_error(response: httpx.Response, what: str) -> errors.RegistryError:
    detail = hub_detail(response)
    kind = _STATUS_ERRORS.get(response.status_code, errors.BadResponseError)
    return kind(f"{what}: HTTP {response.status_code}" + (f" ({detail})" if detail else ""))


def login_error(response: httpx.Response, what: str) -> errors.RegistryError:
    if response.status_code in (400, 401):
        try:
            two_factor = bool(json.loads(response.content).get("login_2fa_token"))
        except (ValueError, AttributeError, RecursionError):
            two_factor = False
        hint = "; the account uses two-factor authentication: log in with a personal access token" if two_factor else ""
        return errors.AuthError(f"{what}: HTTP {response.status_code} ({hub_detail(response) or 'refused'}){hint}")
    return status_error(response, what)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time from the API as an aware datetime; None when absent, zero or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.year <= 1:  # Go's zero time: "never"
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
