"""Pytest fixtures that give tests a real registry in each auth mode.

Load them from ``tests/conftest.py`` with ``pytest_plugins =
["tests.support.fixtures"]`` (or import the names in ``__all__``).

Registry servers are session-scoped (starting one costs ~50 ms, but a whole
suite should not pay it per test); isolation comes from ``unique_repo``,
which hands each test its own repository prefix.  The function-scoped
``registry`` / ``basic_registry`` / ``token_registry`` fixtures restart a
session server a previous test left stopped, reset the token server's
counters, and give each test a fresh authenticated client.
Use ``registry_factory`` for a private server (custom token-server policy,
or a test that must not share state).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.registry import RegistryClient, RegistryMode, RegistryServer
from tests.support.token_server import TokenServer

__all__ = [
    "PASSWORD",
    "USERNAME",
    "RegistryEnv",
    "RegistryFactory",
    "basic_registry",
    "basic_registry_server",
    "registry",
    "registry_factory",
    "registry_server",
    "token_auth_server",
    "token_registry",
    "token_registry_server",
    "unique_repo",
    "unique_repo_name",
]

USERNAME = "alice"
PASSWORD = "s3cret-pass"


@dataclass
class RegistryEnv:
    """A running registry, a client logged in to it, and its credentials."""

    server: RegistryServer
    client: RegistryClient
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url


RegistryFactory = Callable[..., RegistryEnv]


def unique_repo_name(hint: str = "repo") -> str:
    """A valid, never-reused repository name (``watcher-test/<hint>-<hex>``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40].strip("-") or "repo"
    return f"watcher-test/{slug}-{secrets.token_hex(4)}"


def _env(
    server: RegistryServer,
    username: str | None,
    password: str | None,
    token_server: TokenServer | None = None,
) -> RegistryEnv:
    server.start()  # no-op if running; revives a server a test left stopped
    client = RegistryClient(server.url, username=username, password=password)
    return RegistryEnv(server, client, username, password, token_server)


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> str:
    """A fresh repository name (usable as is or as a ``prefix/...``)."""
    return unique_repo_name(request.node.name)


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Session-wide anonymous registry."""
    with RegistryServer(root=tmp_path_factory.mktemp("registry-anon")) as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryServer]:
    """Session-wide htpasswd registry with ``USERNAME``/``PASSWORD``."""
    root = tmp_path_factory.mktemp("registry-basic")
    with RegistryServer(root=root, htpasswd={USERNAME: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="session")
def token_auth_server() -> Iterator[TokenServer]:
    """Session-wide token server knowing ``USERNAME``/``PASSWORD``."""
    with TokenServer({USERNAME: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry_server(
    tmp_path_factory: pytest.TempPathFactory, token_auth_server: TokenServer
) -> Iterator[RegistryServer]:
    """Session-wide registry delegating auth to ``token_auth_server``."""
    root = tmp_path_factory.mktemp("registry-token")
    with RegistryServer(root=root, token_server=token_auth_server) as server:
        yield server


@pytest.fixture
def registry(registry_server: RegistryServer) -> Iterator[RegistryEnv]:
    """Anonymous registry; ``username``/``password`` are None."""
    env = _env(registry_server, None, None)
    with env.client:
        yield env


@pytest.fixture
def basic_registry(basic_registry_server: RegistryServer) -> Iterator[RegistryEnv]:
    """htpasswd registry, client logged in as alice / s3cret-pass."""
    env = _env(basic_registry_server, USERNAME, PASSWORD)
    with env.client:
        yield env


@pytest.fixture
def token_registry(token_registry_server: RegistryServer, token_auth_server: TokenServer) -> Iterator[RegistryEnv]:
    """Token-auth registry; the token server's counters start at zero."""
    token_auth_server.reset()
    env = _env(token_registry_server, USERNAME, PASSWORD, token_auth_server)
    with env.client:
        yield env


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[RegistryFactory]:
    """Build private registries; all are closed when the test ends.

    ``registry_factory(mode="anonymous"|"basic"|"token", *, username=...,
    password=..., token_server=None)``.  In token mode without
    ``token_server`` a ``TokenServer({username: password})`` is made (and
    closed); a passed-in token server stays owned by the caller.
    """
    servers: list[RegistryServer] = []
    clients: list[RegistryClient] = []
    token_servers: list[TokenServer] = []

    def make(
        mode: RegistryMode = "anonymous",
        *,
        username: str | None = USERNAME,
        password: str | None = PASSWORD,
        token_server: TokenServer | None = None,
    ) -> RegistryEnv:
        root = tmp_path / f"registry-{len(servers)}"
        if mode == "anonymous":
            username = password = None
            server = RegistryServer(root=root)
        elif mode == "basic":
            if username is None or password is None:
                raise ValueError("basic mode needs username and password")
            server = RegistryServer(root=root, htpasswd={username: password})
        else:
            if token_server is None:
                users = {username: password} if username and password is not None else {}
                token_server = TokenServer(users)
                token_servers.append(token_server)
            server = RegistryServer(root=root, token_server=token_server)
        servers.append(server)
        env = _env(server, username, password, token_server)
        clients.append(env.client)
        return env

    try:
        yield make
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.close()
        for ts in token_servers:
            ts.close()
