# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""`POST /hooks/v1/{registry}`: the real Distribution registry's notifications, sent where
`watcher registry webhook` says, queue a poll of the pushed repository, whose `added` event reaches the
stream without any scheduled poll; a wrong secret, a malformed body, an unknown registry are refused and
poll nothing (an unknown or disabled receiver exactly as a wrong secret); every outcome is counted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import broker, hook_server, settle  # noqa: F401 - fixtures
from tests.support.polls import runs_of, wait_for
from tests.support.registry import RegistryClient, RegistryServer
from watcher.db import session_scope
from watcher.hooks import stats as hookstats
from watcher.models import Registry
from watcher.polling import poll as polling
from watcher.read import counters

V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def queued_kwargs(watcher: Watcher, key: str) -> list[dict[str, Any]]:
    """The keyword arguments of every message waiting on the queue, oldest first."""
    messages = [json.loads(m) for m in reversed(watcher.redis.lrange(key, 0, -1))]
    return [json.loads(base64.b64decode(m["body"]))[1] for m in messages]


def queued_eta(watcher: Watcher, key: str) -> list[str | None]:
    """When each message waiting on the queue may start (None: at once), oldest first."""
    return [json.loads(m)["headers"].get("eta") for m in reversed(watcher.redis.lrange(key, 0, -1))]


def queued(watcher: Watcher, key: str) -> list[tuple[str, list[Any]]]:
    """(task, args) of every message waiting on the queue, oldest first."""
    messages = [json.loads(m) for m in reversed(watcher.redis.lrange(key, 0, -1))]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def enable(watcher: Watcher, *extra: str) -> dict[str, Any]:
    result = watcher.cli("registry", "webhook", "r1", "--json", *extra)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def webhook_counts(watcher: Watcher) -> dict[str, float]:
    """The receiver's counts, as written (those still in this process's memory are written first)."""
    hookstats.flush()
    with session_scope(watcher.engine) as session:
        rows = counters.read_all(session)
    return {labels["outcome"]: value for metric, labels, value in rows if metric == "watcher_webhooks_total"}


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def event(action: str, repository: str, **target: Any) -> dict[str, Any]:
    return {"id": "e1", "action": action, "target": {"repository": repository, **target}}


# ---- the real registry ------------------------------------------------------------------------------
def real_registry(tmp_path: Path, watcher: Watcher, prefix: str) -> RegistryServer:
    registry = RegistryServer(root=tmp_path / "notifying")
    result = watcher.add_registry("r1", registry.url, "--repository", f"{prefix}/*")
    assert result.exit_code == 0, result.output
    return registry


def notify_with(registry: RegistryServer, watcher: Watcher, secret: str | None = None) -> None:
    """Restart the registry with the `notifications` section `watcher registry webhook` printed (with
    another secret in its Authorization header, when given)."""
    printed = watcher.cli("registry", "webhook", "r1").output.split("On the registry's side (distribution):\n")[1]
    config = yaml.safe_load(printed)["notifications"]
    for endpoint in config["endpoints"]:
        endpoint["backoff"] = "1s"
        if secret is not None:
            endpoint["headers"]["Authorization"] = [f"Bearer {secret}"]
    registry.notifications = config
    registry.stop()
    registry.start()


def baselined_and_notifying(registry: RegistryServer, client: RegistryClient, watcher: Watcher, app: str) -> None:
    """`app:v1` pushed and baselined, then the registry notifying the receiver as `registry webhook` says."""
    client.push_image(app, "v1")
    polling.poll("r1")
    enable(watcher)
    notify_with(registry, watcher)


def test_a_push_to_the_real_registry_reaches_the_stream_without_a_scheduled_poll(
    watcher: Watcher, hook_server: ApiServer, broker: str, tmp_path: Path, unique_repo: str
) -> None:
    from watcher.tasks.jobs import poll_repository_task

    app = f"{unique_repo}/app"
    with real_registry(tmp_path, watcher, unique_repo) as registry, RegistryClient(registry.url) as client:
        baselined_and_notifying(registry, client, watcher, app)
        digest = client.push_image(app, "v2")
        assert wait_for(lambda: queued(watcher, broker) != [], 15), registry.log_tail()
        assert queued(watcher, broker) == [("watcher.poll_repository", ["r1", app])]
        assert poll_repository_task.run("r1", app) == 1
        entries = watcher.stream_entries()
        assert [(e["repository"], e["tag"], e["change"], e["digest"]) for e in entries] == [
            (app, "v2", "added", digest)
        ]
        watcher.redis.delete(broker)
        client.delete(app, "v2")  # Distribution announces a delete by digest only
        assert wait_for(lambda: queued(watcher, broker) != [], 15), registry.log_tail()
        assert queued(watcher, broker) == [("watcher.poll_repository", ["r1", app])]

        # notified within QUIET_SECONDS of the push: a follow-up, run once due (settled again if the receiver
        # recorded the hint only after the test settled it: a loaded machine)
        def settled_and_polled() -> bool:
            settle(watcher, "r1", app)
            return bool(poll_repository_task.run("r1", app) == 1)

        assert wait_for(settled_and_polled, 15)
        assert [(e["tag"], e["change"]) for e in watcher.stream_entries()] == [("v2", "added"), ("v2", "removed")]
        assert webhook_counts(watcher).get("accepted", 0) >= 2
        assert "unauthorized" not in webhook_counts(watcher)


