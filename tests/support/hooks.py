"""Posting providers' notifications to the real receiver and watching what they cause.

`Hook` is one registry's receiver as `watcher registry webhook NAME --json` gave it: it posts a body the
way its format authenticates (the `Authorization` header, or the secret as the URL's last segment), reads
the Celery queue the receiver feeds (Redis, the real broker) and runs the queued repository poll in this
process, as a worker would. `story` is what every format must do against a registry that really changed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from watcher.db import session_scope
from watcher.hooks import stats as hookstats
from watcher.polling import queue
from watcher.read import counters
from watcher.settings import get_settings

DATA = Path(__file__).resolve().parent.parent / "data" / "webhooks"
REPOSITORY_POLL = "watcher.poll_repository"
#: a notification's body: (action, repository, tag) -> the provider's JSON object
Notice = Callable[[str, str, str], dict[str, Any]]


def payload(name: str) -> dict[str, Any]:
    """A documented payload from tests/data/webhooks (see its README for the sources)."""
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


@pytest.fixture
def hook_server(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The HTTP app; the webhook URL `watcher registry webhook` prints is its address."""
    with ApiServer() as api:
        monkeypatch.setenv("WATCHER_PUBLIC_URL", api.url)
        get_settings.cache_clear()
        yield api


@pytest.fixture
def broker(watcher: Watcher) -> Iterator[str]:
    """The Celery queue's key, emptied before and after the test."""
    from watcher.tasks import app  # imported once the installation's settings are set

    key = f"{app.conf.broker_transport_options['global_keyprefix']}celery"
    watcher.redis.delete(key)
    yield key
    watcher.redis.delete(key)


def settle(watcher: Watcher, registry: str, repository: str) -> None:
    """The repository's last hint is QUIET_SECONDS old, as when the worker runs a follow-up that is due
    (a test then runs it at once instead of waiting for the quiet spell)."""
    settled = int(watcher.redis.time()[0] * 1000) - int(queue.QUIET_SECONDS * 1000) - 1
    watcher.redis.set(queue.hinted_key(registry, repository), settled)


@dataclass
class Hook:
    watcher: Watcher
    broker: str
    client: httpx.Client
    url: str
    secret: str
    format: str
    path_secret: bool
    registry: str = "r1"

    @classmethod
    def enable(cls, watcher: Watcher, broker: str, client: httpx.Client, format: str, name: str = "r1") -> Hook:
        result = watcher.cli("registry", "webhook", name, "--format", format, "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)
        secret = shown["secret"]
        path_secret = shown["url"].endswith(f"/{secret}")
        return cls(watcher, broker, client, shown["url"], secret, format, path_secret, name)

    def post(
        self, body: dict[str, Any] | bytes, secret: str | None = "", content_type: str = "application/json"
    ) -> httpx.Response:
        """Post as the provider does: with the hook's secret (`""`), another one, or none (None)."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        secret = self.secret if secret == "" else secret
        headers = {"Content-Type": content_type}
        url = self.url
        if self.path_secret:
            url = url.rsplit("/", 1)[0] + (f"/{secret}" if secret is not None else "")
        elif secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return self.client.post(url, content=content, headers=headers)

    def queued(self) -> list[tuple[str, list[Any]]]:
        """(task, args) of every message waiting on the queue, oldest first."""
        messages = [json.loads(m) for m in reversed(self.watcher.redis.lrange(self.broker, 0, -1))]
        return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]

    def run(self, repository: str) -> int:
        """Run the one queued poll, of `repository`, as a worker would once it is due: a story's notifications
        are steps apart, so its hints have settled (a follow-up would otherwise wait for QUIET_SECONDS);
        the events it emitted."""
        from watcher.tasks.jobs import poll_repository_task

        assert self.queued() == [(REPOSITORY_POLL, [self.registry, repository])]
        self.watcher.redis.delete(self.broker)
        settle(self.watcher, self.registry, repository)
        emitted: int = poll_repository_task.run(self.registry, repository)
        return emitted

    def counts(self) -> dict[str, float]:
        """The receiver's counts, as written (those still in this process's memory are written first)."""
        hookstats.flush()
        with session_scope(self.watcher.engine) as session:
            rows = counters.read_all(session)
        return {labels["outcome"]: value for metric, labels, value in rows if metric == "watcher_webhooks_total"}

    def changes(self) -> list[tuple[str, str, str, str]]:
        return [(e["repository"], e["tag"], e["change"], e["digest"]) for e in self.watcher.stream_entries()]


def story(
    hook: Hook, repository: str, push: Callable[[str], str], notice: Notice, delete: Callable[[str], object] | None
) -> None:
    """What each format must do, the registry really changing in between: a push is listed and its event
    emitted; a replay and a forged tag emit nothing; a delete (where the provider announces them) is
    listed; a wrong or missing secret is 401 and a malformed body 400, both queueing nothing."""
    digest = push("v2")
    answer = hook.post(notice("push", repository, "v2"))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"outcome": "accepted", "repositories": [repository], "queued": 1}
    assert hook.run(repository) == 1
    assert hook.changes() == [(repository, "v2", "added", digest)]

    assert hook.post(notice("push", repository, "v2")).status_code == 202  # a replay
    assert hook.run(repository) == 0
    assert hook.post(notice("push", repository, "forged")).status_code == 202  # no such tag
    assert hook.run(repository) == 0
    assert hook.changes() == [(repository, "v2", "added", digest)]
    expected = [(repository, "v2", "added", digest)]
    if delete is not None:
        delete("v2")
        assert hook.post(notice("delete", repository, "v2")).status_code == 202
        assert hook.run(repository) == 1
        expected.append((repository, "v2", "removed", digest))
    accepted = hook.counts()["accepted"]

    for secret in (None, "not-the-secret-" + "x" * 30, hook.secret[:-1]):
        refused = hook.post(notice("push", repository, "v2"), secret=secret)
        assert refused.status_code == 401, (secret, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
    for body in (b"not json", b"[]", json.dumps(notice("push", "Not/../Valid", "v2")).encode()):
        malformed = hook.post(body)
        assert malformed.status_code == 400, (body, malformed.text)
        assert malformed.json()["error"]["code"] == "malformed" and "\n" not in malformed.json()["error"]["message"]
    assert hook.queued() == []
    assert hook.changes() == expected
    assert hook.counts() == {"accepted": accepted, "unauthorized": 3, "malformed": 3}
