"""A secret carried in the webhook URL's path (Docker Hub, Quay) never reaches the log: `watcher serve
--loglevel DEBUG` logs every request's path, and shows that segment as `…`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.hooks import payload
from tests.support.registry import free_port
from watcher.settings import get_settings


def test_the_access_log_never_shows_a_path_secret(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("WATCHER_PUBLIC_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    assert watcher.add_registry("r1", "https://quay.io", "--no-verify").exit_code == 0
    hook = json.loads(watcher.cli("registry", "webhook", "r1", "--format", "quay", "--json").output)
    secret = hook["secret"]
    server = subprocess.Popen(
        [sys.executable, "-m", "watcher", "serve", "--listen", f"127.0.0.1:{port}", "--loglevel", "DEBUG"],
        env=watcher.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/hooks/v1/r1"
        assert hook["url"] == f"{base}/{secret}"
        deadline = time.monotonic() + 30
        while True:
            try:
                pushed = httpx.post(f"{base}/{secret}", json=payload("quay-push"))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        assert pushed.status_code == 202, pushed.text
        assert httpx.post(f"{base}/{secret[:-1]}?x=1", content=b"{}").status_code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert '"POST /hooks/v1/r1/… HTTP/1.1" 202' in output and '"POST /hooks/v1/r1/…?x=1 HTTP/1.1" 401' in output
    assert secret not in output and secret[:-1] not in output
