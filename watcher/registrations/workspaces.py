"""Workspaces: each team's registries, events and tokens are its own, within the quotas an operator sets.

SQLAlchemy Core on `watcher.schema`'s tables, so that the quick commands (`workspace list/show`,
`token list`) read them without the ORM; every function takes a Core connection or an ORM session.

Quotas (NULL: no limit) bound what a workspace may register: `max_registries`, and `min_interval` (the
shortest polling interval a registration may set); `max_concurrent_polls` bounds how many of its polls run
at once (the scheduler's). `admit` checks a registration against them in the transaction that saves it,
after taking the workspace row's write lock (`_lock`): two registrations in one workspace are counted one
after the other, so racing ones cannot together pass `max_registries`, and a workspace being deleted waits
for the registration or makes it fail naming the workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from watcher.errors import ConflictError, InputError, NotFoundError, QuotaError
from watcher.read.model import missing_workspace, workspace_id_of
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID, api_tokens, registries, utcnow, workspaces

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from watcher.registrations.spec import RegistrySpec

    Db = Connection | Session

#: the quotas, as the API's fields and (with `--` and `-`) the command line's options
QUOTAS = ("max_registries", "min_interval", "max_concurrent_polls")
#: the value that clears a quota on the command line (`--max-registries none`); the API's is JSON `null`
NO_LIMIT = "none"
MAX_REGISTRIES_RANGE = (0, 1_000_000)  # 0: the workspace may register nothing more
MAX_CONCURRENT_POLLS_RANGE = (1, 10_000)
_COLUMNS = {"max_registries": "max_registries", "min_interval": "min_interval_seconds"}


#: the one lookup of a workspace by name, and its one not-found line: the read model's
find_id = workspace_id_of
missing = missing_workspace


def name_of(session: Db, workspace_id: int) -> str:
    """The name of the workspace `workspace_id` (one that exists: a principal's, a row's)."""
    if workspace_id == DEFAULT_WORKSPACE_ID:
        return DEFAULT_WORKSPACE
    found = session.scalar(select(workspaces.c.name).where(workspaces.c.id == workspace_id))
    if found is None:
        raise NotFoundError("the workspace acted in no longer exists: see `watcher workspace list`")
    return str(found)


def names_by_id(session: Db) -> dict[int, str]:
    """Every workspace's name by id."""
    return {int(i): str(n) for i, n in session.execute(select(workspaces.c.id, workspaces.c.name))}


# ---- reading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Described:
    """A workspace as `workspace show --json` and the API show it: quotas, and what it holds now."""

    name: str
    created_at: datetime
    max_registries: int | None
    min_interval_seconds: int | None
    max_concurrent_polls: int | None
    registries: int
    tokens: int

    def as_json(self) -> dict[str, Any]:
        from watcher.read.views import rfc3339_or_none
        from watcher.registrations.spec import format_interval

        interval = self.min_interval_seconds
        return {
            "name": self.name,
            "created_at": rfc3339_or_none(self.created_at),
            "quotas": {
                "max_registries": self.max_registries,
                "min_interval": format_interval(interval) if interval is not None else None,
                "max_concurrent_polls": self.max_concurrent_polls,
            },
            "usage": {"registries": self.registries, "tokens": self.tokens},
        }


def described(session: Db, names: Sequence[str] | None = None) -> list[Described]:
    """Every workspace (or those of `names`) by name, with its registries and its active tokens counted:
    three queries, whatever their number."""
    query = select(workspaces).order_by(workspaces.c.name)
    if names is not None:
        query = query.where(workspaces.c.name.in_([n for n in names if "\x00" not in n]))
    rows = session.execute(query).all()
    ids = [row.id for row in rows]
    counted = select(registries.c.workspace_id, func.count()).where(registries.c.workspace_id.in_(ids))
    holding: dict[int, int] = {i: n for i, n in session.execute(counted.group_by(registries.c.workspace_id))}
    now = utcnow()
    live = select(api_tokens.c.workspace_id, func.count()).where(
        api_tokens.c.workspace_id.in_(ids),
        api_tokens.c.revoked_at.is_(None),
        (api_tokens.c.expires_at.is_(None)) | (api_tokens.c.expires_at > now),
    )
    tokens: dict[int, int] = {i: n for i, n in session.execute(live.group_by(api_tokens.c.workspace_id))}
    return [
        Described(
            name=row.name,
            created_at=row.created_at,
            max_registries=row.max_registries,
            min_interval_seconds=row.min_interval_seconds,
            max_concurrent_polls=row.max_concurrent_polls,
            registries=int(holding.get(row.id, 0)),
            tokens=int(tokens.get(row.id, 0)),
        )
        for row in rows
    ]


