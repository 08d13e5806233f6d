"""What a provider's own API says of a digest (`Poller.said`), read as the untrusted input it is.

ECR's `describeImages`, Google's `tags/list` `manifest` map, Docker Hub's tag entries and ACR's manifest
properties each say some of a digest's kind, platforms, size or build time. None of it is verified against
the digest (`watcher.schema.listed_images` believes it for the registry that said it alone), and a
provider's URL is the registrant's to choose, so every value is checked here before it is kept: a wrong
type, a size past `MAX_SIZE` or below zero, a time before 1970 or in the future, a platform field that is
not a short plain word, or more platforms than `MAX_PLATFORMS` is dropped (that field says nothing), never
a failure. `Heard` keeps what a listing read for `said` to answer from, until the poll is done with its
repository. The media types and bounds are `watcher.registry.imagekinds`' (those of verified metadata), not
`watcher.registry.imagemeta`'s module, which would load the OCI client into every ECR poller.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from watcher.registry import imagekinds as kinds

#: the OCI artifact manifest (image-spec 1.1-rc): an artifact whatever it carries
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
#: the most digests one poller keeps from its listing for `said`, the oldest repository's forgotten first: a
#: poll forgets a repository once it is described or found unchanged, and waits for at most `CHUNK_TAGS` tags
#: (`watcher.polling.pipeline`), so this is a bound for a registry that stalls its writer, not the rule
MAX_HEARD = 50_000
#: a build time further ahead than this is not believed (clocks drift; builds are not from the future)
FUTURE_SLACK = timedelta(days=1)
_PLATFORM_WORD = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{kinds.MAX_PLATFORM_FIELD - 1}}}")
#: what providers list for an attestation or a platform they do not know: not a platform an image runs on
_NO_PLATFORM = frozenset({"unknown", ""})
T = TypeVar("T")


@dataclass(frozen=True)
class SaidImage:
    """What a provider's own API says of a digest one registry lists (`Poller.said`), each field None where it
    says nothing. Not verified against the digest: stored per registry (`watcher.schema.listed_images`) and
    believed for that registry alone. `created` is the image's build time, never a push time."""

    digest: str
    kind: str | None = None  # image | index | artifact
    platforms: list[dict[str, str | None]] | None = None
    created: datetime | None = None
    size: int | None = None


def said_kind(media_type: object, config_type: object = None) -> str | None:
    """`index`, `image` or `artifact` from a manifest's media type (and its config's or artifact's media
    type, where the provider gives it); None for a media type that is none of those."""
    if not isinstance(media_type, str):
        return None
    if media_type in kinds.INDEX_TYPES:
        return "index"
    if media_type == OCI_ARTIFACT:
        return "artifact"
    if media_type in kinds.IMAGE_MANIFEST_TYPES:
        if isinstance(config_type, str) and config_type and config_type not in kinds.IMAGE_CONFIG_TYPES:
            return "artifact"
        return "image"
    return None


def said_size(value: object, *, text: bool = False) -> int | None:
    """A number of bytes, a JSON integer (or with `text` a decimal string: Google sends strings); None
    otherwise."""
    if text and isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= kinds.MAX_SIZE:
        return None
    return value


def said_millis(value: object, now: datetime | None = None) -> datetime | None:
    """Epoch milliseconds (an integer, or a decimal string) as a UTC time; "0", absent, or a time before
    1970 or in the future says nothing."""
    millis = said_size(value, text=True)
    if not millis:
        return None
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=min(millis, 2**53))
    if moment > (now or datetime.now(UTC)) + FUTURE_SLACK:
        return None
    return moment


def said_platform(os: object, architecture: object, variant: object = None) -> dict[str, str | None] | None:
    """A platform as `images.platforms` stores it, or None: each field a short plain word (an over-long or
    odd one is not cut into something it never said), `unknown` (an attestation) is none."""
    if not _word(os) or not _word(architecture) or os in _NO_PLATFORM or architecture in _NO_PLATFORM:
        return None
    if variant is not None and variant != "" and not _word(variant):
        return None
    return {"os": str(os), "architecture": str(architecture), "variant": str(variant) if variant else None}


def said_platforms(platforms: Iterable[dict[str, str | None] | None]) -> list[dict[str, str | None]] | None:
    """The distinct platforms in order; None when there are none, or more than MAX_PLATFORMS (a list that
    long is not an image's)."""
    found: list[dict[str, str | None]] = []
    for platform in platforms:
        if platform is not None and platform not in found:
            if len(found) == kinds.MAX_PLATFORMS:
                return None
            found.append(platform)
    return found or None


def _word(value: object) -> bool:
    return isinstance(value, str) and _PLATFORM_WORD.fullmatch(value) is not None


class Heard(Generic[T]):
    """What a listing read of each digest, as the provider sent it, by repository, for `said` to check and
    answer from without a request. A repository is forgotten once the poll is done with it (described, or
    found unchanged: `Poller.forget`), so it holds what waits to be committed; and never more than `limit`
    digests, the oldest repository forgotten first. Listing threads add to it."""

    def __init__(self, limit: int = MAX_HEARD) -> None:
        self.limit = limit
        self._found: OrderedDict[str, dict[str, T]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def add(self, repository: str, items: Iterable[tuple[str, T]]) -> None:
        """One repository's (digest, what was said) pairs, at once, in place of what it said before."""
        said = dict(items)
        with self._lock:
            self._count += len(said) - len(self._found.pop(repository, {}))
            self._found[repository] = said
            while self._count > self.limit and len(self._found) > 1:
                self._count -= len(self._found.popitem(last=False)[1])

    def forget(self, repositories: Iterable[str]) -> None:
        with self._lock:
            for repository in repositories:
                self._count -= len(self._found.pop(repository, {}))

    def said(self, wanted: Mapping[str, str], check: Callable[[str, T], SaidImage | None]) -> list[SaidImage]:
        """What was heard of the wanted digests (digest -> a repository serving it), each checked by `check`
        (digest, as sent): no request."""
        with self._lock:
            heard = [(digest, self._found.get(repository, {}).get(digest)) for digest, repository in wanted.items()]
        found = [check(digest, said) for digest, said in heard if said is not None]
        return [one for one in found if one is not None]

    def heard_of(self, wanted: Mapping[str, str]) -> set[str]:
        """Those of the wanted digests the listing heard anything of, valid or not."""
        with self._lock:
            return {digest for digest, repository in wanted.items() if digest in self._found.get(repository, {})}

    def __len__(self) -> int:
        return self._count


def said_image(
    digest: str,
    kind: str | None = None,
    platforms: list[dict[str, str | None]] | None = None,
    created: datetime | None = None,
    size: int | None = None,
) -> SaidImage | None:
    """The checked facts as a SaidImage; None when none is left (nothing to store)."""
    if kind is None and platforms is None and created is None and size is None:
        return None
    return SaidImage(digest, kind, platforms, created, size)
