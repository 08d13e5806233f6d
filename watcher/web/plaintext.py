"""A NUL character in a request's query is refused with one 422 before any route sees it.

No name the watcher stores (registry, repository, tag, token) can hold one, PostgreSQL's text cannot hold
one at all (a query with one fails inside the driver: a 500), and SQLite's `LIKE` stops at it (`?q=%00`
matched every row). So it is refused rather than matched literally: the answer is then the same on both
databases, and says what is wrong. Every other character is matched as it is. (A NUL in the path is the
route's to judge: a repository path with one is a 400, a registry name with one is not found.)
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from watcher.web.errors import send_error


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _field_with_nul(scope)
            if field is not None:
                await send_error(send, 422, "invalid", f"{field} must not contain a NUL character", field)
                return
        await self.app(scope, receive, send)


def _field_with_nul(scope: Scope) -> str | None:
    """The query parameter that holds a NUL, if one does."""
    query = bytes(scope.get("query_string", b""))
    if b"%00" not in query and b"\x00" not in query:
        return None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "") or "query"
    return None
