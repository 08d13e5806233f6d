"""`watcher serve` and the HTTP side of `watcher run`: where they listen, and one line when they cannot."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.registry import free_port
from watcher.web.server import console_url, parse_listen


def run(
    watcher: Watcher, *args: str, listen: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = watcher.env() | ({"WATCHER_LISTEN": listen} if listen else {})
    return subprocess.run([sys.executable, "-m", "watcher", *args], env=env, capture_output=True, text=True, timeout=60)


def test_listen_addresses_parse_or_say_what_is_wrong() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen(":9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert console_url("0.0.0.0:8080") == "http://127.0.0.1:8080/console/"
    for bad in ("8080", "host:", "host:99999", "bad host:80", "127.0.0.1:http"):
        with pytest.raises(Exception, match=r"listen address .* is not valid"):
            parse_listen(bad)


def test_a_port_in_use_is_one_line_for_serve_and_run(watcher: Watcher) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for args in (("serve", "--listen", f"127.0.0.1:{port}"), ("run", "--concurrency", "1")):
            result = run(watcher, *args, listen=f"127.0.0.1:{port}")
            assert result.returncode == 1, result.stderr
            lines = result.stderr.strip().splitlines()
            assert lines == [
                f"watcher: cannot listen on 127.0.0.1:{port}: Address already in use (WATCHER_LISTEN or --listen)"
            ]
    bad = run(watcher, "serve", "--listen", "nowhere")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "listen address 'nowhere'" in bad.stderr


def test_serve_answers_until_it_is_stopped(watcher: Watcher) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "watcher", "serve", "--listen", f"127.0.0.1:{port}"],
        env=watcher.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/registries").status_code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    # a clean shutdown, then uvicorn ends as the signal asked (as a service manager expects)
    assert server.returncode in (0, -15) and "Finished server process" in output and "Traceback" not in output


def test_watcher_run_killed_outright_frees_its_port(watcher: Watcher, tmp_path) -> None:
    """The HTTP side of a `watcher run` killed with SIGKILL ends with it: the next `watcher run` can listen."""
    port = free_port()
    env = watcher.env() | {"WATCHER_LISTEN": f"127.0.0.1:{port}"}
    with open(tmp_path / "run.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not answers(port):  # `watcher run` starts its HTTP side before its worker
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.1)
        worker.kill()
        worker.wait(timeout=10)
        deadline = time.monotonic() + 15
        while answers(port):
            assert time.monotonic() < deadline, "the HTTP side outlived its worker"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(worker.pid, signal.SIGKILL)


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
