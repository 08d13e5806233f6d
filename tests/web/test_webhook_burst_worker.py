"""A burst of notifications for one repository, sent through the real receiver to a real Celery worker,
costs at most two listings of it a second: the first at once, the rest coalesced (watcher.polling.queue)."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import Hook, hook_server  # noqa: F401 - fixture
from tests.support.polls import runs_of, wait_for
from tests.support.workers import ready
from tests.web.test_webhooks import MANIFEST, V1, envelope, event
from watcher.polling import poll as polling

NOTIFICATIONS = 100


def repository_runs(watcher: Watcher) -> list[tuple[str, list[str] | None]]:
    return [(r.outcome, r.listed_repositories) for r in runs_of(watcher, "r1") if r.listed_repositories is not None]


def test_a_burst_of_100_notifications_for_one_repository_costs_at_most_two_listings_a_second(
    watcher: Watcher,
    hook_server: ApiServer,  # noqa: F811 - the fixture imported above
    worker_queue: str,
    registry: RegistryEnv,
    unique_repo: str,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    app = f"{unique_repo}/app"
    registry.client.push_image(app, "v1")
    added = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--interval", "1h")
    assert added.exit_code == 0, added.output
    polling.poll("r1")  # the baseline; the next scheduled poll is an hour away
    start_worker("w1", concurrency=2)
    assert wait_for(partial(ready, tmp_path / "w1.log"), 60), "the worker did not start"
    registry.client.push_image(app, "v2")
    body = envelope(event("push", app, mediaType=MANIFEST, tag="v2", digest="sha256:" + "a" * 64))

    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(4) as pool:
        hook = Hook.enable(watcher, worker_queue, client, "distribution")
        began = time.monotonic()
        answers = list(pool.map(lambda _: hook.post(body, content_type=V1).status_code, range(NOTIFICATIONS)))
        took = time.monotonic() - began
    assert answers == [202] * NOTIFICATIONS
    assert wait_for(lambda: len(repository_runs(watcher)) >= 1, 30), "no repository was listed"
    time.sleep(3)  # long enough for any further listing to be queued, started and recorded
    runs = repository_runs(watcher)
    allowed = 1 + math.ceil(took)  # two for a burst within a second; on a slow machine, two a second
    assert 1 <= len(runs) <= allowed, f"{len(runs)} listings for a burst of {took:.2f}s: {runs}"
    assert all(run == ("ok", [app]) for run in runs), runs
    assert [(e["repository"], e["tag"], e["change"]) for e in watcher.stream_entries()] == [(app, "v2", "added")]