def test_the_printed_set_up_keeps_pulls_and_blob_events_from_the_receiver(
    watcher: Watcher, hook_server: ApiServer, tmp_path: Path, unique_repo: str
) -> None:
    """Every HEAD of a listing is a `pull` to Distribution, and its notification queue is one line: with only
    `ignore.actions` (which Distribution 2.8 applies only when `ignore.mediatypes` is set too) each poll's
    HEADs came back as notifications, queued ahead of any delete behind them. The printed set-up sends
    neither pulls nor blob events: a push, a poll's listing and a delete reach the receiver as manifest
    events only."""
    app = f"{unique_repo}/app"
    with real_registry(tmp_path, watcher, unique_repo) as registry, RegistryClient(registry.url) as client:
        baselined_and_notifying(registry, client, watcher, app)
        client.push_image(app, "v2")  # two blobs and a manifest
        polling.poll("r1")  # a HEAD of v1 and of v2
        client.delete(app, "v2")  # the digest, then the tag: the last notifications, sent in order
        assert wait_for(lambda: webhook_counts(watcher).get("accepted", 0) >= 3, 15), registry.log_tail()
        assert webhook_counts(watcher) == {"accepted": 3}


def test_a_pushed_tag_the_listing_does_not_show_yet_is_looked_for_once_more(
    watcher: Watcher, broker: str, tmp_path: Path, unique_repo: str
) -> None:
    """Distribution notifies before it links the tag: a listing made at once may miss it. The poll then
    queues one more listing a moment later (without the hint, so never a third), which reports it."""
    from watcher.tasks.jobs import poll_repository_task

    app = f"{unique_repo}/app"
    with real_registry(tmp_path, watcher, unique_repo) as registry, RegistryClient(registry.url) as client:
        client.push_image(app, "v1")
        polling.poll("r1")  # the baseline
        assert poll_repository_task.run("r1", app, expect=["v1"]) == 0  # shown: nothing more to do
        assert queued(watcher, broker) == []
        assert poll_repository_task.run("r1", app, expect=["v2"]) == 0  # notified, not linked yet
        assert queued(watcher, broker) == [("watcher.poll_repository", ["r1", app])]
        assert queued_kwargs(watcher, broker) == [{}] and queued_eta(watcher, broker) != [None]
        digest = client.push_image(app, "v2")
        watcher.redis.delete(broker)
        assert poll_repository_task.run("r1", app) == 1  # the follow-up
        assert [(e["tag"], e["change"], e["digest"]) for e in watcher.stream_entries()] == [("v2", "added", digest)]
        assert queued(watcher, broker) == []


def test_the_real_registry_with_a_wrong_secret_is_refused_and_polls_nothing(
    watcher: Watcher, hook_server: ApiServer, broker: str, tmp_path: Path, unique_repo: str
) -> None:
    with real_registry(tmp_path, watcher, unique_repo) as registry, RegistryClient(registry.url) as client:
        client.push_image(f"{unique_repo}/app", "v1")
        polling.poll("r1")
        enable(watcher)
        notify_with(registry, watcher, secret="not-the-secret-" + "x" * 30)
        client.push_image(f"{unique_repo}/app", "v2")
        assert wait_for(lambda: webhook_counts(watcher).get("unauthorized", 0) >= 1, 15), registry.log_tail()
        assert queued(watcher, broker) == []
        assert watcher.stream_entries() == []
        assert set(webhook_counts(watcher)) == {"unauthorized"}
        with session_scope(watcher.engine) as session:
            assert session.scalar(select(Registry.last_webhook_at)) is None


# ---- each answer ------------------------------------------------------------------------------------
@pytest.fixture
def hook(watcher: Watcher, hook_server: ApiServer, registry: RegistryEnv) -> Iterator[tuple[httpx.Client, str]]:
    assert watcher.add_registry("r1", registry.url, "--repository", "team/*", "--no-verify").exit_code == 0
    secret = enable(watcher)["secret"]
    with httpx.Client(base_url=hook_server.url, timeout=10) as client:
        yield client, secret


def post(
    client: httpx.Client, body: bytes, auth: str | None, content_type: str = V1, name: str = "r1"
) -> httpx.Response:
    headers = {"Content-Type": content_type} | ({"Authorization": auth} if auth is not None else {})
    return client.post(f"/hooks/v1/{name}", content=body, headers=headers)


