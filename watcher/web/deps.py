"""What routes depend on: a database session, and who is asking (their token and its role).

`authorize` is declared once on the API router: GET and HEAD need a `reader` (or `admin`) token, every other
method `admin` — so `test`, `validate` and `poll`, which make the watcher contact a registry, are admin's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from watcher.db import session_scope
from watcher.errors import NotFoundError
from watcher.registrations import tokens, workspaces
from watcher.web.console import sessions as console_sessions
from watcher.web.errors import ApiError

READ_METHODS = frozenset({"GET", "HEAD"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="watcher"'}
#: the console's session cookie: a random id naming a server-side session (`watcher.web.console.sessions`)
COOKIE = "watcher_console"


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with session_scope() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


#: the header an operator names the workspace it acts in with (`watcher.web.deps.authorize`)
WORKSPACE_HEADER = "X-Watcher-Workspace"
WRITE_ROLES = frozenset({"admin", "operator"})


@dataclass(frozen=True)
class Principal:
    """Who is asking, and the workspace the request acts in: the token's own, or for an operator the one
    its request names."""

    name: str
    role: str
    workspace_id: int

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def session_id(request: Request) -> str | None:
    """The random id the console's session cookie carries, if any (it names a server-side session; it is
    no token)."""
    return request.cookies.get(COOKIE) or None


def principal_of(token: str | None) -> Principal | None:
    """Whose token this is, checked in a transaction of its own: recording a token's last use must not hold
    a write lock for as long as the request (an event stream can last hours)."""
    if not token:
        return None
    with session_scope() as session:
        row = tokens.authenticate(session, token)
        return Principal(row.name, row.role, row.workspace_id) if row is not None else None


def principal_of_session(sid: str | None) -> Principal | None:
    """Whose console session this is, if it is live (its token too), in a transaction of its own."""
    if not sid:
        return None
    with session_scope() as session:
        found = console_sessions.resolve(session, sid)
        return Principal(found.name, found.role, found.workspace_id) if found is not None else None


def still_authorized(request: Request) -> bool:
    """Whether the caller of a long request (the event stream) may still read: its token is live, or its
    console session is. The session is not counted as used, so a page left open does not keep it from idling."""
    token = bearer_token(request)
    if token is not None:
        return principal_of(token) is not None
    sid = session_id(request)
    if sid is None:
        return False
    with session_scope() as session:
        return console_sessions.resolve(session, sid, use=False) is not None


def authorize(request: Request) -> Principal:
    """Who is asking; 401 without a valid token, 403 for a reader doing more than reading."""
    token = bearer_token(request)
    if token is not None:
        principal = principal_of(token)
        message = "the token is unknown, revoked or expired"
    elif request.method in READ_METHODS and session_id(request) is not None:
        # the console's session cookie authenticates reads only (its live event feed): a cookie-borne write
        # then cannot be forged from another page, whatever the browser's SameSite support
        principal = principal_of_session(session_id(request))
        message = "the console session is not logged in, or has ended: log in again, or send a bearer token"
    else:
        principal = None
        message = "a token is required: Authorization: Bearer TOKEN (see `watcher token create`)"
    if principal is None:
        raise ApiError(401, "unauthorized", message, headers=CHALLENGE)
    if request.method not in READ_METHODS and principal.role not in WRITE_ROLES:
        raise ApiError(403, "forbidden", f"token {principal.name!r} is a reader: this needs an admin token")
    named = request.headers.get(WORKSPACE_HEADER)
    return principal if named is None else in_workspace(principal, named)


def in_workspace(principal: Principal, name: str) -> Principal:
    """`principal` acting in the workspace `name`: an operator may name any; anyone else only their own —
    another workspace is a 404 exactly like one that does not exist, so none is confirmed to exist."""
    with session_scope() as session:
        try:
            workspace_id = workspaces.find_id(session, name)
        except NotFoundError:
            workspace_id = None
    if workspace_id is None or (workspace_id != principal.workspace_id and not principal.operator):
        raise ApiError(404, "not_found", workspaces.missing(name).args[0])
    return replace(principal, workspace_id=workspace_id)


#: who is asking, for a route that acts in their workspace (FastAPI runs `authorize` once per request)
Caller = Annotated[Principal, Depends(authorize)]
