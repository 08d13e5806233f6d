"""What the tests of the signed webhook formats share: the sample payloads, signing, enabling a receiver
and running the poll a notification queued."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Watcher
from tests.support.registry import RegistryClient
from tests.web.test_webhooks import queued

SAMPLES = Path(__file__).parent.parent / "data" / "webhooks"


def sample(name: str) -> Any:
    """A payload of `tests/data/webhooks/` (see SOURCES-signed.md), parsed."""
    return json.loads((SAMPLES / name).read_text())


def signature(body: bytes, secret: str) -> str:
    """`X-Hub-Signature-256`, as GitHub computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def enable(watcher: Watcher, hook_format: str, name: str = "r1") -> dict[str, Any]:
    result = watcher.cli("registry", "webhook", name, "--format", hook_format, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def relist(watcher: Watcher, broker: str, repository: str, name: str = "r1") -> int:
    """Run the one poll the notification queued (it must be of `repository`); how many events it emitted."""
    from watcher.tasks.jobs import poll_repository_task

    assert queued(watcher, broker) == [("watcher.poll_repository", [name, repository])]
    watcher.redis.delete(broker)
    events: int = poll_repository_task.run(name, repository)
    return events


def changes(watcher: Watcher) -> list[tuple[str, str, str, str]]:
    """(repository, tag, change, digest) of every entry on the stream, oldest first."""
    return [(e["repository"], e["tag"], e["change"], e["digest"]) for e in watcher.stream_entries()]


#: a step of `prove` → (body, content type) of the notification the registry (or a forger) sends for it
Notice = Callable[[str, str], tuple[bytes, str]]


def prove(
    watcher: Watcher,
    broker: str,
    client: RegistryClient,
    repository: str,
    deliver: Callable[[bytes, str], httpx.Response],
    notice: Notice,
) -> None:
    """Against a registry that really changes, each notification re-lists `repository` and only the listing
    decides: `push` (v2 pushed) emits `added`; `replay` and `forged` (a tag that does not exist) emit
    nothing; `delete` (v2 deleted) emits `removed`. `notice(step, digest of v2)` makes each body."""
    digest = client.push_image(repository, "v2")
    for step, events in (("push", 1), ("replay", 0), ("forged", 0), ("delete", 1)):
        if step == "delete":
            client.delete(repository, "v2")
        answer = deliver(*notice(step, digest))
        assert answer.status_code == 202, (step, answer.text)
        assert (answer.json()["outcome"], answer.json()["repositories"]) == ("accepted", [repository]), step
        assert relist(watcher, broker, repository) == events, step
    assert changes(watcher) == [(repository, "v2", "added", digest), (repository, "v2", "removed", digest)]