def test_a_manifest_push_or_delete_queues_its_repository_once(
    watcher: Watcher, hook: tuple[httpx.Client, str], broker: str
) -> None:
    client, secret = hook
    body = envelope(
        event("push", "team/app", mediaType=MANIFEST, tag="v1", digest="sha256:" + "a" * 64),
        event("push", "team/app", mediaType="application/octet-stream", digest="sha256:" + "b" * 64),
        event("delete", "team/web", digest="sha256:" + "c" * 64),
    )
    answer = post(client, body, f"Bearer {secret}")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"outcome": "accepted", "repositories": ["team/app", "team/web"], "queued": 2}
    again = post(client, body, secret, content_type=V2)  # the bare secret; still queued: not queued again
    assert again.status_code == 202 and again.json()["queued"] == 0
    assert queued(watcher, broker) == [
        ("watcher.poll_repository", ["r1", "team/app"]),
        ("watcher.poll_repository", ["r1", "team/web"]),
    ]
    assert queued_kwargs(watcher, broker) == [{"expect": ["v1"]}, {}]  # the pushed tag goes with its poll
    assert webhook_counts(watcher) == {"accepted": 2}
    (status,) = json.loads(watcher.cli("status", "--json").stdout)
    assert status["last_webhook_at"] is not None and status["last_webhook_at"].endswith("Z")


def test_pulls_blobs_and_repositories_out_of_scope_are_ignored(
    watcher: Watcher, hook: tuple[httpx.Client, str], broker: str
) -> None:
    client, secret = hook
    for body in (
        envelope(event("pull", "team/app", mediaType=MANIFEST, tag="v1", digest="sha256:" + "a" * 64)),
        envelope(event("push", "team/app", mediaType="application/octet-stream", digest="sha256:" + "a" * 64)),
        envelope(event("push", "elsewhere/app", mediaType=MANIFEST, tag="v1", digest="sha256:" + "a" * 64)),
        envelope(),
    ):
        answer = post(client, body, f"Bearer {secret}")
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"ignored": 4}


def test_a_wrong_or_missing_secret_is_401_before_the_body_is_looked_at(
    watcher: Watcher, hook: tuple[httpx.Client, str], broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, secret = hook
    good = envelope(event("push", "team/app", mediaType=MANIFEST, tag="v1"))
    for auth in (None, "", "Bearer", f"Bearer {secret[:-1]}", f"Basic {secret}", f"Bearer {secret}x"):
        answer = post(client, b"not json", auth)
        assert answer.status_code == 401, (auth, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
    assert post(client, good, "Bearer not-it").status_code == 401
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"unauthorized": 7}
    assert secret not in caplog.text


def test_a_malformed_body_is_400_and_an_unknown_or_disabled_registry_the_one_401(
    watcher: Watcher, hook: tuple[httpx.Client, str], broker: str
) -> None:
    client, secret = hook
    auth = f"Bearer {secret}"
    for body, content_type in (
        (b"not json", V1),
        (b"[]", V1),
        (b'{"events": {}}', V1),
        (b'{"events": [{"action": "push"}]}', V1),
        (envelope(event("push", "Team/../x", mediaType=MANIFEST, tag="v1")), V1),
        (envelope(), "text/plain"),
    ):
        answer = post(client, body, auth, content_type=content_type)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "malformed"
    assert webhook_counts(watcher) == {"malformed": 6}
    wrong = post(client, envelope(), "Bearer not-it")
    assert wrong.status_code == 401
    unknown = post(client, envelope(), auth, name="nope")
    assert (unknown.status_code, unknown.content) == (401, wrong.content)
    assert post(client, b"x" * (1024 * 1024 + 1), auth).status_code == 413
    enable(watcher, "--disable")
    disabled = post(client, envelope(), auth)
    assert (disabled.status_code, disabled.content) == (401, wrong.content)
    assert queued(watcher, broker) == []


def test_a_notification_naming_thousands_of_repositories_queues_one_registry_wide_poll(
    watcher: Watcher, hook: tuple[httpx.Client, str], broker: str
) -> None:
    """Amplification: one authenticated 660 KB notification named 9,999 repositories, and queued a listing of
    each. Past 100, one registry-wide poll is queued instead, recorded as a `webhook` poll of the registry."""
    from watcher.tasks.jobs import poll_registry

    client, secret = hook
    deletes = [{"action": "delete", "target": {"repository": f"team/a{i}", "tag": "v1"}} for i in range(9_999)]
    body = json.dumps({"events": deletes}, separators=(",", ":")).encode()
    assert len(body) > 600_000
    answer = post(client, body, f"Bearer {secret}")
    assert answer.status_code == 202, answer.text
    assert answer.json()["queued"] == 1 and answer.json()["outcome"] == "accepted"
    assert post(client, body, f"Bearer {secret}").json()["queued"] == 0  # queued already: not again
    assert queued(watcher, broker) == [("watcher.poll", ["r1"])]
    assert queued_kwargs(watcher, broker) == [{"trigger": "webhook"}]
    watcher.redis.delete(broker)
    poll_registry.run("r1", trigger="webhook")
    (run,) = runs_of(watcher, "r1")
    assert (run.trigger, run.listed_repositories, run.outcome) == ("webhook", None, "ok")
    assert webhook_counts(watcher) == {"accepted": 2}
