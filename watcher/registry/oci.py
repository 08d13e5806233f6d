"""The one OCI Distribution client: ping, catalog, tag lists and manifest digests, paginated and limited.

Every provider talks to its registry through this client; providers add only credentials and, where their
own API is cheaper, their own listing.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from watcher import errors
from watcher.registry.auth import CredentialSource, RegistryAuth
from watcher.registry.hostlimits import HostLimits
from watcher.registry.http import ApiClient, json_object, status_error
from watcher.registry.imagekinds import MANIFEST_TYPES
from watcher.registry.origin import OriginGuard
from watcher.registry.pager import Page, link_target, read_list
from watcher.registry.reference import repository_path

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

    async def _pages(self, path: str, key: str, what: str) -> list[dict[str, Any]]:
        """Each JSON page of a paginated listing of names (`key`), read by the one pager
        (`watcher.registry.pager`): it follows `Link: <...>; rel="next"` and counts the names."""

        async def read_page(url: str) -> Page[dict[str, Any]]:
            response = await self._send("GET", url, what)
            if response.status_code != 200:
                raise status_error(response, what)
            page = json_object(response, what)
            return Page([page], link_target(response))

        def names(page: dict[str, Any]) -> int:
            return len(entry_list(page, key, what))

        return await read_list(self.guard, what, f"{path}?n={PAGE_SIZE}", read_page, weight=names) or []

    async def catalog(self) -> list[object]:
        """Every repository name the catalog lists, as sent: the caller checks them against the grammar."""
        pages = await self._pages("/v2/_catalog", "repositories", "catalog")
        return [name for page in pages for name in entry_list(page, "repositories", "catalog")]

    async def tag_pages(self, repository: str) -> list[dict[str, Any]] | None:
        """The raw pages of a tag list (providers read extensions such as GCR's `manifest` map);
        None when the repository does not exist (any more). `repository` must be a valid name."""
        try:
            return await self._pages(f"/v2/{repository_path(repository)}/tags/list", "tags", f"tags of {repository}")
        except errors.ScopeError:
            return None

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


def entry_list(page: dict[str, Any], key: str, what: str) -> list[object]:
    """A page's list of names (`repositories`, `tags`); absent or null is empty, anything else fails."""
    entries = page.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise errors.BadResponseError(f"{what}: {key!r} is not a list")
    return entries
