"""What an image is, read from the registry's own bytes: its kind, platforms, creation time, size and a few
OCI annotations, each verified against a digest before anything is believed.

Metadata is keyed by digest across the installation (`watcher.schema.images`), so it must be a function of
the digest alone: a registry must not be able to plant metadata under a digest it did not serve. Hence
the manifest's bytes are hashed and compared with the digest asked for before they are parsed, the config
blob's bytes with the digest its descriptor names, and nothing outside those bytes is read (not the
`Content-Type` nor the `Docker-Content-Digest` header: what kind a manifest is comes from its body). A
mismatch is a `DigestMismatch` naming the digest; every read is bounded (`MAX_MANIFEST_BYTES`,
`MAX_CONFIG_BYTES`, under the transport's `WATCHER_MAX_BODY_BYTES`). An index's platforms come from its
manifest list, so an index costs one request and an image two.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from watcher import errors
from watcher.registry.imagekinds import (
    IMAGE_CONFIG_TYPES,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_PLATFORM_FIELD,
    MAX_PLATFORMS,
    MAX_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
)
from watcher.registry.reference import EXACT_ALGORITHMS, digest_problem, repository_path, shown

if TYPE_CHECKING:  # a client is handed in: an ECR or GCR poll's facts load no HTTP client of ours
    from watcher.registry.oci import OciClient

#: the largest manifest read: what the OCI distribution spec asks registries to accept
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: the largest image config read (real ones are a few KiB; a long build history some tens)
MAX_CONFIG_BYTES = 1024 * 1024
#: the only annotations (and config labels) kept
ANNOTATION_KEYS = tuple(
    f"org.opencontainers.image.{key}"
    for key in ("created", "source", "revision", "version", "title", "url", "licenses")
)
#: the longest annotation value kept (longer ones are cut)
MAX_ANNOTATION_LENGTH = 1024
#: buildx's attestations are index entries with a platform of `unknown/unknown`: not a platform an image runs on
ATTESTATION = "attestation-manifest"
_FRACTION = re.compile(r"(\.\d{6})\d+")


class DigestMismatch(errors.BadResponseError):
    """Bytes that do not hash to the digest they were asked for: nothing of them is used."""


@dataclass(frozen=True)
class ImageMeta:
    """One digest's metadata, as `watcher.schema.images` stores it."""

    digest: str
    kind: str  # image | index | artifact
    platforms: list[dict[str, str | None]] = field(default_factory=list)
    created: datetime | None = None
    size: int = 0
    annotations: dict[str, str] = field(default_factory=dict)


def verify(data: bytes, digest: str, what: str) -> None:
    """`data` hashes to `digest`, or DigestMismatch; a digest whose algorithm cannot be checked here is refused."""
    algorithm, _, encoded = digest.partition(":")
    problem = digest_problem(digest)
    if problem is not None:
        raise DigestMismatch(f"{what}: the digest {shown(digest)} {problem}")
    if algorithm not in EXACT_ALGORITHMS:
        raise DigestMismatch(f"{what}: the digest {shown(digest)} cannot be verified here (sha256 or sha512 only)")
    if hashlib.new(algorithm, data).hexdigest() != encoded:
        raise DigestMismatch(f"{what}: the bytes served do not match the digest {digest}; nothing of them is used")


async def fetch(client: OciClient, repository: str, digest: str) -> ImageMeta:
    """The metadata of `digest` as `repository` serves it, every byte verified; one request for an index or
    an artifact, two for an image (its config blob). `repository` must be a valid name."""
    what = f"manifest {repository}@{digest}"
    url = f"/v2/{repository_path(repository)}/manifests/{quote(digest, safe=':')}"
    body = await client.get_bounded(url, what, MAX_MANIFEST_BYTES, headers={"Accept": ", ".join(MANIFEST_TYPES)})
    verify(body, digest, what)
    manifest = _json_object(body, what)
    media_type = _media_type(manifest, what)
    annotations = _annotations(manifest.get("annotations"))
    if media_type in INDEX_TYPES:
        entries = _list(manifest.get("manifests"), "manifests", what)
        return ImageMeta(
            digest,
            "index",
            _index_platforms(entries),
            parse_time(annotations.get(ANNOTATION_KEYS[0])),
            _total(_descriptor_size(e, what) for e in entries),
            annotations,
        )
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise errors.BadResponseError(f"{what}: the manifest has no config descriptor")
    layers = _list(manifest.get("layers"), "layers", what)
    size = _total([_descriptor_size(config, what), *(_descriptor_size(layer, what) for layer in layers)])
    if manifest.get("artifactType") or config.get("mediaType") not in IMAGE_CONFIG_TYPES:
        return ImageMeta(digest, "artifact", [], parse_time(annotations.get(ANNOTATION_KEYS[0])), size, annotations)
    image = await _config(client, repository, config, what)
    labels = _annotations(_dict(image.get("config")).get("Labels"))
    merged = {**labels, **annotations}  # the manifest's annotations say it first; labels fill in
    created = parse_time(image.get("created")) or parse_time(merged.get(ANNOTATION_KEYS[0]))
    return ImageMeta(digest, "image", [_platform(image)], created, size, dict(sorted(merged.items())))


