"""Logging in to the console over plain HTTP (its real login form, CSRF token and all), and what a session
cookie must look like: an opaque random id that holds no part of the token."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import select

from watcher.db import session_scope
from watcher.models import ConsoleSession
from watcher.registrations import tokens
from watcher.web.deps import COOKIE

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


@contextmanager
def log_in(base_url: str, token: str) -> Iterator[httpx.Client]:
    """A client holding a fresh console session of `token` (redirects are not followed: tests read them)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        csrf = csrf_of(client.get("/console/login"))
        answer = client.post("/console/login", data={"csrf": csrf, "token": token, "next": "/console/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/", answer.text[:500]
        yield client


def cookie_of(client: httpx.Client) -> str:
    value = client.cookies.get(COOKIE)
    assert value, "no session cookie"
    return value


def copy(base_url: str, cookie: str) -> httpx.Client:
    """Another client presenting a copy of a session cookie, as someone who took it would."""
    return httpx.Client(base_url=base_url, cookies={COOKIE: cookie}, timeout=10)


def assert_opaque(cookie: str, token: str) -> None:
    """The cookie is 32 random URL-safe bytes, stored only as their SHA-256, and holds no piece of the token
    (not even base64-encoded, as a signed session would)."""
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie), cookie
    decoded = base64.urlsafe_b64decode(cookie + "=")
    assert len(decoded) == 32
    secret = token.removeprefix(tokens.PREFIX)
    for start in range(len(secret) - 7):
        piece = secret[start : start + 8]
        assert piece not in cookie and piece.encode() not in decoded
    with session_scope() as session:
        rows = list(session.scalars(select(ConsoleSession)))
    assert tokens.digest(cookie) in [row.session_hash for row in rows]
    for row in rows:  # no column of any session row holds the raw id
        assert all(cookie not in str(value) for value in vars(row).values())
