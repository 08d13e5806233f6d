"""Image metadata from a real registry: images pushed with skopeo are stored as pushed, once per digest for
the installation, and bytes that do not match their digest store nothing."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.fakes.tampering_proxy import TamperingProxy
from tests.support.fixtures import RegistryEnv
from tests.support.images import ensure_images
from tests.support.ocilayout import Layout, Pushed
from watcher import schema
from watcher.polling.images import Ensured
from watcher.registrations.spec import RegistrySpec
from watcher.registry.imagemeta import DigestMismatch, parse_time, verify

SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"
VERSION = "org.opencontainers.image.version"
TITLE = "org.opencontainers.image.title"
LICENSES = "org.opencontainers.image.licenses"
CREATED = "org.opencontainers.image.created"


def spec_for(url: str, env: RegistryEnv | None = None, name: str = "r1") -> RegistrySpec:
    creds = {"username": env.username, "password": env.password} if env and env.username and env.password else {}
    return RegistrySpec(name=name, provider="oci", url=url, credentials=creds)


def run(watcher: Watcher, spec: RegistrySpec, wanted: dict[str, str]) -> Ensured:
    """`ensure` through the registry's own poller, as a poll (or the background fill) calls it."""
    return ensure_images(watcher.engine, spec, wanted)


def rows(watcher: Watcher) -> dict[str, dict[str, Any]]:
    with watcher.engine.connect() as conn:
        found = conn.execute(select(schema.images)).mappings().all()
    return {row["digest"]: dict(row) for row in found}


def single_arch(layout: Layout) -> Pushed:
    image = layout.image(
        seed="single",
        platform=("linux", "arm64", "v8"),
        created="2026-11-30T12:34:56.123456789Z",
        labels={
            VERSION: "1.2.3",
            TITLE: "the label's title",
            SOURCE: "https://label.example/ignored",
            "com.example.unkept": "x",
        },
        annotations={
            SOURCE: "https://git.example/app",
            REVISION: "0123456789abcdef",
            TITLE: "t" * 5000,
            "com.example.unkept": "y",
        },
    )
    layout.tag("v1", image)
    return image


