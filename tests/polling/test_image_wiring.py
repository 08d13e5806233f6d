"""Image metadata in polls, on the real registry: after a baseline, a new digest is read with the poll's own
client before its event is written, so the event's `customData` says what was pushed; a steady poll asks
nothing more, a known digest nothing at all, a tampered one stores nothing and its event still goes out;
the baseline's digests are filled in the background, and once filled the fill costs nothing."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.conftest import Watcher
from tests.fakes.tampering_proxy import TamperingProxy
from tests.registry.test_imagemeta import multi_platform, single_arch
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from tests.support.ocilayout import Layout
from watcher import schema
from watcher.models import Event
from watcher.polling import imagefill
from watcher.polling import poll as polling
from watcher.polling.repository import poll_repository

IMAGE_KEYS = ("created", "platforms", "source", "revision")


def add(watcher: Watcher, name: str, url: str, scope: str, *extra: str) -> None:
    result = watcher.add_registry(name, url, "--repository", f"{scope}/*", *extra)
    assert result.exit_code == 0, result.output


def image_data(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Each event's tag -> its customData's image keys (every CloudEvent checked against CDEvents 0.5.1)."""
    found = {}
    for event in events:
        document = json.loads(event.cloudevent)
        validate_cloudevent(document)
        found[event.tag] = {key: document["data"]["customData"][key] for key in IMAGE_KEYS}
    return found


def stored_digests(watcher: Watcher) -> set[str]:
    with watcher.engine.connect() as conn:
        return set(conn.execute(select(schema.images.c.digest)).scalars())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_new_digests_are_described_before_their_events(
    watcher: Watcher, registry_factory, unique_repo: str, tmp_path: Path
) -> None:
    """Baseline (nothing read); steady polls (the same requests each); a skopeo-pushed image with annotations
    and labels found by a webhook's repository poll, and a multi-platform index found by a full poll: each
    `added` event carries what was pushed, at two requests for the image and one for the index; a tag moved
    onto a known digest, and the same image in a second registry, cost no request for it."""
    first, second = registry_factory(), registry_factory()
    app = f"{unique_repo}/app"
    v0 = first.client.push_image(app, "v0")
    add(watcher, "r1", first.url, unique_repo)
    assert polling.poll("r1").baseline
    steady = polling.poll("r1").requests
    assert polling.poll("r1").requests == steady and stored_digests(watcher) == set()

    layout = Layout(tmp_path / "layout")
    image, index = single_arch(layout), multi_platform(layout)
    layout.push("v1", f"{first.host}/{app}:v1")
    hinted = poll_repository("r1", app)
    listing = poll_repository("r1", app).requests  # nothing changed: the listing alone
    assert hinted.requests == listing + 2  # the manifest and the config
    assert image_data(hinted.events) == {
        "v1": {
            "created": "2026-11-30T12:34:56.123Z",
            "platforms": ["linux/arm64/v8"],
            "source": "https://git.example/app",  # the manifest's annotation before the config's label
            "revision": "0123456789abcdef",
        }
    }

    layout.push("multi", f"{first.host}/{app}:multi")
    first.client.retag(app, "v0", "v0-again")  # a digest of the baseline, not read yet: read now
    first.client.retag(app, "v1", "v1-again")  # a digest known now: not read again
    polled = polling.poll("r1")
    assert polled.requests == steady + 4 + 1 + 2  # a HEAD for v1, multi and each retag; the index; v0's image
    data = image_data(polled.events)
    assert data["multi"] == {
        "created": "2026-12-01T07:00:00.000Z",
        "platforms": ["linux/amd64", "linux/arm/v7"],  # the attestation is not a platform
        "source": "",
        "revision": "fedcba",
    }
    assert data["v1-again"] == image_data(hinted.events)["v1"]
    assert data["v0-again"] == {
        "created": "1970-01-01T00:00:00.000Z",
        "platforms": ["linux/amd64"],
        "source": "",
        "revision": "",
    }
    assert stored_digests(watcher) == {image.digest, index.digest, v0}
    assert polling.poll("r1").requests == steady + 4  # steady again: the four new tags' HEADs, nothing more

    layout.push("v1", f"{second.host}/{unique_repo}/copy:v1")
    add(watcher, "r2", second.url, unique_repo, "--emit-existing")
    elsewhere = polling.poll("r2")
    assert image_data(elsewhere.events)["v1"]["source"] == "https://git.example/app"
    listing_only = polling.poll("r2").requests
    assert elsewhere.requests == listing_only  # a known digest: no request for it


