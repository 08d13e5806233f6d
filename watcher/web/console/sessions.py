"""Console logins kept server-side: the cookie carries only a random id, the database only its SHA-256.

A session is opened with an API token and lives no longer than it: every request finds the session by the
hash of its id *and* checks its token, so a logout (the row deleted), a revoked or expired token, an idle
session (`IDLE`) and an old one (`LIFETIME`) all end it at once, whoever holds a copy of the cookie.

`IDLE` and `LIFETIME` follow OWASP ASVS 4 (3.3.2, level 2): re-authentication after 30 minutes without use,
and after 12 hours however busy. The console is an operator's tool whose admin may add registries with
credentials, so a forgotten tab should not stay logged in for a day, while 30 minutes leaves room to read a
poll's history or look a digest up elsewhere. Both are read at each call, so a test may set them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from watcher.models import ApiToken, ConsoleSession, Workspace, utcnow
from watcher.registrations import tokens
from watcher.schema import DEFAULT_WORKSPACE

IDLE = timedelta(minutes=30)
LIFETIME = timedelta(hours=12)
#: last_used_at is written at most this often per session (so the idle limit holds to within this much)
TOUCH_EVERY = tokens.TOUCH_EVERY
#: a session id is 32 random bytes, URL-safe (43 characters); anything much longer is not one
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class Live:
    """A session found live: its row, whose token it is, and the notice it had waiting (taken, if asked)."""

    id: int
    name: str
    role: str
    #: the workspace the console shows: the one an operator switched to, else its token's
    workspace_id: int
    notice: str | None = None
    #: that workspace's name, for the console's header and its registries' keys
    workspace: str = DEFAULT_WORKSPACE


def new_id() -> str:
    """A fresh random id: for a session, and for the anonymous cookie the login form's CSRF token is bound to."""
    return secrets.token_urlsafe(32)


def open_session(session: Session, token: str) -> tuple[str, Live] | None:
    """A new session for a valid `token` (its id, shown only to the cookie), or None; expired sessions are
    pruned on the way, so the table holds no more than the live ones and those of the last half hour."""
    row = tokens.authenticate(session, token)
    if row is None:
        return None
    now = utcnow()
    prune(session, now)
    session_id = new_id()
    opened = ConsoleSession(session_hash=tokens.digest(session_id), token_id=row.id, created_at=now, last_used_at=now)
    session.add(opened)
    session.flush()
    return session_id, Live(opened.id, row.name, row.role, row.workspace_id, workspace=_name(session, row.workspace_id))


def resolve(session: Session, session_id: str | None, *, take_notice: bool = False, use: bool = True) -> Live | None:
    """The live session `session_id` names, or None (unknown, logged out, idle, too old, or its token revoked
    or expired: such a row is deleted). Its use is recorded at most once a minute (unless `use` is False: a
    check that is not the person's doing); `take_notice` hands its waiting notice over once."""
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return None
    found = session.execute(
        select(ConsoleSession, ApiToken)
        .join(ApiToken, ApiToken.id == ConsoleSession.token_id)
        .where(ConsoleSession.session_hash == tokens.digest(session_id))
    ).first()
    if found is None:
        return None
    row, token = found
    now = utcnow()
    if not live(row, now) or not tokens.active(token, now):
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == row.id))
        return None
    changes: dict[str, object] = {}
    if use and now - row.last_used_at > TOUCH_EVERY:
        changes["last_used_at"] = now
        tokens.touch(session, token, now)
    notice = row.notice if take_notice else None
    if notice is not None:
        changes["notice"] = None
    if changes:
        session.execute(update(ConsoleSession).where(ConsoleSession.id == row.id).values(**changes))
    # only an operator's session shows another workspace than its token's (only an operator can switch)
    shown = row.workspace_id if row.workspace_id is not None and token.role == "operator" else token.workspace_id
    return Live(row.id, token.name, token.role, shown, notice, _name(session, shown))


def _name(session: Session, workspace_id: int) -> str:
    """The workspace's name; a foreign key keeps it there (a session's own choice is cleared with it, a token
    goes with it), and were it gone, "" is the key of no registry, so the console would show nothing."""
    return session.scalar(select(Workspace.name).where(Workspace.id == workspace_id)) or ""


def switch(session: Session, session_row: int, workspace_id: int) -> None:
    """Show the workspace `workspace_id` in this session from now on (an operator's choice; the caller checks)."""
    session.execute(update(ConsoleSession).where(ConsoleSession.id == session_row).values(workspace_id=workspace_id))


def workspace_names(session: Session) -> list[str]:
    """Every workspace's name, in order: what an operator's console may switch to."""
    return list(session.scalars(select(Workspace.name).order_by(Workspace.name)))


def live(row: ConsoleSession, now: datetime) -> bool:
    return now - row.last_used_at <= IDLE and now - row.created_at <= LIFETIME


def close(session: Session, session_id: str | None) -> None:
    """Log out: the row is deleted, so every copy of the cookie is refused from now on."""
    if session_id and len(session_id) <= MAX_ID_LENGTH:
        session.execute(delete(ConsoleSession).where(ConsoleSession.session_hash == tokens.digest(session_id)))


def leave_notice(session: Session, session_row: int, notice: str) -> None:
    """A one-time notice for the next page of this session."""
    session.execute(update(ConsoleSession).where(ConsoleSession.id == session_row).values(notice=notice))


def prune(session: Session, now: datetime) -> int:
    """Delete every session that can no longer be used: idle, too old, or its token revoked or expired."""
    dead_tokens = select(ApiToken.id).where(or_(ApiToken.revoked_at.is_not(None), ApiToken.expires_at <= now))
    result = session.execute(
        delete(ConsoleSession).where(
            or_(
                ConsoleSession.last_used_at < now - IDLE,
                ConsoleSession.created_at < now - LIFETIME,
                ConsoleSession.token_id.in_(dead_tokens),
            )
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
