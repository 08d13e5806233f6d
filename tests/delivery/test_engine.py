"""The delivery engine: each subscription's events arrive in order, at least once; failures are retried as
promised and dead-lettered; a hanging or refused endpoint holds up nobody else; a killed worker loses
nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.polls import wait_for
from watcher import schema
from watcher.db import session_scope
from watcher.delivery import worker
from watcher.delivery.subscriptions import SubscriptionSpec, save
from watcher.read import counters
from watcher.read.deliveries import delivery_lags
from watcher.registrations import workspaces
from watcher.settings import get_settings
from watcher.web.metrics import scrape

#: how an endpoint answers its n-th request (from 0): a status, (status, headers), or "hang"
Script = Callable[[int], Any]


@dataclass
class Hit:
    path: str
    event: str
    at: float
    status: int


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # many lanes connect at once: socketserver's 5 would drop SYNs (1 s retransmits)
    daemon_threads = True


@dataclass
class Receiver:
    """A real HTTP server; each path answers as its script says and every request is recorded."""

    scripts: dict[str, Script] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    delay: float = 0.0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    n = sum(1 for hit in receiver.hits if hit.path == self.path)
                    answer = receiver.scripts.get(self.path, lambda n: 200)(n)
                    status, headers = answer if isinstance(answer, tuple) else (answer, {})
                    receiver.hits.append(Hit(self.path, self.headers["webhook-id"], time.monotonic(), status))
                if status == "hang":
                    receiver.release.wait(30)
                    status = 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", "5")
                self.end_headers()
                self.wfile.write(b"nope\n")

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def of(self, path: str) -> list[Hit]:
        return [hit for hit in list(self.hits) if hit.path == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_DELIVERY_BACKOFF_MS", "100")  # 1 s in production
    monkeypatch.setenv("WATCHER_DELIVERY_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()


def subscribe(watcher: Watcher, receiver: Receiver, *paths: str, workspace_id: int = 1) -> None:
    with session_scope(watcher.engine) as session:
        for path in paths:
            save(session, SubscriptionSpec.build(path.strip("/"), receiver.url(path)), workspace_id=workspace_id)


def events_pushed(watcher: Watcher, registry: RegistryEnv, repo: str, tags: list[str]) -> list[str]:
    """Push `tags` and poll: the ids of their events, in order (the deliveries are written as they publish)."""
    for tag in tags:
        registry.client.push_image(repo, tag, seed="same")
    assert watcher.cli("poll", "r1").exit_code == 0
    with watcher.engine.connect() as conn:
        return list(conn.scalars(select(schema.events.c.event_id).order_by(schema.events.c.id)))


def watched(watcher: Watcher, registry: RegistryEnv, repo: str) -> None:
    registry.client.push_image(repo, "v0", seed="same")
    assert watcher.add_registry("r1", registry.url, "--repository", repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0  # the baseline: no events


def states(watcher: Watcher) -> dict[str, list[tuple[str, int]]]:
    """Each subscription's deliveries (state, attempts), in id order."""
    d, s = schema.deliveries.c, schema.subscriptions.c
    found: dict[str, list[tuple[str, int]]] = {}
    with watcher.engine.connect() as conn:
        for name, state, attempts in conn.execute(
            select(s.name, d.state, d.attempts).select_from(schema.deliveries.join(schema.subscriptions)).order_by(d.id)
        ):
            found.setdefault(name, []).append((state, attempts))
    return found


def settled(watcher: Watcher) -> bool:
    """One run of the engine (what a sweep does), then: is nothing pending any more?"""
    worker.deliver(5)
    return all(state != "pending" for rows in states(watcher).values() for state, _ in rows)


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_each_subscription_gets_its_events_in_order_with_retries_and_dead_letters(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, receiver: Receiver
) -> None:
    receiver.scripts = {
        "/flaky": lambda n: 500 if n < 3 else 200,
        "/limited": lambda n: (429, {"retry-after": "2"}) if n == 0 else 200,
        "/hanging": lambda n: "hang" if n == 0 else 200,
        "/gone": lambda n: 410,
    }
    watched(watcher, registry, unique_repo)
    subscribe(watcher, receiver, "/flaky", "/limited", "/hanging", "/gone", "/healthy")
    with session_scope(watcher.engine) as session:  # another workspace's subscription gets none of these
        workspaces.create(session, "team-b")
        team_b = workspaces.find_id(session, "team-b")
    subscribe(watcher, receiver, "/team-b", workspace_id=team_b)
    events = events_pushed(watcher, registry, unique_repo, ["v1", "v2", "v3"])
    assert len(events) == 3
    with watcher.engine.connect() as conn:
        assert delivery_lags(conn)[("default", "flaky")] >= 0 and delivery_lags(conn)[("team-b", "team-b")] == 0

    started = time.monotonic()
    assert wait_for(lambda: settled(watcher), 30), states(watcher)

    def arrived(path: str) -> list[str]:
        return [hit.event for hit in receiver.of(path)]

    assert arrived("/flaky") == [events[0]] * 4 + events[1:]  # the next waited for the previous one
    assert arrived("/limited") == [events[0], *events]
    assert arrived("/hanging") == [events[0], *events]
    assert arrived("/healthy") == events
    assert arrived("/gone") == events  # each dead-lettered at once, and the next one tried
    assert arrived("/team-b") == []
    flaky = receiver.of("/flaky")
    assert all(later.at - earlier.at < 5 for earlier, later in pairwise(flaky[:4]))  # 0.1, 0.2, 0.4 s bounds
    limited = receiver.of("/limited")
    assert limited[1].at - limited[0].at >= 1.95  # never sooner than Retry-After
    assert receiver.of("/healthy")[-1].at - started < 5  # nobody else's failures held it up
    assert states(watcher) == {
        "flaky": [("delivered", 4), ("delivered", 1), ("delivered", 1)],
        "limited": [("delivered", 2), ("delivered", 1), ("delivered", 1)],
        "hanging": [("delivered", 2), ("delivered", 1), ("delivered", 1)],
        "gone": [("dead", 1)] * 3,
        "healthy": [("delivered", 1)] * 3,
    }
    with session_scope(watcher.engine) as session:
        totals = {
            (labels["subscription"], labels["outcome"]): value
            for metric, labels, value in counters.read_all(session)
            if metric == worker.TOTAL
        }
        gone = session.execute(select(schema.subscriptions).where(schema.subscriptions.c.name == "gone")).one()
        assert all(lag == 0 for lag in delivery_lags(session.connection()).values())
    assert totals == {
        ("flaky", "failed"): 3,
        ("flaky", "delivered"): 3,
        ("limited", "failed"): 1,
        ("limited", "delivered"): 3,
        ("hanging", "failed"): 1,
        ("hanging", "delivered"): 3,
        ("gone", "dead"): 3,
        ("healthy", "delivered"): 3,
    }
    scraped = scrape().splitlines()  # /metrics, named with the workspace as every per-workspace series
    assert 'watcher_deliveries_total{workspace="default",subscription="flaky",outcome="failed"} 3.0' in scraped
    assert 'watcher_delivery_lag_seconds{workspace="team-b",subscription="team-b"} 0.0' in scraped
    assert gone.last_error == "HTTP 410: nope\\n" and gone.last_failed_at is not None  # escaped excerpt
    assert gone.last_delivered_at is None and gone.lease_owner is None


