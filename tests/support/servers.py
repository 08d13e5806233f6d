"""The threaded HTTP server every test server here is built on."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-answer is routine in these tests (timeouts, retries, broken answers); printing
    a traceback for it would land in the CLI output the tests read."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return None
