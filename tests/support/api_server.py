"""The real app served by uvicorn on a free loopback port in a background thread, for tests that speak HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from tests.support.registry import free_port
from tests.support.servers import ClosesOnExit
from watcher.web.app import create_app


class ApiServer(ClosesOnExit):
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # An event stream whose client has gone notices only at its next keep-alive: stop waiting for it
        # after a second, so a server never outlives its test (and its database).
        config = uvicorn.Config(
            create_app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"api-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