async def _config(client: OciClient, repository: str, descriptor: dict[str, Any], what: str) -> dict[str, Any]:
    """The image config the descriptor names, verified against its digest (and size)."""
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or digest_problem(digest) is not None:
        raise errors.BadResponseError(f"{what}: the config digest {shown(digest)} is not a valid digest")
    blob_what = f"config {repository}@{digest}"
    url = f"/v2/{repository_path(repository)}/blobs/{quote(digest, safe=':')}"
    body = await client.get_bounded(url, blob_what, MAX_CONFIG_BYTES)
    verify(body, digest, blob_what)
    if _descriptor_size(descriptor, what) != len(body):
        raise DigestMismatch(f"{blob_what}: {len(body)} bytes served, the manifest says {descriptor.get('size')}")
    return _json_object(body, blob_what)


# -- reading what was verified ----------------------------------------------------------------------------
def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise errors.BadResponseError(f"{what}: the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise errors.BadResponseError(f"{what}: the body is not a JSON object")
    return parsed


def _media_type(manifest: dict[str, Any], what: str) -> str:
    """The manifest's media type from its own bytes: `mediaType`, else its shape (OCI leaves the field optional)."""
    media_type = manifest.get("mediaType")
    if media_type in INDEX_TYPES or media_type in IMAGE_MANIFEST_TYPES:
        return str(media_type)
    if media_type is None and manifest.get("schemaVersion") == 2:
        if "manifests" in manifest:
            return OCI_INDEX
        if "config" in manifest:
            return OCI_MANIFEST
    raise errors.BadResponseError(f"{what}: not an OCI or Docker v2 manifest (mediaType {shown(media_type)})")


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object, key: str, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise errors.BadResponseError(f"{what}: {key!r} is not a list")
    return value


def _descriptor_size(descriptor: object, what: str) -> int:
    size = _dict(descriptor).get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise errors.BadResponseError(f"{what}: a descriptor's size {shown(size)} is not a number of bytes")
    return size


def _total(sizes: Any) -> int:
    return min(sum(sizes), MAX_SIZE)


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _annotations(value: object) -> dict[str, str]:
    """The kept OCI keys of an annotations (or labels) object, string values only, each cut to its bound."""
    found = _dict(value)
    kept = {key: _text(found.get(key), MAX_ANNOTATION_LENGTH) for key in ANNOTATION_KEYS}
    return {key: text for key, text in kept.items() if text is not None}


def _platform(value: object) -> dict[str, str | None]:
    found = _dict(value)
    return {
        "os": _text(found.get("os"), MAX_PLATFORM_FIELD),
        "architecture": _text(found.get("architecture"), MAX_PLATFORM_FIELD),
        "variant": _text(found.get("variant"), MAX_PLATFORM_FIELD),
    }


def _index_platforms(entries: list[Any]) -> list[dict[str, str | None]]:
    """Each entry's platform, once each, in order; entries without one and attestations are not platforms."""
    platforms: list[dict[str, str | None]] = []
    for entry in entries:
        entry = _dict(entry)
        if _dict(entry.get("annotations")).get("vnd.docker.reference.type") == ATTESTATION:
            continue
        if not isinstance(entry.get("platform"), dict):
            continue
        platform = _platform(entry["platform"])
        if platform not in platforms and len(platforms) < MAX_PLATFORMS:
            platforms.append(platform)
    return platforms


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time (nanoseconds allowed, cut to microseconds) in UTC; anything else is no time."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    text = _FRACTION.sub(r"\1", value.strip())
    text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
