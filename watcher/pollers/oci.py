"""`--provider oci`: any OCI Distribution v2 registry (Harbor, GHCR, Quay, GitLab, self-hosted).

Discovery through `/v2/_catalog` (skipped when the repositories are named literally), tags through
`/tags/list`, digests through `HEAD` on each manifest. Providers whose registry speaks the same protocol
subclass this and add credentials or a cheaper listing.
"""

from __future__ import annotations

from typing import ClassVar

from watcher.auth import CredentialSource, StaticCredentials
from watcher.diff import TagState
from watcher.oci import OciClient
from watcher.pollers.base import Poller, TagFilter, gather_all
from watcher.spec import RegistrySpec


class OciPoller(Poller):
    provider: ClassVar[str] = "oci"
    credential_fields: ClassVar[tuple[str, ...]] = ("username", "password")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    def __init__(self, spec: RegistrySpec) -> None:
        super().__init__(spec)
        self.client = OciClient(self.registry_url(), self.credential_source(), limits=self.limits)

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

    async def repositories(self) -> list[str]:
        return await self.client.catalog()

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        names = await self.client.tags(repository)
        if names is None:
            return None
        kept = [t for t in names if wanted(t)]
        digests = await gather_all([self.client.manifest_digest(repository, t) for t in kept])
        return {tag: TagState(digest) for tag, digest in zip(kept, digests, strict=True) if digest}

    @property
    def requests(self) -> int:
        return self.client.requests

    async def aclose(self) -> None:
        await self.client.aclose()
