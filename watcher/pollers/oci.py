"""`--provider oci`: any OCI Distribution v2 registry (Harbor, GHCR, Quay, GitLab, self-hosted).

Discovery through `/v2/_catalog` (skipped when the repositories are named literally), tags through
`/tags/list`, digests through `HEAD` on each manifest. Providers whose registry speaks the same protocol
subclass this and add credentials or a cheaper listing. A registry that turns out to be a Harbor (one
request per poll asks) is listed through Harbor's own API instead: see `watcher.pollers.harbor`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from watcher import errors
from watcher.diff import TagState
from watcher.pollers.base import Poller, TagFilter, gather_all
from watcher.pollers.harbor import HarborListing
from watcher.registrations.spec import RegistrySpec
from watcher.registry.auth import CredentialSource, StaticCredentials
from watcher.registry.oci import OciClient


class OciPoller(Poller):
    provider: ClassVar[str] = "oci"
    credential_fields: ClassVar[tuple[str, ...]] = ("username", "password")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    def __init__(self, spec: RegistrySpec) -> None:
        super().__init__(spec)
        self.client = OciClient(self.registry_url(), self.credential_source(), limits=self.limits)
        # only `--provider oci` may be a Harbor; the clouds built on this class never are
        self.harbor = (
            HarborListing(self.registry_url(), self.credential_source(), self.limits)
            if self.provider == OciPoller.provider
            else None
        )

    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        super().validate(spec)
        cls.require_pair(spec, "username", "password")

    def registry_url(self) -> str:
        return self.spec.url

    def credential_source(self) -> CredentialSource | None:
        creds = self.spec.credentials
        if creds.get("username") and creds.get("password"):
            return StaticCredentials(creds["username"], creds["password"])
        return None

    async def verify(self) -> None:
        await self.client.ping()
        await super().verify()

    async def _harbor(self) -> HarborListing | None:
        """Harbor's API when this registry is a Harbor that accepts our credentials, else None."""
        if self.harbor is not None and await self.harbor.active():
            return self.harbor
        return None

    async def repositories(self) -> Sequence[object]:
        harbor = await self._harbor()
        if harbor is not None:
            return await harbor.repositories()
        return await self.client.catalog()

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        harbor = await self._harbor()
        if harbor is not None:
            try:
                return await harbor.tags(repository, wanted, self)
            except errors.PermissionError_:
                pass  # a robot allowed to pull but not to list artifacts: the generic path still works
        names = await self.client.tags(repository)
        if names is None:
            return None
        kept = [t for t in self.valid_tags(repository, names) if wanted(t)]
        digests = await gather_all([self.client.manifest_digest(repository, t) for t in kept])
        return {
            tag: TagState(self.valid_digest(repository, tag, digest))
            for tag, digest in zip(kept, digests, strict=True)
            if digest is not None  # the tag went away between the list and the HEAD
        }

    def manifest_client(self) -> OciClient | None:
        return self.client

    @property
    def requests(self) -> int:
        return self.client.requests + (self.harbor.requests if self.harbor is not None else 0)

    @property
    def codes(self) -> Counter[str]:
        return self.client.codes + (self.harbor.codes if self.harbor is not None else Counter())

    async def aclose(self) -> None:
        try:
            if self.harbor is not None:
                await self.harbor.aclose()
        finally:
            await self.client.aclose()
