"""The event document: CloudEvents 1.0 envelope, CDEvents 0.5.1 payload, package URL subject."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from tests.support.cdevents import validate_cloudevent
from watcher.diff import Change, ChangeKind
from watcher.outbox.events import NO_IMAGE, ImageFacts, new_event, package_url, stream_entry

DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


def make(
    kind: ChangeKind, previous: str = "", pushed: datetime | None = None, workspace: str = "default"
) -> dict[str, str]:
    change = Change(kind, "team/app", "v1", DIGEST, previous, pushed)
    url = "https://registry.example.com:5000"
    return stream_entry(new_event(1, "prod", url, change, NOW, workspace=workspace, workspace_id=7))


@pytest.mark.parametrize("workspace", ["default", "team-b"])
@pytest.mark.parametrize("kind", list(ChangeKind))
def test_every_kind_validates_against_the_official_schema(kind: ChangeKind, workspace: str) -> None:
    entry = make(kind, previous="sha256:" + "cd" * 32 if kind is ChangeKind.UPDATED else "", workspace=workspace)
    document = json.loads(entry["cloudevent"])
    validate_cloudevent(document)
    assert document["type"] == (
        "dev.cdevents.artifact.deleted.0.2.0" if kind is ChangeKind.REMOVED else "dev.cdevents.artifact.published.0.3.0"
    )
    assert document["subject"] == "team/app:v1"
    assert document["id"] == entry["event_id"]
    custom = document["data"]["customData"]
    assert custom == {k: v for k, v in entry.items() if k != "cloudevent"} | NO_IMAGE.custom_data()


def test_a_tag_event_carries_its_image_in_custom_data_only() -> None:
    """What `images` knows of the digest goes into `customData` (`created`, `platforms`, `source`,
    `revision`), never into the stream fields; unknown, the four keys are empty."""
    facts = ImageFacts.of(
        datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC),
        [{"os": "linux", "architecture": "arm64", "variant": "v8"}, {"os": "linux", "architecture": "amd64"}, {}],
        {"org.opencontainers.image.source": "https://git.example/app", "org.opencontainers.image.revision": "abc"},
    )
    change = Change(ChangeKind.ADDED, "team/app", "v1", DIGEST)
    entry = stream_entry(new_event(1, "prod", "https://r.example.com", change, NOW, image=facts))
    document = json.loads(entry["cloudevent"])
    validate_cloudevent(document)
    assert "created" not in entry and "platforms" not in entry
    assert {k: document["data"]["customData"][k] for k in ("created", "platforms", "source", "revision")} == {
        "created": "2026-11-30T12:34:56.000Z",
        "platforms": ["linux/arm64/v8", "linux/amd64"],
        "source": "https://git.example/app",
        "revision": "abc",
    }


@pytest.mark.parametrize("workspace", ["default", "team-b"])
def test_an_event_names_its_workspace_in_the_entry_the_source_and_an_extension_attribute(workspace: str) -> None:
    """The registry stays its plain name; the workspace is a field, a path segment of the source (for
    `default` too) and the CloudEvents extension attribute `workspace`."""
    entry = make(ChangeKind.ADDED, workspace=workspace)
    assert (entry["workspace"], entry["registry"]) == (workspace, "prod")
    document = json.loads(entry["cloudevent"])
    source = f"/watcher/workspaces/{workspace}/registries/prod"
    assert document["source"] == document["data"]["context"]["source"] == source
    assert document["data"]["subject"]["source"] == source
    assert document["workspace"] == workspace
    assert document["data"]["customData"]["workspace"] == workspace


def test_the_validator_rejects_an_extension_attribute_cloudevents_does_not_allow() -> None:
    document = json.loads(make(ChangeKind.ADDED)["cloudevent"])
    document["work_space"] = document.pop("workspace")
    with pytest.raises(AssertionError, match="work_space"):
        validate_cloudevent(document)


def test_the_validator_rejects_a_broken_cdevent() -> None:
    document = json.loads(make(ChangeKind.ADDED)["cloudevent"])
    document["data"]["subject"]["unexpected"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate_cloudevent(document)


def test_stream_fields_are_strings_with_rfc3339_times() -> None:
    pushed = datetime(2026, 11, 25, 9, 30, 15, 250000, tzinfo=UTC)
    entry = make(ChangeKind.UPDATED, previous="sha256:" + "cd" * 32, pushed=pushed)
    assert all(isinstance(v, str) for v in entry.values())
    assert entry["pushed_at"] == "2026-11-25T09:30:15.250Z"
    assert entry["detected_at"] == "2026-11-26T18:00:00.000Z"
    assert entry["previous_digest"] == "sha256:" + "cd" * 32
    assert make(ChangeKind.ADDED)["pushed_at"] == ""


def test_package_url_follows_the_contract() -> None:
    assert package_url("registry.example.com:5000", "team/app", "v1", DIGEST) == (
        f"pkg:oci/app@sha256%3A{'ab' * 32}?repository_url=registry.example.com:5000/team/app&tag=v1"
    )


def test_event_ids_are_unique() -> None:
    assert len({make(ChangeKind.ADDED)["event_id"] for _ in range(50)}) == 50
