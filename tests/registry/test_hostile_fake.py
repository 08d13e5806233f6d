"""The hostile registry fake, in its normal mode, is a registry the watcher polls like any other: the attack
tests built on it then differ from a good poll by their mode alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder, digest_of


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with Recorder() as recorder, HostileRegistry(recorder, username="alice", password="s3cret-pass") as server:
        yield server


def test_normal_mode_polls_like_a_registry(watcher: Watcher, hostile: HostileRegistry) -> None:
    added = watcher.add_registry("h", hostile.url, "--username", "alice", "--password", "s3cret-pass")
    assert added.exit_code == 0, added.output
    assert watcher.cli("poll", "h").exit_code == 0
    hostile.repositories["team/app"]["v3"] = digest_of("team/app:v3")
    hostile.repositories["team/app"]["v1"] = digest_of("team/app:v1-moved")
    result = watcher.cli("poll", "h")
    assert result.exit_code == 0, result.output
    changes = sorted((e["change"], e["repository"], e["tag"], e["digest"]) for e in watcher.stream_entries())
    assert changes == [
        ("added", "team/app", "v3", digest_of("team/app:v3")),
        ("updated", "team/app", "v1", digest_of("team/app:v1-moved")),
    ]
    assert hostile.recorder.requests == []
