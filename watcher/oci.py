"""The one OCI Distribution client: ping, catalog, tag lists and manifest digests, paginated and limited.

Every provider talks to its registry through this client; providers add only credentials and, where their
own API is cheaper, their own listing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from watcher import errors
from watcher.auth import CredentialSource, RegistryAuth
from watcher.http import ApiClient, HostLimits, json_object, status_error
from watcher.origin import OriginGuard
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

    async def catalog(self) -> list[str]:
        names: list[str] = []
        async for page in self._pages("/v2/_catalog", "catalog"):
            repos = page.get("repositories") or []
            if not isinstance(repos, list):
                raise errors.BadResponseError("catalog: 'repositories' is not a list")
            names.extend(str(r) for r in repos)
        return names

    async def tag_pages(self, repository: str) -> list[dict[str, Any]] | None:
        """The raw pages of a tag list (providers read extensions such as GCR's `manifest` map);
        None when the repository does not exist (any more)."""
        what = f"tags of {repository}"
        pages: list[dict[str, Any]] = []
        try:
            async for page in self._pages(f"/v2/{repository}/tags/list", what):
                pages.append(page)
        except errors.ScopeError:
            return None
        return pages

    async def tags(self, repository: str) -> list[str] | None:
        pages = await self.tag_pages(repository)
        if pages is None:
            return None
        tags: list[str] = []
        for page in pages:
            page_tags = page.get("tags") or []
            if not isinstance(page_tags, list):
                raise errors.BadResponseError(f"tags of {repository}: 'tags' is not a list")
            tags.extend(str(t) for t in page_tags)
        return tags

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag points at, by HEAD (which registries do not count as a pull); None if gone."""
        what = f"manifest {repository}:{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        url = f"/v2/{repository}/manifests/{reference}"
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
