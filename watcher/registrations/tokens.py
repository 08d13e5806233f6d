"""API tokens: created with a role, shown once, stored as a SHA-256 hash, checked in constant time.

A token is 32 random bytes, so a plain SHA-256 is as strong as a slow password hash here (there is no
dictionary to try) and lets a request find its token by an indexed lookup of the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from watcher.errors import ConflictError, InputError, NotFoundError
from watcher.models import ApiToken, ConsoleSession, utcnow
from watcher.read.model import token_active
from watcher.registrations import workspaces
from watcher.registrations.spec import NAME
from watcher.schema import DEFAULT_WORKSPACE

#: reader may read its workspace; admin may change it too; operator is the deployment's: it creates
#: workspaces, sets their quotas and may act in any workspace (its own when it names none)
ROLES = ("reader", "admin", "operator")
Role = Literal["reader", "admin", "operator"]
PREFIX = "wt_"
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token
active = token_active  # neither revoked nor expired: the read model's test, for the API's and console's checks


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session,
    name: str,
    role: str,
    *,
    workspace: str = DEFAULT_WORKSPACE,
    expires_in: timedelta | None = None,
) -> str:
    """A new token `name` of `workspace` (names are unique per workspace); the only time it is ever visible.
    A revoked token's name may be reused."""
    if not NAME.match(name or ""):
        raise InputError(f"token name {name!r} is not valid: use letters, digits, '.', '_' or '-' (at most 63)")
    if role not in ROLES:
        raise InputError(f"role {role!r} is not valid: use reader, admin or operator")
    workspace_id = workspaces.find_id(session, workspace)
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    existing = session.scalar(select(ApiToken).where(ApiToken.workspace_id == workspace_id, ApiToken.name == name))
    if existing is not None and existing.revoked_at is None:
        raise ConflictError(f"token {name!r} already exists: revoke it first, or choose another name")
    if existing is not None:
        session.delete(existing)
        session.flush()
    session.add(
        ApiToken(
            workspace_id=workspace_id,
            name=name,
            role=role,
            token_hash=digest(token),
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"token {name!r} already exists: revoke it first, or choose another name") from None
    return token


def revoke(session: Session, name: str, *, workspace: str = DEFAULT_WORKSPACE) -> None:
    """Revoke the token `name` of `workspace` and end the console sessions opened with it (they are refused
    anyway: its token is checked on every request)."""
    workspace_id = workspaces.find_id(session, workspace)
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.workspace_id == workspace_id, ApiToken.name == name, ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise NotFoundError(f"no active token named {name!r} in workspace {workspace!r}: see `watcher token list`")
    row.revoked_at = utcnow()
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_id == row.id))


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token row `token` is, or None (unknown, revoked or expired). Its last use is recorded."""
    if not token.startswith(PREFIX):
        return None
    hashed = digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hashed))
    now = utcnow()
    if row is None or not hmac.compare_digest(row.token_hash, hashed) or not active(row, now):
        return None
    touch(session, row, now)
    return row


def touch(session: Session, row: ApiToken, now: datetime) -> None:
    """Record the token's use, at most once a `TOUCH_EVERY`, so that reads do not write on every request."""
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))


def has_any(session: Session) -> bool:
    now = utcnow()
    return any(active(row, now) for row in session.scalars(select(ApiToken)))