@pytest.mark.usefixtures("fast_retries")
def test_hanging_endpoints_do_not_delay_a_healthy_one_and_a_refused_network_is_never_contacted(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_DELIVERY_TIMEOUT_SECONDS", "10")
    get_settings.cache_clear()
    hanging = [f"/hang-{n}" for n in range(10)]
    receiver.scripts = {path: (lambda n: "hang") for path in hanging}
    watched(watcher, registry, unique_repo)
    subscribe(watcher, receiver, *hanging, "/healthy")
    events = events_pushed(watcher, registry, unique_repo, ["v1", "v2", "v3"])

    run = threading.Thread(target=worker.deliver, args=(3,), daemon=True)
    run.start()
    assert wait_for(lambda: len(receiver.of("/healthy")) == 3, 5), receiver.hits
    assert [hit.event for hit in receiver.of("/healthy")] == events
    # ...while every hanging endpoint still holds its first attempt (10 s deadline)
    assert sorted(hit.path for hit in receiver.hits if hit.path != "/healthy") == sorted(hanging)
    receiver.release.set()
    run.join(15)
    assert not run.is_alive()

    # the endpoint's address is refused now (as if its name resolved elsewhere since `add`): never contacted
    with session_scope(watcher.engine) as session:
        save(session, SubscriptionSpec.build("moved", receiver.url("/moved")), workspace_id=1)
    registry.client.push_image(unique_repo, "v4", seed="same")
    assert watcher.cli("poll", "r1").exit_code == 0
    before = len(receiver.hits)
    monkeypatch.setenv("WATCHER_DENY_NETWORKS", "127.0.0.0/8")
    get_settings.cache_clear()
    worker.deliver(1)
    [(state, attempts)] = states(watcher)["moved"]
    assert state == "pending" and attempts >= 1  # retried, as a network error is
    assert len(receiver.hits) == before  # nobody was contacted
    with watcher.engine.connect() as conn:
        error = conn.scalar(select(schema.deliveries.c.last_error).order_by(schema.deliveries.c.id.desc()).limit(1))
    assert "refused by the network policy" in str(error)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_delivery_loses_nothing_and_keeps_the_order(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, receiver: Receiver, start_worker, worker_queue: str
) -> None:
    receiver.delay = 0.05  # deliveries are in flight when the worker dies
    watched(watcher, registry, unique_repo)
    subscribe(watcher, receiver, "/a", "/b")
    events = events_pushed(watcher, registry, unique_repo, [f"v{n}" for n in range(1, 21)])
    assert len(events) == 20
    first = start_worker("w1", concurrency=2)
    assert wait_for(lambda: len(receiver.of("/a")) >= 5, 60), receiver.hits
    os.killpg(first.pid, signal.SIGKILL)  # the worker, its pool and its beat: nothing is released
    first.wait(timeout=10)
    assert len(receiver.of("/a")) < 20
    start_worker("w2", concurrency=2)  # takes the dead holder's leases at once
    assert wait_for(lambda: all(len({h.event for h in receiver.of(p)}) == 20 for p in ("/a", "/b")), 60)
    for path in ("/a", "/b"):
        seen = [events.index(hit.event) for hit in receiver.of(path)]
        assert all(later >= earlier for earlier, later in pairwise(seen)), seen  # a replay, never a step back
        assert sorted(set(seen)) == list(range(20))
    delivered = [("delivered", 1)] * 20
    assert wait_for(
        lambda: (
            {name: [(s, 1) for s, _ in rows] for name, rows in states(watcher).items()}
            == {"a": delivered, "b": delivered}
        ),
        10,
    ), states(watcher)