def describe(session: Db, name: str) -> Described:
    """One workspace, or NotFoundError naming it."""
    found = described(session, [name])
    if not found:
        raise missing(name)
    return found[0]


# ---- changing -------------------------------------------------------------------------------------
def check_name(name: object) -> str:
    """A workspace's name: the registry-name grammar (it is part of a registry's key and a stream's name)."""
    from watcher.registrations.spec import NAME

    if not isinstance(name, str) or not NAME.match(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else "the name"
        raise InputError(
            f"{shown} is not a workspace name: use lower-case letters, digits, '.', '_' or '-' (at most 63), "
            "starting with a letter or digit",
            field="name",
        )
    return name


def check_new_name(name: object) -> str:
    """A name a new workspace may take: a workspace's name, and not one whose per-workspace stream would be
    a key watcher keeps for itself (`watcher.registrations.keys.RESERVED_WORKSPACE_NAMES`)."""
    from watcher.registrations.keys import RESERVED_WORKSPACE_NAMES

    checked = check_name(name)
    if checked in RESERVED_WORKSPACE_NAMES:
        reserved = ", ".join(sorted(RESERVED_WORKSPACE_NAMES))
        raise InputError(
            f"{checked!r} is reserved (its stream would be watcher's own key): avoid {reserved}", field="name"
        )
    return checked


def parse_quotas(values: dict[str, Any], *, command_line: bool = False) -> dict[str, int | None]:
    """The quotas given, as columns and values (None: no limit), each checked; keys not given are absent.

    From the command line a value is text and `none` clears it; from the API it is JSON and `null` clears it.
    """
    unknown = sorted(set(values) - set(QUOTAS))
    if unknown:
        raise InputError(f"unknown quota {unknown[0]!r}: use {', '.join(QUOTAS)}", field=unknown[0])
    changes: dict[str, int | None] = {}
    for key, value in values.items():
        option = "--" + key.replace("_", "-") if command_line else key
        cleared = value is None or (command_line and isinstance(value, str) and value.strip().lower() == NO_LIMIT)
        try:
            changes[_COLUMNS.get(key, key)] = None if cleared else _quota(key, value, option)
        except InputError as exc:
            clear = f"; {NO_LIMIT} clears it" if command_line else "; null clears it"
            raise InputError(f"{exc}{clear}", field=key) from None
    return changes


def _quota(key: str, value: object, option: str) -> int:
    from watcher.registrations.spec import MAX_INTERVAL_SECONDS, bounded_number, min_interval_seconds, parse_duration

    if key == "min_interval":
        return parse_duration(value, option, min_interval_seconds(), MAX_INTERVAL_SECONDS)
    low, high = MAX_REGISTRIES_RANGE if key == "max_registries" else MAX_CONCURRENT_POLLS_RANGE
    return int(bounded_number(value, option, int, low, high))


def create(session: Db, name: str, quotas: dict[str, int | None] | None = None) -> None:
    """A new workspace, with its quotas (as `parse_quotas` gives them); an existing name is refused, and a
    racing creation of the same name loses at the insert with the same line."""
    check_new_name(name)
    exists = ConflictError(f"workspace {name!r} already exists: see `watcher workspace show {name}`", field="name")
    if session.scalar(select(workspaces.c.id).where(workspaces.c.name == name)) is not None:
        raise exists
    try:
        session.execute(workspaces.insert().values(name=name, created_at=utcnow(), **(quotas or {})))
    except IntegrityError:
        raise exists from None


def set_quotas(session: Db, name: str, quotas: dict[str, int | None]) -> None:
    """Change the quotas given (as `parse_quotas` gives them); the others stay. Registries already
    registered keep their intervals and stay registered when a quota is lowered below them: a quota bounds
    what is registered from now on."""
    workspace_id = find_id(session, name)
    if quotas:
        session.execute(update(workspaces).where(workspaces.c.id == workspace_id).values(**quotas))


def delete_workspace(session: Db, name: str, *, force: bool = False) -> int:
    """Delete a workspace and everything it owns (its tokens, and with `force` its registries with their
    snapshots, polls, events and webhooks); returns how many registries went with it. `default` is never
    deleted; a workspace that owns registries only with `force`."""
    if name == DEFAULT_WORKSPACE:
        raise InputError(f"workspace {DEFAULT_WORKSPACE!r} cannot be deleted: everything without a workspace is in it")
    workspace_id = _lock(session, name)
    owned = int(session.scalar(select(func.count()).where(registries.c.workspace_id == workspace_id)) or 0)
    if owned and not force:
        raise ConflictError(
            f"workspace {name!r} owns {owned} registr{'y: remove it' if owned == 1 else 'ies: remove them'} first, "
            "or delete the workspace with --force (its registries' snapshots and events go with it)"
        )
    session.execute(delete(workspaces).where(workspaces.c.id == workspace_id))  # the rest cascades
    return owned


# ---- quotas at registration -----------------------------------------------------------------------
def _lock(session: Db, name: str) -> int:
    """The id of workspace `name`, its row write-locked until the transaction ends: a row lock on
    PostgreSQL, the database's write lock on SQLite (taken by this first write, so what is read after it
    is the newest). An UPDATE, not SELECT ... FOR UPDATE, because SQLite has no such thing; it changes
    nothing and no column a foreign key uses, so it does not block rows being added to the workspace."""
    if "\x00" in name:
        raise missing(name)
    touched = session.execute(
        update(workspaces).where(workspaces.c.name == name).values(max_registries=workspaces.c.max_registries)
    )
    if not getattr(touched, "rowcount", 0):
        raise missing(name)
    return find_id(session, name)


def admit(session: Db, workspace: str, specs: Sequence[RegistrySpec], *, lock: bool = True) -> int:
    """Check registrations about to be saved in `workspace` against its quotas, all before any is saved;
    returns the workspace's id. QuotaError naming the quota and the workspace when one refuses them:
    `max_registries` counts the new names; `min_interval` applies to a new registry and to a changed
    interval (a registry registered before the quota keeps its interval until it is changed). With `lock`
    (in the transaction that saves) the workspace row is locked first (`_lock`); without it (a check before
    contacting the registries) nothing is locked."""
    workspace_id = _lock(session, workspace) if lock else find_id(session, workspace)
    quota = session.execute(
        select(workspaces.c.max_registries, workspaces.c.min_interval_seconds).where(workspaces.c.id == workspace_id)
    ).one()
    if quota.max_registries is None and quota.min_interval_seconds is None:
        return workspace_id
    listed = select(registries.c.name, registries.c.interval_seconds).where(registries.c.workspace_id == workspace_id)
    held: dict[str, int] = {name: interval for name, interval in session.execute(listed)}
    if quota.min_interval_seconds is not None:
        _check_min_interval(workspace, quota.min_interval_seconds, specs, held)
    new = sorted({spec.name for spec in specs} - set(held))
    if new and quota.max_registries is not None and len(held) + len(new) > quota.max_registries:
        what = f"registry {new[0]!r}" if len(new) == 1 else f"{len(new)} new registries"
        raise QuotaError(
            f"{what} refused: workspace {workspace!r} has {len(held)} of its max_registries quota of "
            f"{quota.max_registries}; nothing was saved (an operator raises it with `watcher workspace quota`)"
        )
    return workspace_id


def _check_min_interval(workspace: str, seconds: int, specs: Sequence[RegistrySpec], held: dict[str, int]) -> None:
    from watcher.registrations.spec import format_interval

    for spec in specs:
        if spec.interval_seconds < seconds and held.get(spec.name) != spec.interval_seconds:
            raise QuotaError(
                f"registry {spec.name!r}: --interval {format_interval(spec.interval_seconds)} is under the "
                f"min_interval quota of workspace {workspace!r} ({format_interval(seconds)}); nothing was saved",
                field="interval",
            )
