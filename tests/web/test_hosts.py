"""DNS rebinding: a page on another name that resolves to the watcher cannot read it, because only the
hosts of WATCHER_PUBLIC_URL, WATCHER_LISTEN and WATCHER_ALLOWED_HOSTS (and addresses, and localhost) are
served; any other `Host` is one 400 in the error shape, on every route but the webhook receivers."""

from __future__ import annotations

import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.web.conftest import Api
from watcher.errors import InputError
from watcher.settings import get_settings
from watcher.web.hosts import AllowedHosts

#: what answers without a token (`/metrics` where WATCHER_METRICS_OPEN says so, as these tests do)
OPEN_ROUTES = ("/metrics", "/healthz", "/readyz", "/openapi.json", "/docs", "/console/login")


def status(server: ApiServer, path: str, host: str, token: str | None = None) -> int:
    with server.client(token) as client:
        response = client.get(path, headers={"Host": host})
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["code"] == "bad_request" and "WATCHER_ALLOWED_HOSTS" in error["message"], response.text
    return response.status_code


def test_a_rebinding_name_reads_nothing_and_addresses_and_localhost_still_work(
    watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_METRICS_OPEN", "true")
    get_settings.cache_clear()
    server = api.server
    for path in (*OPEN_ROUTES, "/api/v1/registries"):
        assert status(server, path, "evil.example", api.reader_token) == 400, path
        assert status(server, path, f"evil.example:{server.port}", api.reader_token) == 400, path
    for host in (f"127.0.0.1:{server.port}", "127.0.0.1", f"localhost:{server.port}", "LOCALHOST.", "[::1]:8080"):
        assert status(server, "/metrics", host) == 200, host
        assert status(server, "/api/v1/registries", host, api.reader_token) == 200, host
    assert status(server, "/healthz", "10.1.2.3:8080") == 200  # a kubelet's probe names the pod's address
    with server.client() as client:  # a receiver answers by its secret alone
        assert client.post("/hooks/v1/nosuch", headers={"Host": "evil.example"}, content=b"{}").status_code == 404


def test_the_public_url_listen_and_allowed_hosts_are_served(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_PUBLIC_URL", "https://watcher.example.com/base")
    monkeypatch.setenv("WATCHER_LISTEN", "watcher.internal:8080")
    monkeypatch.setenv("WATCHER_ALLOWED_HOSTS", " ops.example.org:9090 , .svc.cluster.local")
    get_settings.cache_clear()
    with ApiServer() as server:
        for host in (
            "watcher.example.com",
            "Watcher.Example.Com:443",  # case and port do not matter
            "watcher.internal:8080",
            "ops.example.org",
            "watcher.ns.svc.cluster.local:8080",
            "svc.cluster.local",
        ):
            assert status(server, "/healthz", host) == 200, host
        for host in ("example.com", "evil.watcher.example.com", "xsvc.cluster.local", "ops.example.org.evil"):
            assert status(server, "/healthz", host) == 400, host
    monkeypatch.setenv("WATCHER_ALLOWED_HOSTS", "*")
    monkeypatch.setenv("WATCHER_METRICS_OPEN", "true")
    get_settings.cache_clear()
    with ApiServer() as server:
        assert status(server, "/metrics", "evil.example") == 200


def test_an_allowed_host_that_is_not_a_name_is_one_line(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_ALLOWED_HOSTS", "ok.example.com,https://bad.example.com/path")
    get_settings.cache_clear()
    with pytest.raises(InputError, match=r"^WATCHER_ALLOWED_HOSTS: 'https://bad.example.com/path' is not a host"):
        AllowedHosts.from_settings()
    result = watcher.cli("serve", "--listen", "127.0.0.1:1")
    assert result.exit_code != 0 and "WATCHER_ALLOWED_HOSTS" in result.output and "Traceback" not in result.output
