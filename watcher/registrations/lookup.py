"""A registered registry found by its key and read back as its spec, without the ORM.

`watcher poll NAME` must reach its first request to the registry quickly, and most of its start is imports:
the ORM and the declarative classes alone are ~60 ms. So a poll's start finds its registry here, in
SQLAlchemy Core on `watcher.schema`'s tables (a Core row, its workspace's name as `workspace`), and reads
its spec from that row; `watcher.registrations.store.find` builds its ORM query with the same `by_key`, so
both look a key up the same way (tests/cli/test_cli_imports.py checks what a poll imports before its first
request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import select

from watcher.read.views import askable, missing
from watcher.registrations.keys import split_key
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID
from watcher.schema import registries as REGISTRIES
from watcher.schema import workspaces as WORKSPACES

if TYPE_CHECKING:
    from sqlalchemy import Connection, Row, Select
    from sqlalchemy.orm import Session

S = TypeVar("S", bound="Select[Any]")
#: the registry's workspace's name, as a column: its own FROM even in a query joined to the workspaces
WORKSPACE_NAME = (
    select(WORKSPACES.c.name)
    .where(WORKSPACES.c.id == REGISTRIES.c.workspace_id)
    .correlate_except(WORKSPACES)
    .scalar_subquery()
)


class StoredRegistry(Protocol):
    """What a registry's row holds that its spec and its poll read: an ORM `Registry` or a Core row of
    `find_row`."""

    @property
    def id(self) -> int: ...
    @property
    def workspace_id(self) -> int: ...
    @property
    def workspace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def credentials(self) -> str: ...
    @property
    def options(self) -> dict[str, Any]: ...
    @property
    def interval_seconds(self) -> int: ...
    @property
    def emit_existing(self) -> bool: ...
    @property
    def baselined(self) -> bool: ...


def by_key(query: S, key: str) -> S:
    """`query` of registries narrowed to the registry of `key` (`watcher.registrations.keys`: `NAME` in
    workspace `default`, else `WORKSPACE/NAME`); NotFoundError for a name no registry can have."""
    workspace, name = split_key(key)
    query = query.where(REGISTRIES.c.name == askable(name))
    if workspace == DEFAULT_WORKSPACE:
        return query.where(REGISTRIES.c.workspace_id == DEFAULT_WORKSPACE_ID)
    on = WORKSPACES.c.id == REGISTRIES.c.workspace_id
    return query.join(WORKSPACES, on).where(WORKSPACES.c.name == askable(workspace))


def not_found(key: str) -> Exception:
    """The read model's one line for a missing registry, naming only the name, whichever workspace."""
    return missing(split_key(key)[1])


def find_row(reader: Connection | Session, key: str) -> Row[Any]:
    """The row of the registry of `key` with its workspace's name, in one query; NotFoundError naming only
    the name when there is none — in that workspace, or at all."""
    row = reader.execute(by_key(select(REGISTRIES, WORKSPACE_NAME.label("workspace")), key)).first()
    if row is None:
        raise not_found(key)
    return row


def spec_of(row: StoredRegistry) -> RegistrySpec:
    """The registry as registered; raises Undecryptable naming it when its credentials cannot be decrypted."""
    from watcher.registrations import vault

    try:
        credentials = vault.decrypt(row.credentials)
    except vault.Undecryptable as exc:
        raise vault.Undecryptable(f"registry {row.name!r}: credentials {exc}") from None
    return RegistrySpec(
        name=row.name,
        provider=row.provider,
        url=row.url,
        credentials=credentials,
        options=dict(row.options or {}),
        interval_seconds=row.interval_seconds,
        emit_existing=row.emit_existing,
        workspace=row.workspace,
    )
