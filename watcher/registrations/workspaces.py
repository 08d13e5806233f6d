"""Workspaces: each team's registries, events and tokens are its own."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from watcher.errors import NotFoundError
from watcher.models import Workspace
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID


def missing(name: str) -> NotFoundError:
    return NotFoundError(f"no workspace named {name!r}: see `watcher workspace list`")


def find_id(session: Session, name: str) -> int:
    """The id of the workspace `name`, or NotFoundError naming it."""
    if name == DEFAULT_WORKSPACE:
        return DEFAULT_WORKSPACE_ID
    found = session.scalar(select(Workspace.id).where(Workspace.name == name)) if "\x00" not in name else None
    if found is None:
        raise missing(name)
    return found
