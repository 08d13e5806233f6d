"""Rendering console pages: the Jinja2 environment, its filters, and the headers every page carries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from watcher.web.console.auth import csrf_token
from watcher.web.deps import Principal

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`3 min ago`, `in 2 h`, `just now`; `never` for no time at all."""
    if moment is None:
        return "never"
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    size = abs(seconds)
    if size < 5:
        return "just now"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if size >= length:
            amount = f"{int(size // length)} {unit}"
            break
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_digest(digest: str) -> str:
    algorithm, _, hexes = digest.partition(":")
    return f"{algorithm}:{hexes[:12]}" if hexes else digest


templates.env.filters.update(ago=ago, iso=iso, short_digest=short_digest)


def page(
    request: Request, template: str, user: Principal | None, http_status: int = 200, **context: Any
) -> HTMLResponse:
    """A console page, with the person, this session's CSRF token and any one-time notice."""
    flash = request.session.pop("flash", None) if user is not None else None
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": csrf_token(request), "flash": flash, **context},
        status_code=http_status,
    )
    response.headers.update(HEADERS)
    return response
