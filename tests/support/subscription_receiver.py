"""A subscriber's endpoint for the subscription surface's tests: it records every request and gives the
answer it is told to (`answer = (status, body)`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tests.support.servers import BackgroundServer, QuietHandler


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        owner: SubscriptionReceiver = self.owner
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with owner.lock:
            owner.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, text = owner.answer
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SubscriptionReceiver(BackgroundServer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.answer: tuple[int, str] = (200, "thanks")
        super().__init__(_Handler, name="subscription-receiver")
