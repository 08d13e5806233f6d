"""Harbor's own REST API (v2.0) as the listing of `--provider oci`, when the registry is a Harbor.

Harbor is an OCI registry, so the generic path works with it, but Harbor's API is cheaper and richer:

* `GET /api/v2.0/projects/{p}/repositories/{r}/artifacts?with_tag=true` gives every artifact of a
  repository with its digest, its tags and their push times, 100 artifacts a request, where the generic
  path needs one tag list plus one manifest HEAD per tag and learns no push time;
* `GET /api/v2.0/projects` and `.../projects/{p}/repositories` find repositories for robot accounts,
  which Harbor's `/v2/_catalog` refuses to anyone but a system administrator.

Whether a registry is a Harbor is asked once per poll with one anonymous `GET /api/v2.0/systeminfo`
(Harbor answers it to anyone; other registries answer 404); a worker remembers a "no" for an hour.
Harbor does not refuse wrong Basic credentials on its API: it serves the request as anonymous, with the
public projects only. A poll must never read "not allowed to see" as "deleted", so before listing, the
credentials are checked with
`GET /api/v2.0/users/current` (401 when they were not accepted; 412 for a robot account, which is fine).
Lists are paged (`page`, `page_size` at most 100, `X-Total-Count`, `Link: <...>; rel="next"`); a list
that changes while it is paged is read again once, then the poll fails rather than miss a tag.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from watcher import errors
from watcher.diff import TagState
from watcher.pollers.base import Poller, TagFilter, gather_all
from watcher.registry import warm
from watcher.registry.auth import CredentialSource
from watcher.registry.entries import check_entries
from watcher.registry.hostlimits import HostLimits
from watcher.registry.http import ApiClient, json_body, status_error
from watcher.registry.origin import Origin
from watcher.registry.pager import UNSAID, Page, link_target, read_list

API = "/api/v2.0"
PAGE_SIZE = 100  # Harbor's maximum page_size
ROBOT_WITHOUT_USER_RECORD = 412  # /users/current answers a robot account with 412 Precondition Failed
#: in a worker, how long an origin found not to be a Harbor is not asked again (a registry seldom becomes one)
NOT_HARBOR_SECONDS = 3600.0
MAX_REMEMBERED = 4096
_NOT_HARBOR: dict[Origin, float] = {}


class HarborListing(ApiClient):
    """Repositories and tags of a Harbor through its API; `active()` says whether to use it at all."""

    def __init__(self, base_url: str, credentials: CredentialSource | None, limits: HostLimits) -> None:
        super().__init__(base_url, limits)
        self._credentials = credentials
        self._lock = asyncio.Lock()
        self._active: bool | None = None

    # -- detection ----------------------------------------------------------------------------------
    async def active(self) -> bool:
        """True when the registry is a Harbor that accepts our credentials; asked once, then remembered."""
        async with self._lock:
            if self._active is None:
                harbor = await self._is_harbor()
                if harbor:
                    await self._check_credentials()
                self._active = harbor
            return self._active

    async def _is_harbor(self) -> bool:
        """One anonymous request; any answer but Harbor's system info means "use the generic path". A
        worker remembers a "no" for its origin a while (`NOT_HARBOR_SECONDS`): a steady poll needs no probe."""
        if _NOT_HARBOR.get(self.guard.home, 0.0) > time.monotonic():
            return False
        harbor = await self._probe()
        if not harbor and warm.enabled():
            if len(_NOT_HARBOR) >= MAX_REMEMBERED:
                _NOT_HARBOR.clear()
            _NOT_HARBOR[self.guard.home] = time.monotonic() + NOT_HARBOR_SECONDS
        return harbor

    async def _probe(self) -> bool:
        # unreachable is unreachable, Harbor or not: that error is raised, not taken for "not Harbor"
        response = await self._send("GET", f"{API}/systeminfo", f"GET {API}/systeminfo")
        if response.status_code != 200:
            return False
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            return False
        return isinstance(body, dict) and ("harbor_version" in body or "auth_mode" in body)

    async def _check_credentials(self) -> None:
        """Harbor serves refused credentials as anonymous; ask it outright whether it knows us."""
        if self._login() is None:
            return  # anonymous by choice: Harbor shows the public projects, as it should
        what = f"Harbor login check (GET {API}/users/current)"
        response = await self._get(f"{API}/users/current", what)
        if response.status_code not in (200, ROBOT_WITHOUT_USER_RECORD):
            raise status_error(response, what)

    # -- listing ------------------------------------------------------------------------------------
    async def repositories(self) -> list[object]:
        """Every repository of every project these credentials may see (public ones included), as sent."""
        projects = await self._paged(f"{API}/projects", "Harbor projects", {"with_detail": "false"}, capped_as=None)
        names = [_text(project, "name", "Harbor projects") for project in projects]
        listed = await gather_all([self._repositories_of(name) for name in names])
        repositories = [repo for repos in listed for repo in repos]
        check_entries(len(repositories), "Harbor repositories")
        return repositories

    async def _repositories_of(self, project: str) -> list[object]:
        what = f"Harbor repositories of project {project}"
        items = await self._paged(f"{API}/projects/{_segment(project)}/repositories", what, {})
        return [item.get("name") for item in items]  # full names: "project/repo"; the poller checks them

    async def tags(self, repository: str, wanted: TagFilter, check: Poller) -> dict[str, TagState] | None:
        """Wanted tags with digest and push time; None when Harbor holds no artifact there (any more).

        `repository` must be a valid name; `check` is the poller's: it filters the tags Harbor sent
        (ignoring invalid ones) and vouches for each digest before it is used."""
        project, _, name = repository.partition("/")
        if not name:
            return None  # every Harbor repository lives in a project
        what = f"Harbor artifacts of {repository}"
        # a repository name with '/' must be URL-encoded twice (a/b -> a%252Fb): Harbor decodes it twice
        path = f"{API}/projects/{_segment(project)}/repositories/{_segment(_segment(name))}/artifacts"
        artifacts = await self._paged(
            path, what, {"with_tag": "true"}, capped_as=f"tags of {repository}", weight=lambda a: len(_tags(a, what))
        )
        if not artifacts:
            return None
        found: dict[str, TagState] = {}
        for artifact in artifacts:
            pushed = push_time(artifact.get("push_time"))
            for tag in _tags(artifact, what):
                tag_name = tag.get("name")
                if check.valid_tag(repository, tag_name) and isinstance(tag_name, str) and wanted(tag_name):
                    digest = check.valid_digest(repository, tag_name, artifact.get("digest"))
                    # the tag's own push time says when it was pushed or moved here; the artifact's is the fallback
                    found[tag_name] = TagState(digest, push_time(tag.get("push_time")) or pushed)
        return found

    # -- paging -------------------------------------------------------------------------------------
    async def _paged(
        self,
        path: str,
        what: str,
        params: dict[str, str],
        *,
        capped_as: str | None = "",
        weight: Callable[[dict[str, Any]], int] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a paged list, by page number, through the one pager (`watcher.registry.pager`):
        a list whose total changed while it was paged is read again once, then a bad response.
        `capped_as` and `weight` as the pager has them (Harbor's artifacts count their tags)."""

        async def read_page(url: str) -> Page[dict[str, Any]]:
            response = await self._get(url, what)
            if response.status_code != 200:
                raise status_error(response, what)
            batch = _page_items(response, what)
            total = _total_count(response, what)
            link = link_target(response) if batch else None
            return Page(batch, link, UNSAID if total is None else total)

        first = f"{path}?{urlencode({**params, 'page': '1', 'page_size': str(PAGE_SIZE)})}"
        return (
            await read_list(self.guard, what, first, read_page, capped_as=capped_as, weight=weight, numbered=True) or []
        )

    async def _get(self, url: str, what: str) -> httpx.Response:
        login = self._login()
        auth = httpx.BasicAuth(*login) if login is not None else None
        return await self._send("GET", url, what, auth=auth)

    def _login(self) -> tuple[str, str] | None:
        return self._credentials.get() if self._credentials is not None else None


def push_time(value: object) -> datetime | None:
    """An RFC 3339 time as Harbor writes it; None for a missing value or Go's zero time (year 1)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.year <= 1:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _segment(text: str) -> str:
    return quote(text, safe="")


def _page_items(response: httpx.Response, what: str) -> list[dict[str, Any]]:
    items = _list(json_body(response, what), what)
    if not all(isinstance(item, dict) for item in items):
        raise errors.BadResponseError(f"{what}: an item is not a JSON object")
    return items


def _tags(artifact: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """An artifact's tags, each as an object (a bare name is taken for `{"name": ...}`)."""
    return [tag if isinstance(tag, dict) else {"name": tag} for tag in _list(artifact.get("tags"), what)]


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []  # Go writes an empty list as null
    if not isinstance(value, list):
        raise errors.BadResponseError(f"{what}: expected a JSON list")
    return value


def _text(item: object, key: str, what: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        raise errors.BadResponseError(f"{what}: an item has no {key!r}")
    return value


def _total_count(response: httpx.Response, what: str) -> int | None:
    value = response.headers.get("x-total-count")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.BadResponseError(f"{what}: X-Total-Count is not a number") from None