def multi_platform(layout: Layout) -> Pushed:
    amd = layout.image(seed="amd", platform=("linux", "amd64", None))
    arm = layout.image(seed="arm", platform=("linux", "arm", "v7"))
    attestation = layout.image(seed="attestation", platform=("unknown", "unknown", None))
    index = layout.index(
        [
            (amd, {"platform": {"os": "linux", "architecture": "amd64"}}),
            (arm, {"platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}),
            (
                attestation,
                {
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ),
        ],
        annotations={CREATED: "2026-12-01T08:00:00+01:00", REVISION: "fedcba"},
    )
    layout.tag("multi", index, index=True)
    return index


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_metadata_is_stored_as_pushed(watcher: Watcher, basic_registry: RegistryEnv, unique_repo: str, tmp_path: Path):
    """A single-arch image with annotations and labels, and a multi-platform index, pushed with skopeo to a
    registry behind basic auth: each digest's row says what was pushed (manifest annotations before config
    labels, only the OCI keys, values cut at 1,024 characters; an index's platforms from its list, without
    its attestation); an image costs two requests (and the auth challenge), an index one."""
    layout = Layout(tmp_path / "layout")
    image, index = single_arch(layout), multi_platform(layout)
    creds = f"{basic_registry.username}:{basic_registry.password}"
    layout.push("v1", f"{basic_registry.host}/{unique_repo}:v1", creds=creds)
    layout.push("multi", f"{basic_registry.host}/{unique_repo}:multi", creds=creds)

    result = run(watcher, spec_for(basic_registry.url, basic_registry), {image.digest: unique_repo})
    assert (result.known, result.stored, result.failed) == (0, [image.digest], {})
    assert result.requests <= 3  # the manifest (after one 401 that asks for credentials) and the config
    result = run(watcher, spec_for(basic_registry.url, basic_registry), {index.digest: unique_repo})
    assert (result.stored, result.failed) == ([index.digest], {})
    assert result.requests <= 2

    stored = rows(watcher)
    assert stored[image.digest] | {"fetched_at": None} == {
        "digest": image.digest,
        "kind": "image",
        "platforms": [{"os": "linux", "architecture": "arm64", "variant": "v8"}],
        "created": datetime(2026, 11, 30, 12, 34, 56, 123456, tzinfo=UTC),
        "size": sum(image.blob_sizes),
        "annotations": {
            SOURCE: "https://git.example/app",
            REVISION: "0123456789abcdef",
            TITLE: "t" * 1024,
            VERSION: "1.2.3",
        },
        "fetched_at": None,
    }
    assert stored[index.digest] | {"fetched_at": None} == {
        "digest": index.digest,
        "kind": "index",
        "platforms": [
            {"os": "linux", "architecture": "amd64", "variant": None},
            {"os": "linux", "architecture": "arm", "variant": "v7"},
        ],
        "created": datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
        "size": sum(index.blob_sizes),
        "annotations": {CREATED: "2026-12-01T08:00:00+01:00", REVISION: "fedcba"},
        "fetched_at": None,
    }


def test_a_known_digest_costs_no_request_from_another_registry(
    watcher: Watcher, registry_factory, unique_repo: str, tmp_path: Path
) -> None:
    """The same image in two registries: the first registry's read stores it (an image: manifest and config,
    two requests, as counted by a proxy in front); the second registry is asked nothing at all."""
    layout = Layout(tmp_path / "layout")
    image = single_arch(layout)
    first, second = registry_factory(), registry_factory()
    for env in (first, second):
        layout.push("v1", f"{env.host}/{unique_repo}:v1")
    with TamperingProxy(first.url) as one, TamperingProxy(second.url) as two:
        result = run(watcher, spec_for(one.url, name="one"), {image.digest: unique_repo})
        assert (result.stored, result.requests, one.requests) == ([image.digest], 2, 2)
        result = run(watcher, spec_for(two.url, name="two"), {image.digest: f"{unique_repo}-elsewhere"})
        assert (result.known, result.stored, result.failed, result.requests) == (1, [], {}, 0)
        assert two.requests == 0
    assert list(rows(watcher)) == [image.digest]


@pytest.mark.parametrize("mode", ["config", "manifest"])
def test_bytes_not_matching_their_digest_store_nothing(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path, mode: str, caplog
) -> None:
    """A mirror that serves a config blob not matching its descriptor's digest, or another image's manifest
    under a digest: nothing is stored for that digest, and one warning names the registry and the digest;
    the honest registry behind it then gives the real metadata."""
    layout = Layout(tmp_path / "layout")
    image = single_arch(layout)
    other = layout.image(seed="other", labels={SOURCE: "https://evil.example"})
    layout.tag("other", other)
    layout.push("v1", f"{registry.host}/{unique_repo}:v1")
    layout.push("other", f"{registry.host}/{unique_repo}:other")
    with TamperingProxy(registry.url, mode) as proxy:
        proxy.planted = registry.client.get_manifest(unique_repo, other.digest)[0]
        with caplog.at_level(logging.WARNING, logger="watcher"):
            result = run(watcher, spec_for(proxy.url, name="mirror"), {image.digest: unique_repo})
        assert result.stored == [] and list(result.failed) == [image.digest]
        assert "do not match the digest" in result.failed[image.digest]
        assert rows(watcher) == {}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "registry 'mirror'" in warnings[0] and image.digest in warnings[0]
        assert "do not match the digest" in warnings[0]

        proxy.mode = "honest"
        result = run(watcher, spec_for(proxy.url, name="mirror"), {image.digest: unique_repo})
        assert result.stored == [image.digest]
    assert rows(watcher)[image.digest]["annotations"][SOURCE] == "https://git.example/app"


def test_a_digest_the_registry_does_not_have_stores_nothing(watcher: Watcher, registry: RegistryEnv, unique_repo: str):
    """A digest unknown to the registry (404) and a malformed one: each one line, nothing stored, no traceback."""
    missing = "sha256:" + "0" * 64
    result = run(watcher, spec_for(registry.url), {missing: unique_repo, "sha256:nothex": unique_repo})
    assert sorted(result.failed) == [missing, "sha256:nothex"]
    assert "HTTP 404" in result.failed[missing]
    assert rows(watcher) == {}


def test_docker_images_and_artifacts(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    """A Docker v2 image (its config read like an OCI one) and an OCI 1.1 artifact (`artifactType`, the empty
    config: not fetched, one request; its creation time from its annotation)."""
    docker = registry.client.push_image(unique_repo, "docker", seed="docker-image", media_type="docker")
    empty = registry.client.upload_blob(unique_repo, b"{}")
    sbom = b'{"spdxVersion": "SPDX-2.3"}'
    layer = registry.client.upload_blob(unique_repo, sbom)
    artifact_manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer, "size": len(sbom)}],
        "annotations": {CREATED: "2026-12-02T10:00:00Z", LICENSES: "MIT"},
    }
    artifact = registry.client.put_manifest(
        unique_repo, "sbom", json.dumps(artifact_manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    result = run(watcher, spec_for(registry.url), {docker: unique_repo})
    assert (result.stored, result.requests) == ([docker], 2)
    result = run(watcher, spec_for(registry.url), {artifact: unique_repo})
    assert (result.stored, result.requests) == ([artifact], 1)
    stored = rows(watcher)
    assert (stored[docker]["kind"], stored[docker]["platforms"]) == (
        "image",
        [{"os": "linux", "architecture": "amd64", "variant": None}],
    )
    assert stored[docker]["created"] == datetime(1970, 1, 1, tzinfo=UTC)
    assert stored[artifact] | {"fetched_at": None} == {
        "digest": artifact,
        "kind": "artifact",
        "platforms": [],
        "created": datetime(2026, 12, 2, 10, 0, tzinfo=UTC),
        "size": 2 + len(sbom),
        "annotations": {CREATED: "2026-12-02T10:00:00Z", LICENSES: "MIT"},
        "fetched_at": None,
    }


def test_a_config_past_its_cap_is_not_read(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path
) -> None:
    """A config blob over 1 MiB (labels of 1.5 MB) is not read to its end: nothing stored, one line saying why."""
    layout = Layout(tmp_path / "layout")
    image = layout.image(seed="fat", labels={f"com.example.l{i}": "x" * 1000 for i in range(1500)})
    layout.tag("fat", image)
    layout.push("fat", f"{registry.host}/{unique_repo}:fat")
    result = run(watcher, spec_for(registry.url), {image.digest: unique_repo})
    assert result.stored == [] and "more than 1 MiB" in result.failed[image.digest]
    assert rows(watcher) == {}


@pytest.mark.parametrize(
    ("digest", "verified"),
    [
        ("sha256:" + hashlib.sha256(b"abc").hexdigest(), True),
        ("sha512:" + hashlib.sha512(b"abc").hexdigest(), True),
        ("sha256:" + hashlib.sha256(b"abd").hexdigest(), False),
        ("sha384:" + hashlib.sha384(b"abc").hexdigest(), False),  # well-formed, but not checked here: refused
        ("sha256:ABC", False),
    ],
    ids=["sha256", "sha512", "other-bytes", "sha384", "malformed"],
)
def test_only_bytes_that_hash_to_the_digest_pass(digest: str, verified: bool) -> None:
    if verified:
        verify(b"abc", digest, "manifest r@d")
    else:
        with pytest.raises(
            DigestMismatch, match=r"^bad response: manifest r@d: (the bytes served do not match|the digest)"
        ):
            verify(b"abc", digest, "manifest r@d")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-11-30T12:34:56.123456789Z", datetime(2026, 11, 30, 12, 34, 56, 123456, tzinfo=UTC)),
        ("2026-11-30T12:34:56+02:00", datetime(2026, 11, 30, 10, 34, 56, tzinfo=UTC)),
        ("2026-11-30T12:34:56", datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (1700000000, None),
        ("2026-11-30T12:34:56Z" + " " * 100, None),
    ],
    ids=["nanoseconds", "offset", "no-zone", "words", "empty", "number", "long"],
)
def test_creation_times(text: object, parsed: datetime | None) -> None:
    assert parse_time(text) == parsed
