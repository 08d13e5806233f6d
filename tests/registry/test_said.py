"""What a provider says of a digest, checked as the untrusted input it is (`watcher.registry.said`): every
value a wrong type, out of range, over-long or too many is dropped, never a failure; `Heard` stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.registry.imagekinds import MAX_PLATFORMS, MAX_SIZE
from watcher.registry.said import Heard, said_image, said_kind, said_millis, said_platform, said_platforms, said_size

NOW = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text", "size"),
    [
        (0, False, 0),
        (MAX_SIZE, False, MAX_SIZE),
        (MAX_SIZE + 1, False, None),
        (-1, False, None),
        (True, False, None),
        (1.5, False, None),
        ("12", False, None),  # a JSON number is sent as one
        ("12", True, 12),  # ... except by Google
        ("-12", True, None),
        ("9" * 21, True, None),
        ("١٢", True, None),  # digits, but not ASCII ones
    ],
)
def test_sizes(value: object, text: bool, size: int | None) -> None:
    assert said_size(value, text=text) == size


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("1764576000123", datetime(2025, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)),
        (1764576000123, datetime(2025, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)),
        ("0", None),  # unknown, as GCR says it
        (None, None),
        ("99999999999999", None),  # the year 5138: not a build time
        ("-1", None),
        ([1], None),
    ],
)
def test_build_times_in_milliseconds(value: object, moment: datetime | None) -> None:
    assert said_millis(value, NOW) == moment


@pytest.mark.parametrize(
    ("media_type", "config_type", "kind"),
    [
        ("application/vnd.oci.image.index.v1+json", None, "index"),
        ("application/vnd.docker.distribution.manifest.list.v2+json", None, "index"),
        ("application/vnd.docker.distribution.manifest.v2+json", None, "image"),
        ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json", "image"),
        ("application/vnd.oci.image.manifest.v1+json", "application/vnd.cncf.helm.config.v1+json", "artifact"),
        ("application/vnd.oci.artifact.manifest.v1+json", None, "artifact"),
        ("text/html", None, None),
        (7, None, None),
    ],
)
def test_kinds(media_type: object, config_type: object, kind: str | None) -> None:
    assert said_kind(media_type, config_type) == kind


def test_platforms_are_short_plain_words_and_not_too_many() -> None:
    assert said_platform("linux", "arm64", "v8") == {"os": "linux", "architecture": "arm64", "variant": "v8"}
    assert said_platform("windows", "amd64", "") == {"os": "windows", "architecture": "amd64", "variant": None}
    for odd in [("linux", "x" * 65), ("linux", "arm/64"), ("unknown", "unknown"), ("linux", 5), (None, "amd64")]:
        assert said_platform(*odd) is None
    assert said_platform("linux", "arm", "v7\n") is None
    linux = said_platform("linux", "amd64")
    assert said_platforms([linux, None, linux]) == [linux]
    assert said_platforms([None]) is None
    many = [said_platform("linux", f"arch{n}") for n in range(MAX_PLATFORMS + 1)]
    assert said_platforms(many[:-1]) == many[:-1] and said_platforms(many) is None


def test_heard_keeps_what_waits_to_be_described_within_its_limit() -> None:
    heard: Heard[int] = Heard(limit=4)

    def sizes(wanted: dict[str, str]) -> dict[str, int | None]:
        return {one.digest: one.size for one in heard.said(wanted, lambda digest, n: said_image(digest, size=n))}

    heard.add("r1", [("a", 1), ("b", 2)])
    heard.add("r2", [("c", 3)])
    assert sizes({"a": "r1", "c": "r2", "b": "r2"}) == {"a": 1, "c": 3}  # b as r1 listed it, not r2
    heard.add("r1", [("a", 10)])  # listed again: what it says now, and the newest
    heard.add("r3", [("d", 4), ("e", 5)])
    assert len(heard) == 4
    heard.add("r4", [("f", 6)])  # past the limit: the oldest repository goes
    assert (len(heard), sizes({"c": "r2", "a": "r1", "f": "r4"})) == (4, {"a": 10, "f": 6})
    heard.forget(["r1", "r3", "never"])  # described, or found unchanged
    assert (len(heard), sizes({"a": "r1", "f": "r4"})) == (1, {"f": 6})
    heard.add("big", [(str(n), n) for n in range(10)])  # one repository past the limit is kept whole
    assert len(heard) == 10 and sizes({"9": "big", "f": "r4"}) == {"9": 9}
