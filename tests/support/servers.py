"""The threaded HTTP server every test server here is built on, and the lifecycle they share."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-answer is routine in these tests (timeouts, retries, broken answers); printing
    a traceback for it would land in the CLI output the tests read."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None


class TlsQuietServer(QuietServer):
    """A QuietServer speaking TLS. The handshake happens in each connection's own thread, so a client that
    rejects the certificate (or never speaks) cannot stall the server."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext
    ) -> None:
        self.context = context
        self._handler = handler
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate, or hung up
        self._handler(tls, client_address, self)


class ClosesOnExit:
    """`with thing:` calls `thing.close()` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that speaks HTTP/1.1, logs nothing (the tests read the CLI's output) and reaches the
    BackgroundServer serving it as `owner`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]


class BackgroundServer(ClosesOnExit):
    """A QuietServer on a free loopback port, served from a daemon thread until `close()` (idempotent).

    `tls` serves HTTPS with that context; `host` (another loopback address) and `port` choose where it listens.
    Subclasses set up what their handler reads first, then call
    `super().__init__`; one holding more resources extends `close()` after `super().close()`.
    """

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        address = (host, port)
        self._httpd = QuietServer(address, handler) if tls is None else TlsQuietServer(address, handler, tls)
        self._httpd.owner = self  # type: ignore[attr-defined]  # what a handler's `owner` is (see QuietHandler)
        self.port: int = self._httpd.server_address[1]
        self.url = f"{'http' if tls is None else 'https'}://{host}:{self.port}"
        self._closed = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # a short poll: close() returns at once
            name=f"{name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
