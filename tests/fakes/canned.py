"""A fake server that answers whatever the test planned: each request gets the `Answer` that
`answer_for(path)` returns (the query is not part of the path). For APIs and attacks whose wire format a
test spells out itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.support.servers import BackgroundServer, QuietHandler


@dataclass
class Answer:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"{}"


class CannedServer(BackgroundServer):
    def __init__(self, answer_for: Callable[[str], Answer], *, name: str = "canned") -> None:
        self.answer_for = answer_for
        super().__init__(_CannedHandler, name=name)


class _CannedHandler(QuietHandler):
    def do_GET(self) -> None:
        server: CannedServer = self.owner
        answer = server.answer_for(urlsplit(self.path).path)
        self.send_response(answer.status)
        for key, value in answer.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_HEAD = do_GET
