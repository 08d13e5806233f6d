"""Rendering console pages: the Jinja2 environment, its filters, and the headers every page carries."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from watcher.read.tables import ago, platforms_cell
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


# ---- the repository page: where an image comes from ----------------------------------------------------
SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"
#: the characters of a revision shown (a commit's hash; the whole one is its title)
REVISION_SHOWN = 12
#: what no link may hold: whitespace and control characters (a browser drops some, so what it would follow
#: is not what was checked) and backslashes (which it reads as slashes)
_NOT_IN_LINK = re.compile(r"[\s\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class Source:
    """An image's `source` annotation as the page shows it: `link` only when it is an https URL, else the
    text alone (the template escapes both), and its `revision` beside it."""

    text: str
    link: str | None
    revision: str | None

    @property
    def short_revision(self) -> str:
        return (self.revision or "")[:REVISION_SHOWN]


def https_link(value: str) -> str | None:
    """`value` when it is an absolute `https://` URL with a host and nothing a browser would read otherwise;
    None for anything else (`javascript:`, `data:`, `http://`, a relative path): a registry's annotation is
    written by whoever pushed the image, so only a plain https link is ever followed from the console."""
    if not value.startswith("https://") or _NOT_IN_LINK.search(value):
        return None
    try:
        host = urlsplit(value).hostname
    except ValueError:  # an unbalanced IPv6 bracket, a bad port
        return None
    return value if host else None


def source_of(annotations: Mapping[str, str] | None) -> Source | None:
    """An image's source and revision from its annotations, or None when it names neither."""
    found = annotations or {}
    text, revision = found.get(SOURCE), found.get(REVISION)
    if not text and not revision:
        return None
    return Source(text or "", https_link(text) if text else None, revision or None)


templates.env.filters.update(platforms=platforms_cell, source=source_of)


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


@dataclass(frozen=True)
class Refusal:
    """What was wrong with a form: the one line, and the field it concerns (None: the whole form)."""

    error: str | None = None
    field: str | None = None


NO_REFUSAL = Refusal()


def form_page(
    request: Request,
    template: str,
    user: Principal,
    values: dict[str, Any],
    fields: Iterable[str],
    refusal: Refusal | None = None,
    http_status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A form to add something to the workspace, again with what was typed and the error beside the field it
    concerns (of `fields`; any other is shown above the form), with the workspace's registry names to pick."""
    from watcher.db import session_scope
    from watcher.read.model import registry_names

    with session_scope() as session:
        names = registry_names(session, workspace_id=user.workspace_id)
    refusal = refusal or NO_REFUSAL
    shown = refusal.field if refusal.field is not None and refusal.field in set(fields) else None
    context |= {"names": names, "values": values, "error": refusal.error, "error_field": shown}
    return page(request, template, user, http_status, **context)