def test_a_tampered_config_stores_nothing_and_the_event_still_goes_out(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path, caplog
) -> None:
    """Behind a mirror that rewrites config blobs, a new image's config does not match its digest: nothing is
    stored, one warning names the registry and the digest, and the `added` event goes out without metadata."""
    registry.client.push_image(f"{unique_repo}/app", "v0")
    layout = Layout(tmp_path / "layout")
    image = single_arch(layout)
    with TamperingProxy(registry.url, "config") as proxy:
        add(watcher, "mirror", proxy.url, unique_repo)
        polling.poll("mirror")
        layout.push("v1", f"{registry.host}/{unique_repo}/app:v1")
        with caplog.at_level(logging.WARNING, logger="watcher"):
            polled = polling.poll("mirror")
    assert image_data(polled.events) == {"v1": dict.fromkeys(IMAGE_KEYS, "") | {"platforms": []}}
    assert stored_digests(watcher) == set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "registry 'mirror'" in warnings[0] and image.digest in warnings[0]


def late(watcher: Watcher, seconds: float | None) -> None:
    """Every registry's poll due `seconds` ago and not started yet (None: none is due)."""
    since = None if seconds is None else schema.utcnow() - timedelta(seconds=seconds)
    with watcher.engine.begin() as conn:
        conn.execute(update(schema.registries).values(due_since=since))


def test_the_fill_yields_to_a_poll_a_few_seconds_late(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """A due poll that has waited 3 s (short of the schedule's 5 s target, but a pool with room starts it
    within a tick or two) holds the fill back; one due only now does not."""
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add(watcher, "r1", registry.url, unique_repo)
    polling.poll("r1")
    late(watcher, seconds=3)
    held_back = imagefill.fill(watcher.engine, watcher.redis)
    assert held_back.skipped and held_back.requests == 0 and stored_digests(watcher) == set()
    late(watcher, seconds=0.2)
    assert imagefill.fill(watcher.engine, watcher.redis).stored == 1


def test_the_baseline_is_filled_in_the_background(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    """A baseline of five digests (one tagged twice) is filled two digests a run, and not while a due poll
    waits; once filled, and after a steady poll, a run reads no registry and sends nothing; a poll that
    commits walks the registry once more."""
    digests = {registry.client.push_image(f"{unique_repo}/r{i % 2}", f"t{i}") for i in range(5)}
    registry.client.retag(f"{unique_repo}/r0", "t0", "again")
    add(watcher, "r1", registry.url, unique_repo)
    polling.poll("r1")
    late(watcher, seconds=60)  # a due poll waits: the fill leaves the pool to it
    held_back = imagefill.fill(watcher.engine, watcher.redis, per_registry=2)
    assert held_back.skipped and (held_back.stored, held_back.requests) == (0, 0) and stored_digests(watcher) == set()
    late(watcher, seconds=None)
    runs: list[imagefill.Filled] = []
    while not runs or runs[-1].stored:
        runs.append(imagefill.fill(watcher.engine, watcher.redis, per_registry=2))
        assert len(runs) <= 5
    assert sum(run.stored for run in runs) == 5 and stored_digests(watcher) == digests
    assert max(run.requests for run in runs) <= 2 * 2  # two images a run: manifest and config each
    polling.poll("r1")
    idle = imagefill.fill(watcher.engine, watcher.redis, per_registry=2)
    assert (idle.registries, idle.stored, idle.requests) == (0, 0, 0)

    registry.client.push_image(f"{unique_repo}/r1", "t9", seed="known")  # its poll reads it itself
    polling.poll("r1")
    walked = imagefill.fill(watcher.engine, watcher.redis, per_registry=2)
    assert (walked.registries, walked.stored, walked.requests) == (1, 0, 0)
    assert imagefill.fill(watcher.engine, watcher.redis).registries == 0
    with watcher.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.images)).scalar() == 6
