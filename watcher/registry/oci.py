"""The one OCI Distribution client: ping, catalog, tag lists and manifest digests, paginated and limited.

Every provider talks to its registry through this client; providers add only credentials and, where their
own API is cheaper, their own listing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from watcher import errors
from watcher.registry.auth import CredentialSource, RegistryAuth
from watcher.registry.entries import check_entries
from watcher.registry.hostlimits import HostLimits
from watcher.registry.http import ApiClient, json_object, status_error
from watcher.registry.origin import OriginGuard
from watcher.settings import get_settings

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
PAGE_SIZE = 1000


class OciClient(ApiClient):
    def __init__(
        self,
        base_url: str,
        credentials: CredentialSource | None = None,
        *,
        limits: HostLimits | None = None,
        verify: bool | str = True,
    ) -> None:
        guard = OriginGuard(base_url.rstrip("/"))
        self.auth = RegistryAuth(credentials, guard)
        super().__init__(base_url, limits or HostLimits(), auth=self.auth, verify=verify, guard=guard)

    async def ping(self) -> None:
        """GET /v2/: the registry answers, speaks Distribution v2, and accepts our credentials."""
        response = await self._send("GET", "/v2/", "ping /v2/")
        if response.status_code != 200:
            raise status_error(response, "ping /v2/")

    async def _pages(self, path: str, what: str) -> AsyncIterator[dict[str, Any]]:
        """Each JSON page of a paginated listing, following `Link: <...>; rel="next"` on the registry's origin,
        at most `WATCHER_MAX_PAGES` of them."""
        url: str | None = f"{path}?n={PAGE_SIZE}"
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise errors.BadResponseError(f"{what}: pagination loops at {url}")
            check_page_count(len(seen), what)
            seen.add(url)
            response = await self._send("GET", url, what)
            if response.status_code != 200:
                raise status_error(response, what)
            yield json_object(response, what)
            url = next_link(response, self.guard, what)

    async def catalog(self) -> list[object]:
        """Every repository name the catalog lists, as sent: the caller checks them against the grammar."""
        names: list[object] = []
        async for page in self._pages("/v2/_catalog", "catalog"):
            names.extend(entry_list(page, "repositories", "catalog"))
            check_entries(len(names), "catalog")
        return names

    async def tag_pages(self, repository: str) -> list[dict[str, Any]] | None:
        """The raw pages of a tag list (providers read extensions such as GCR's `manifest` map);
        None when the repository does not exist (any more). `repository` must be a valid name."""
        what = f"tags of {repository}"
        pages: list[dict[str, Any]] = []
        count = 0
        try:
            async for page in self._pages(f"/v2/{repository_path(repository)}/tags/list", what):
                pages.append(page)
                count += len(entry_list(page, "tags", what))
                check_entries(count, what)
        except errors.ScopeError:
            return None
        return pages

    async def tags(self, repository: str) -> list[object] | None:
        """Every tag name of the repository, as sent: the caller checks them against the grammar."""
        pages = await self.tag_pages(repository)
        if pages is None:
            return None
        return [tag for page in pages for tag in entry_list(page, "tags", f"tags of {repository}")]

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag points at, by HEAD (which registries do not count as a pull); None if gone.
        `repository` and `reference` must be valid names; the caller checks the digest."""
        what = f"manifest {repository}:{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        url = f"/v2/{repository_path(repository)}/manifests/{quote(reference, safe='')}"
        response = await self._send("HEAD", url, what, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise status_error(response, what)
        digest = response.headers.get("docker-content-digest")
        if digest:
            return digest
        response = await self._send("GET", url, what, headers=headers)  # registries that omit the header
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise status_error(response, what)
        return response.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(response.content).hexdigest()


def repository_path(repository: str) -> str:
    """A repository name as a URL path: its '/' kept, anything else escaped (valid names need none)."""
    return quote(repository, safe="/")


def entry_list(page: dict[str, Any], key: str, what: str) -> list[object]:
    """A page's list of names (`repositories`, `tags`); absent or null is empty, anything else fails."""
    entries = page.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise errors.BadResponseError(f"{what}: {key!r} is not a list")
    return entries


def next_link(response: httpx.Response, guard: OriginGuard, what: str) -> str | None:
    """The `rel="next"` target of a Link header, made absolute; one on another origin fails the listing."""
    for link in response.headers.get_list("link"):
        for part in link.split(","):
            target, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                return guard.follow_link(target.strip().strip("<>"), what)
    return None


def check_page_count(pages_read: int, what: str) -> None:
    """Refuse to read one more page once a listing has had `WATCHER_MAX_PAGES` of them."""
    limit = get_settings().max_pages
    if pages_read >= limit:
        raise errors.BadResponseError(f"{what}: more than {limit} pages (WATCHER_MAX_PAGES)")
