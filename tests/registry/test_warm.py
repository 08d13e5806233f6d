"""A worker keeps its clients' connections between polls (`watcher.registry.warm`); a `watcher poll` keeps nothing.

Measured where the registry sees it: the client ends of the connections its requests came on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Watcher
from tests.fakes.crowded_registry import CrowdedRegistry
from tests.support.fixtures import RegistryEnv
from watcher.pollers import harbor
from watcher.polling.poll import poll
from watcher.registry import deadline as bounded
from watcher.registry import warm


@pytest.fixture
def registry(watcher: Watcher) -> Iterator[CrowdedRegistry]:
    repositories = {f"team/r{r}": [f"t{t}" for t in range(3)] for r in range(4)}
    with CrowdedRegistry(repositories, delay=0.001) as server:
        added = watcher.add_registry("r", server.url, "--repository", "team/*", "--no-verify")
        assert added.exit_code == 0, added.output
        yield server


def connections_of_a_poll(server: CrowdedRegistry) -> set[tuple[str, int]]:
    server.peers.clear()
    result = poll("r")
    assert result.tags == 12
    assert server.peers
    return set(server.peers)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process polls as a worker does; what it kept is closed afterwards."""
    monkeypatch.setattr(warm, "_ENABLED", True)
    monkeypatch.setattr(harbor, "_NOT_HARBOR", {})
    yield
    warm.close_all(bounded.thread_loop())


def test_a_workers_polls_reuse_the_connections_of_the_last(
    registry: CrowdedRegistry, worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = connections_of_a_poll(registry)
    for _ in range(2):  # (a poll with more requests at once than the last opens a connection more)
        again = connections_of_a_poll(registry)
        assert again & seen, "no connection of an earlier poll was used again"
        seen |= again
    monkeypatch.setattr(warm, "IDLE_SECONDS", 0.0)  # unused for longer than that: closed, new ones made
    assert connections_of_a_poll(registry).isdisjoint(seen)


def test_a_worker_asks_once_whether_a_registry_is_a_harbor(registry: CrowdedRegistry, worker: None) -> None:
    first, second, third = (poll("r").requests for _ in range(3))
    assert first == 1 + 4 + 12 + 1  # the catalog, 4 tag lists, 12 manifests, and the Harbor probe
    assert second == third == first - 1


def test_a_poll_command_keeps_nothing(registry: CrowdedRegistry) -> None:
    assert not warm.enabled()
    assert connections_of_a_poll(registry).isdisjoint(connections_of_a_poll(registry))


def test_a_workers_polls_use_their_tokens_again(
    watcher: Watcher, token_registry: RegistryEnv, unique_repo: str, worker: None
) -> None:
    """A bearer token fetched by one poll serves the next polls of the worker until it expires: the token
    server is asked once per scope, not once per scope and poll."""
    for repo in ("a", "b"):
        token_registry.client.push_image(f"{unique_repo}/{repo}", "v1")
    login = ("--username", "alice", "--password", "s3cret-pass", "--repository", f"{unique_repo}/*")
    added = watcher.add_registry("t", token_registry.url, *login)
    assert added.exit_code == 0, added.output
    assert token_registry.token_server is not None
    assert poll("t").tags == 2
    token_registry.token_server.reset()
    for _ in range(2):
        assert poll("t").tags == 2
    # (a poll of a `watcher poll` process asks for a token per scope: the catalog's and each repository's)
    assert token_registry.token_server.requests == []
