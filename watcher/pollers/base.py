"""What every provider is: a way to list one registry into a Listing, and to check it can.

The base class owns concurrency, scoping and the check of what the registry sent against the OCI
grammar (`watcher.registry.reference`); a provider supplies credentials, repository discovery and tag listing, and
passes every name through `valid_repositories`/`valid_tags` before using it (in a URL, a filter or the
listing) and every digest through `valid_digest`. `listing` checks the result once more, so nothing a
provider missed reaches the snapshot. `verify` is what `registry add` and `registry test` run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from watcher import errors
from watcher.diff import Listing, TagState
from watcher.errors import InputError
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.hostlimits import HostLimits
from watcher.registry.reference import digest_problem, repository_problem, shown, tag_problem

if TYPE_CHECKING:
    from watcher.registry.oci import OciClient
    from watcher.registry.said import SaidImage

TagFilter = Callable[[str], bool]
T = TypeVar("T")
#: options that only some providers take
PROVIDER_OPTIONS = ("namespace", "region", "project_id")
#: how many ignored names a poll records one line each for; all are counted
MAX_IGNORED_LINES = 100


class Poller:
    provider: ClassVar[str]
    #: credential fields this provider accepts (CLI option names with '_' for '-')
    credential_fields: ClassVar[tuple[str, ...]] = ()
    #: of those, the ones never shown
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    #: provider-specific, non-secret options
    option_fields: ClassVar[tuple[str, ...]] = ()
    default_limits: ClassVar[HostLimits] = HostLimits()
    default_url: ClassVar[str] = ""

    def __init__(self, spec: RegistrySpec) -> None:
        self.spec = spec
        self.limits = limits_for(spec, self.default_limits)
        #: what the registry sent that is not a valid OCI name (left out of the listing), one line each,
        #: the first MAX_IGNORED_LINES of them
        self.ignored: list[str] = []
        #: how many names were left out in all
        self.ignored_count = 0
        self._ignored_keys: set[tuple[str, str | None]] = set()

    # -- validation -------------------------------------------------------------------------------
    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        """Reject what this provider cannot use; subclasses add what they require."""
        given = [*spec.credentials, *(k for k in PROVIDER_OPTIONS if spec.options.get(k))]
        for key in given:
            if key not in cls.credential_fields + cls.option_fields:
                raise InputError(
                    f"registry {spec.name!r}: --{key.replace('_', '-')} is not used by provider {cls.provider}"
                )

    @classmethod
    def require_pair(cls, spec: RegistrySpec, first: str, second: str) -> None:
        has = [bool(spec.credentials.get(first)), bool(spec.credentials.get(second))]
        if any(has) and not all(has):
            missing = second if has[0] else first
            raise InputError(
                f"registry {spec.name!r}: --{missing.replace('_', '-')} is missing "
                f"(--{first.replace('_', '-')} and --{second.replace('_', '-')} go together)"
            )

    # -- listing ------------------------------------------------------------------------------------
    async def verify(self) -> None:
        """Reachable, credentials accepted, listing permitted: raise the precise RegistryError if not."""
        repos = await self.discover(Scope.from_options(self.spec.options))
        if repos:
            await self.tags(repos[0], lambda _tag: False)

    async def repositories(self) -> Sequence[object]:
        """Every repository name the registry lists, as it sent them: `discover` checks them."""
        raise NotImplementedError

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        """The wanted tags of one repository with their digests; None if the repository is gone."""
        raise NotImplementedError

    async def discover(self, scope: Scope) -> list[str]:
        literal = scope.literal_repositories()
        if literal is not None:
            return literal
        return sorted(r for r in self.valid_repositories(await self.repositories()) if scope.wants_repository(r))

    async def prepare(self) -> None:
        """Whatever a poll needs before its first request (a provider may refresh a token here)."""
        return None

    async def repository_tags(self, repository: str, scope: Scope) -> dict[str, TagState]:
        """One repository's wanted tags, checked; empty if it is gone. A poll lists one of these at a time."""
        tags = await self.tags(repository, scope.wants_tag)
        return self._checked(repository, tags) if tags else {}

    async def listing(self, scope: Scope) -> Listing:
        """The whole registry in scope, listed concurrently; any failure fails the whole listing. (Polls go
        repository by repository instead: `watcher.polling.pipeline`.)"""
        await self.prepare()
        repos = await self.discover(scope)
        listed = await gather_all([self.repository_tags(repo, scope) for repo in repos])
        return {repo: tags for repo, tags in zip(repos, listed, strict=True) if tags}

    # -- what the registry sent ---------------------------------------------------------------------
    def ignore(self, line: str, name: object = None) -> None:
        """Count a name left out of the listing (once, wherever the registry sent it); keep its line while
        there are few."""
        key = (line, name if isinstance(name, str) else None)  # a line shows a long name cut short
        if key in self._ignored_keys:
            return
        self._ignored_keys.add(key)
        self.ignored_count += 1
        if len(self.ignored) < MAX_IGNORED_LINES:
            self.ignored.append(line)

    def valid_repositories(self, names: Iterable[object]) -> list[str]:
        """The valid repository names, each once, in order; the others are ignored."""
        valid: dict[str, None] = {}
        for name in names:
            problem = repository_problem(name)
            if problem is None and isinstance(name, str):
                valid[name] = None
            else:
                self.ignore(f"repository {shown(name)} is not a valid OCI repository name: it {problem}", name)
        return list(valid)

    def valid_tags(self, repository: str, names: Iterable[object]) -> list[str]:
        """The valid tags of `repository`, each once, in order; the others are ignored."""
        valid: dict[str, None] = {}
        for name in names:
            if self.valid_tag(repository, name) and isinstance(name, str):
                valid[name] = None
        return list(valid)

    def valid_tag(self, repository: str, name: object) -> bool:
        """Whether `name` is a valid tag; an invalid one is ignored."""
        problem = tag_problem(name)
        if problem is not None:
            self.ignore(f"tag {shown(name)} of {repository} is not a valid OCI tag: it {problem}", name)
        return problem is None

    def valid_digest(self, repository: str, tag: str, digest: object) -> str:
        """`digest` when it is valid; otherwise the poll fails: a tag's digest is not guessed."""
        problem = digest_problem(digest)
        if problem is not None or not isinstance(digest, str):
            raise errors.BadResponseError(f"{repository}:{tag}: the digest {shown(digest)} {problem}")
        return digest

    def _checked(self, repository: str, tags: dict[str, TagState]) -> dict[str, TagState]:
        """A provider's answer, checked once more: only valid tags, and only with valid digests."""
        kept = {tag: state for tag, state in tags.items() if self.valid_tag(repository, tag)}
        for tag, state in kept.items():
            self.valid_digest(repository, tag, state.digest)
        return kept

    def manifest_client(self) -> OciClient | None:
        """The OCI client that reads this registry's manifests and blobs by digest (image metadata,
        `watcher.polling.images`), the same one its listing goes through; None where the provider lists
        through an SDK of its own."""
        return None

    async def said(self, wanted: Mapping[str, str]) -> list[SaidImage]:
        """What the provider's own API says of the digests of `wanted` (digest -> a repository serving it):
        its kind, platforms, size or build time, where it says them, from what its listing already read
        (no request) or in a bounded number of requests. Nothing by default: an OCI registry says nothing
        but its bytes (`watcher.registry.imagemeta`)."""
        return []

    def forget(self, repositories: Iterable[str]) -> None:
        """The poll is done with these repositories (described, or found unchanged): what their listing
        heard for `said` may go."""
        return None

    @property
    def requests(self) -> int:
        return 0

    @property
    def codes(self) -> Counter[str]:
        """The requests made so far by HTTP status (or `error`), retries included."""
        return Counter()

    async def aclose(self) -> None:
        return None


def limits_for(spec: RegistrySpec, default: HostLimits) -> HostLimits:
    """The provider's default limits, overridden by the registry's own `max_concurrency`/`rate_limit`."""
    opts: dict[str, Any] = spec.options
    return HostLimits(
        max_concurrency=int(opts.get("max_concurrency") or default.max_concurrency),
        requests_per_second=float(opts.get("rate_limit") or default.requests_per_second),
        retries=default.retries,
        backoff_seconds=default.backoff_seconds,
        max_wait_seconds=default.max_wait_seconds,
        timeout_seconds=default.timeout_seconds,
    )


async def gather_all(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except ExceptionGroup as group_error:
        raise first_error(group_error) from None
    return [t.result() for t in tasks]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure inside a task group (the others were cancelled because of it)."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first
