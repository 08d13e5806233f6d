"""What routes depend on: a database session, and who is asking (their token and its role).

`authorize` is declared once on the API router: GET and HEAD need a `reader` (or `admin`) token, every other
method `admin` — so `test`, `validate` and `poll`, which make the watcher contact a registry, are admin's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from watcher import tokens
from watcher.db import session_scope
from watcher.web.errors import ApiError

READ_METHODS = frozenset({"GET", "HEAD"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="watcher"'}


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with session_scope() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, or, for reads only, the console's session: a cookie
    authenticates the console's live event stream, while the API's writes need the header (no cookie-borne
    write can then be forged from another page, whatever the browser's SameSite support)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.method not in READ_METHODS:
        return None
    return session_token(request)


def session_token(request: Request) -> str | None:
    """The token the console's signed session cookie carries, if any."""
    session = request.scope.get("session")
    stored = session.get("token") if isinstance(session, dict) else None
    return stored if isinstance(stored, str) else None


def principal_of(token: str | None) -> Principal | None:
    """Whose token this is, checked in a transaction of its own: recording a token's last use must not hold
    a write lock for as long as the request (an event stream can last hours)."""
    if not token:
        return None
    with session_scope() as session:
        row = tokens.authenticate(session, token)
        return Principal(row.name, row.role) if row is not None else None


def authorize(request: Request) -> Principal:
    """Who is asking; 401 without a valid token, 403 for a reader doing more than reading."""
    token = bearer_token(request)
    principal = principal_of(token)
    if principal is None:
        message = (
            "a token is required: Authorization: Bearer TOKEN (see `watcher token create`)"
            if token is None
            else "the token is unknown, revoked or expired"
        )
        raise ApiError(401, "unauthorized", message, headers=CHALLENGE)
    if request.method not in READ_METHODS and principal.role != "admin":
        raise ApiError(403, "forbidden", f"token {principal.name!r} is a reader: this needs an admin token")
    return principal
