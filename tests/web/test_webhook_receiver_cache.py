# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""The receiver reads a registry's webhook settings from the database at most once per RECEIVER_SECONDS
while notifications keep coming, and what changed them still applies within that bound: at once when the
change is made in the server's own process (the API, or this test's in-process CLI), within
RECEIVER_SECONDS of its commit when another process made it (the CLI beside a running server)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import Watcher
from tests.support.hooks import broker, hook_server  # noqa: F401 - fixtures
from tests.web.conftest import Api
from watcher.web.routes import hooks as receiver

V1 = "application/vnd.docker.distribution.events.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TARGET = {"repository": "team/app", "tag": "v1", "mediaType": MANIFEST}
BODY = json.dumps({"events": [{"id": "e1", "action": "push", "target": TARGET}]})


def enable(watcher: Watcher, *extra: str) -> str:
    result = watcher.cli("registry", "webhook", "r1", "--json", *extra)
    assert result.exit_code == 0, result.output
    secret: str = json.loads(result.output)["secret"]
    return secret


@pytest.fixture
def hook(watcher: Watcher, hook_server: Any, broker: str) -> Iterator[tuple[httpx.Client, str]]:
    """A registry `r1` with its receiver on (nothing is listed: the queued polls are never run)."""
    assert watcher.add_registry("r1", "http://127.0.0.1:9", "--no-verify").exit_code == 0
    secret = enable(watcher)
    with httpx.Client(base_url=hook_server.url, timeout=30) as client:
        yield client, secret


def post(client: httpx.Client, secret: str) -> int:
    headers = {"Content-Type": V1, "Authorization": f"Bearer {secret}"}
    return client.post("/hooks/v1/r1", content=BODY, headers=headers).status_code


def test_a_burst_reads_the_receiver_from_the_database_about_once_a_second(
    watcher: Watcher, hook: tuple[httpx.Client, str]
) -> None:
    client, secret = hook
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "webhook_enabled" in statement:
            reads.append(statement)

    event.listen(watcher.engine, "before_cursor_execute", count)
    try:
        started = time.monotonic()
        assert [post(client, secret) for _ in range(40)] == [202] * 40
        elapsed = time.monotonic() - started
    finally:
        event.remove(watcher.engine, "before_cursor_execute", count)
    assert 1 <= len(reads) <= 1 + int(elapsed / receiver.RECEIVER_SECONDS) + 1 < 40, (len(reads), elapsed)


def test_a_change_made_in_the_servers_process_applies_to_the_next_notification(
    watcher: Watcher, hook: tuple[httpx.Client, str], api: Api
) -> None:
    client, secret = hook
    assert post(client, secret) == 202  # the receiver is read, and kept
    rotated = enable(watcher, "--rotate")  # this process's CLI, as the console or the API would
    assert post(client, secret) == 401
    assert post(client, rotated) == 202
    assert watcher.cli("registry", "webhook", "r1", "--disable").exit_code == 0
    assert post(client, rotated) == 401  # a receiver turned off answers as a wrong secret
    enable(watcher)
    assert post(client, rotated) == 202
    assert api.admin.delete("/api/v1/registries/r1").status_code == 204
    assert post(client, rotated) == 401


@pytest.mark.parametrize(
    ("change", "refused"),
    [(["webhook", "r1", "--rotate"], 401), (["webhook", "r1", "--disable"], 401), (["remove", "r1"], 401)],
    ids=["rotate", "disable", "remove"],
)
def test_a_change_made_by_another_process_applies_within_receiver_seconds(
    watcher: Watcher, hook: tuple[httpx.Client, str], change: list[str], refused: int
) -> None:
    """The old secret is posted without pause while `watcher registry ...` runs in a process of its own, so
    the server holds a freshly read receiver when the change commits: no notification sent more than
    RECEIVER_SECONDS after that process ended (so after its commit) is accepted."""
    client, secret = hook
    assert post(client, secret) == 202
    argv = [sys.executable, "-m", "watcher", "registry", *change]
    proc = subprocess.Popen(argv, env=watcher.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ended: list[float] = []
    waiter = threading.Thread(target=lambda: ended.append((proc.wait(), time.monotonic())[1]))
    waiter.start()
    answers: list[tuple[float, int]] = []
    deadline = time.monotonic() + 60
    try:
        while not (ended and answers[-1][1] == refused) and time.monotonic() < deadline:
            sent = time.monotonic()
            answers.append((sent, post(client, secret)))
    finally:
        waiter.join(timeout=60)
    assert ended and answers[-1][1] == refused, answers[-3:]
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    accepted = [sent for sent, status in answers if status == 202]
    assert {status for _, status in answers} <= {202, refused}
    assert all(sent < ended[0] + receiver.RECEIVER_SECONDS for sent in accepted), (ended[0], accepted[-3:])
    assert all(status == refused for sent, status in answers if sent >= ended[0] + receiver.RECEIVER_SECONDS)


def test_a_notification_while_redis_is_away_is_one_503_line(
    watcher: Watcher, hook: tuple[httpx.Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hint now runs on the event loop's asyncio Redis client: a Redis that refuses is still the error
    shape, in one line, and nothing is counted as accepted."""
    from tests.support.registry import free_port
    from watcher.settings import get_settings

    client, secret = hook
    monkeypatch.setenv("WATCHER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    get_settings.cache_clear()
    answer = client.post(
        "/hooks/v1/r1", content=BODY, headers={"Content-Type": V1, "Authorization": f"Bearer {secret}"}
    )
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unavailable" and "\n" not in error["message"] and secret not in answer.text
