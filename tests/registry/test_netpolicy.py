"""The network policy: refused addresses are never connected to, checked on the address a name resolves to.

127.0.0.2 stands in for "an address the operator refused": a `Recorder` listening there proves that no
connection (let alone a credential) reached it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Watcher
from tests.fakes.google_token import FakeGoogleTokenServer, ServiceAccount
from tests.fakes.hostile_registry import HostileRegistry, Recorder
from tests.registry.test_hostile_network import PASSWORD, USERNAME, one_line_failure, set_env
from watcher import errors
from watcher.pollers.gcr import GoogleToken, load_credentials
from watcher.registry.netpolicy import NetworkRefused, current_policy

POLICY_LINE = "is refused by the network policy (WATCHER_DENY_NETWORKS / WATCHER_ALLOW_NETWORKS)"
DATABASES = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    """A listener on 127.0.0.2: what must never be reached while the policy refuses it."""
    with Recorder(host="127.0.0.2") as server:
        yield server


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://169.254.169.254", "169.254.169.254"),
        ("http://[::ffff:169.254.169.254]:80", "::ffff:169.254.169.254"),
        ("https://[fd00:ec2::254]", "fd00:ec2::254"),
        ("http://100.100.100.200", "100.100.100.200"),
    ],
)
def test_metadata_addresses_are_refused_by_default(watcher: Watcher, url: str, address: str) -> None:
    line = one_line_failure(watcher.add_registry("r1", url), "registry 'r1'", "unreachable", f"address {address}")
    assert POLICY_LINE in line  # the policy speaking, not a timeout: nothing was sent


@DATABASES
def test_a_denied_registry_address_is_never_connected_to(
    watcher: Watcher, elsewhere: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, WATCHER_DENY_NETWORKS="127.0.0.2/32")
    one_line_failure(watcher.add_registry("r1", elsewhere.url), "registry 'r1'", "address 127.0.0.2", POLICY_LINE)
    assert elsewhere.requests == []
    set_env(monkeypatch, WATCHER_ALLOW_NETWORKS="127.0.0.2/32")  # allow wins over deny
    result = watcher.add_registry("r1", elsewhere.url)
    assert POLICY_LINE not in result.output
    assert elsewhere.requests != []


@DATABASES
def test_a_realm_on_a_denied_address_is_never_asked(
    watcher: Watcher, elsewhere: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HostileRegistry(elsewhere, username=USERNAME, password=PASSWORD) as registry:
        assert watcher.add_registry("r1", registry.url, "--username", USERNAME, "--password", PASSWORD).exit_code == 0
        assert watcher.cli("poll", "r1").exit_code == 0
        set_env(monkeypatch, WATCHER_DENY_NETWORKS="10.0.0.0/8, 127.0.0.2/32")
        registry.mode = "foreign_realm"  # the registry's own challenge names a realm on 127.0.0.2
        one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "address 127.0.0.2", POLICY_LINE)
        assert elsewhere.requests == []
        registry.mode = "normal"
        assert watcher.cli("poll", "r1").exit_code == 0
        assert watcher.stream_entries() == []


def test_a_bad_cidr_is_one_line(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, WATCHER_DENY_NETWORKS="10.0.0.0/8,not-a-network")
    with pytest.raises(errors.InputError, match="WATCHER_DENY_NETWORKS: 'not-a-network' is not an IP network"):
        current_policy()
    one_line_failure(watcher.add_registry("r1", "http://127.0.0.1:1"), "WATCHER_DENY_NETWORKS", "not-a-network")
    set_env(monkeypatch, WATCHER_DENY_NETWORKS="", WATCHER_ALLOW_NETWORKS="300.1.2.3/8")
    one_line_failure(watcher.add_registry("r1", "http://127.0.0.1:1"), "WATCHER_ALLOW_NETWORKS", "300.1.2.3/8")


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`rebind.test` resolves, through the real getaddrinfo path, to whatever the test says right now."""
    answers: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        return real(answers.get(name, name), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@DATABASES
def test_dns_rebinding_is_caught_at_connect_time(
    watcher: Watcher, rebinding: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    with recorder, HostileRegistry(recorder) as registry, Recorder(host="127.0.0.2", port=registry.port) as inside:
        set_env(monkeypatch, WATCHER_DENY_NETWORKS="127.0.0.2/32")
        rebinding["rebind.test"] = "127.0.0.1"  # a harmless address while the registry is added
        assert watcher.add_registry("r1", f"http://rebind.test:{registry.port}").exit_code == 0
        assert watcher.cli("poll", "r1").exit_code == 0
        rebinding["rebind.test"] = "127.0.0.2"  # ... then the name moves to a refused one
        line = one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "rebind.test (127.0.0.2)", POLICY_LINE)
        assert "address 127.0.0.2" in line
        assert inside.requests == []
        rebinding["rebind.test"] = "127.0.0.1"
        assert watcher.cli("poll", "r1").exit_code == 0
        assert watcher.stream_entries() == []


def test_a_token_uri_on_a_denied_address_is_never_asked(
    elsewhere: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth's token request (the key's `token_uri` is the registrant's) goes through the policy too."""
    set_env(monkeypatch, WATCHER_DENY_NETWORKS="127.0.0.2/32")
    info = ServiceAccount("proj").info(f"{elsewhere.url}/token")
    token = GoogleToken(load_credentials("g", info), info["token_uri"], timeout=5)
    try:
        with pytest.raises(NetworkRefused, match=r"address 127\.0\.0\.2 is refused by the network policy"):
            token.get()
    finally:
        token.close()
    assert elsewhere.requests == []


def test_the_token_uri_is_reached_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, WATCHER_DENY_NETWORKS="127.0.0.0/8", WATCHER_ALLOW_NETWORKS="127.0.0.1/32")
    with FakeGoogleTokenServer() as google:
        account = ServiceAccount("proj")
        google.register(account)
        info = account.info(google.token_uri)
        token = GoogleToken(load_credentials("g", info), info["token_uri"], timeout=5)
        try:
            assert token.get() is not None
        finally:
            token.close()
