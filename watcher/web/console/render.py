"""Rendering console pages: the Jinja2 environment, its filters, and the headers every page carries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from watcher.read.tables import ago
from watcher.web.console.auth import attach_cookie, csrf_token, notice, switchable, workspace_of
from watcher.web.deps import WRITE_ROLES, Principal

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
    """A console page, with the person, the workspace it shows (and for an operator the others it may
    switch to), this session's CSRF token and any one-time notice."""
    flash = notice(request) if user is not None else None
    shared = {
        "user": user,
        "can_write": user is not None and user.role in WRITE_ROLES,
        "workspace": workspace_of(request) if user is not None else "",
        "workspaces": switchable(request) if user is not None else [],
        "csrf": csrf_token(request),
        "flash": flash,
        "path": request.url.path,
    }
    response = templates.TemplateResponse(request, template, {**shared, **context}, status_code=http_status)
    response.headers.update(HEADERS)
    attach_cookie(request, response)
    return response
