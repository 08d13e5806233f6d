"""Registered registries: saving, loading, removing, and their public (secret-free) description.

`watcher.registrations.vault` (and `cryptography` with it) is imported where credentials are read or written, not by
`find`: the reading commands look registries up without decrypting anything."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from watcher.errors import ConflictError, StateError
from watcher.models import Registry, Repository, utcnow
from watcher.polling.scheduler import first_slot
from watcher.registrations import workspaces
from watcher.registrations.lookup import by_key, not_found
from watcher.registrations.lookup import spec_of as spec_of
from watcher.registrations.spec import RegistrySpec


def find(session: Session, key: str) -> Registry:
    """The registry of `key` (`watcher.registrations.keys`: `NAME` in workspace `default`, else
    `WORKSPACE/NAME`), in one query; NotFoundError in the read model's words, naming only the name, when
    there is none — in that workspace, or at all. (A poll's start reads a Core row: `lookup.find_row`.)"""
    row = session.scalar(by_key(select(Registry), key))
    if row is None:
        raise not_found(key)
    return row


def already_exists(name: str) -> ConflictError:
    return ConflictError(f"registry {name!r} already exists; use `watcher registry apply` to change it", field="name")


def create(session: Session, spec: RegistrySpec) -> Registry:
    """Add a new registry, within its workspace's quotas (`workspaces.admit`); one of that name already
    there, or saved by a racing process, is refused.

    The workspace's row lock comes first in its transaction (`workspaces.admit`), so of two racing
    registrations the second waits for the first's commit, then counts it against the quota, and its
    INSERT meets the unique name: the same one line as if it had come second.
    """
    workspace_id = workspaces.admit(session, spec.workspace, [spec])
    row = Registry(workspace_id=workspace_id, name=spec.name, baselined=False)
    _assign(row, spec)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise already_exists(spec.name) from None
    return row


def save(
    session: Session, spec: RegistrySpec, *, together: bool = False, admitted: bool = False
) -> tuple[Registry, str]:
    """Create or update; returns the row and `created`, `updated` or `unchanged`.

    A new registry (or a new interval) is first polled at once; one of many saved `together` (a `registry
    apply` of several) at its first slot when its interval is a minute or less (`scheduler.first_slot`), so
    that registries registered together take their baselines spread over their interval, not in one burst.

    Pointing a registry at another provider or URL starts it over: its snapshot is dropped and the next
    poll records a new baseline, instead of reporting the difference between two registries as events.
    Credentials that cannot be decrypted any more count as changed: saving is how they are re-entered.
    The workspace's quotas are checked first (`workspaces.admit`), unless the caller `admitted` all it saves.
    """
    workspace_id = (
        workspaces.find_id(session, spec.workspace) if admitted else workspaces.admit(session, spec.workspace, [spec])
    )
    row = session.scalar(select(Registry).where(Registry.workspace_id == workspace_id, Registry.name == spec.name))
    if row is None:
        row = Registry(workspace_id=workspace_id, name=spec.name, baselined=False)
        row.next_poll_at = _first_poll(spec, together)
        session.add(row)
        outcome = "created"
    elif _readable_spec(row) == spec:
        return row, "unchanged"
    else:
        outcome = "updated"
        if (row.provider, row.url) != (spec.provider, spec.url):
            session.execute(delete(Repository).where(Repository.registry_id == row.id))
            row.baselined = False
        if row.interval_seconds != spec.interval_seconds:
            # a new grid starts (and a row the tick had set aside comes back)
            row.next_poll_at = _first_poll(spec, together)
    _assign(row, spec)
    try:
        session.flush()
    except IntegrityError:
        raise StateError(
            f"registry {spec.name!r} was created by another process at the same time; nothing was saved: "
            "run the command again"
        ) from None
    return row, outcome


def _first_poll(spec: RegistrySpec, together: bool) -> datetime:
    now = utcnow()
    return first_slot(spec.key, spec.interval_seconds, now) if together else now


def _readable_spec(row: Registry) -> RegistrySpec | None:
    from watcher.registrations import vault

    try:
        return spec_of(row)
    except vault.Undecryptable:
        return None


def _assign(row: Registry, spec: RegistrySpec) -> None:
    from watcher.registrations import vault

    row.provider = spec.provider
    row.url = spec.url
    row.credentials = vault.encrypt(spec.credentials)
    row.options = spec.options
    row.interval_seconds = spec.interval_seconds
    row.emit_existing = spec.emit_existing


def remove(session: Session, name: str) -> None:
    """Forget a registry and its snapshot; its event history stays for dashboards."""
    session.delete(find(session, name))
