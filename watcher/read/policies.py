"""The read model's questions about policies: which exist in a workspace, what one selects now, and its
selection history. Shared by `watcher policy list|show`, `/api/v1/policies` and the console's policy pages.

Like every question of `watcher.read.model`, each is asked within one workspace (`workspace_id`, required):
a policy of another workspace is missing, exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from watcher.errors import NotFoundError
from watcher.policies.strategies import Policy
from watcher.read.model import EVENT_COLUMNS, askable, check_limit, pull_host
from watcher.read.views import rfc3339_or_none
from watcher.schema import events as EVENTS
from watcher.schema import policies as POLICIES
from watcher.schema import registries as REGISTRIES

if TYPE_CHECKING:
    from watcher.read.model import Reader


@dataclass(frozen=True)
class PolicyView:
    """One policy, its strategy as options and as a line, and what it selects now."""

    name: str
    registry: str
    repository: str
    options: dict[str, Any]
    strategy: str
    host: str
    tag: str | None
    digest: str | None
    since: datetime | None
    considered: int
    ignored: int
    evaluated_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def reference(self) -> str | None:
        """`HOST/REPOSITORY:TAG@DIGEST`, the image to deploy (None: it selects nothing)."""
        if self.tag is None:
            return None
        return f"{self.host}/{self.repository}:{self.tag}@{self.digest}"

    def as_json(self) -> dict[str, Any]:
        selected = None
        if self.tag is not None:
            selected = {
                "tag": self.tag,
                "digest": self.digest,
                "reference": self.reference,
                "since": rfc3339_or_none(self.since),
            }
        return {
            "name": self.name,
            "registry": self.registry,
            "repository": self.repository,
            "policy": self.options,
            "strategy": self.strategy,
            "selected": selected,
            "considered": self.considered,
            "ignored": self.ignored,
            "evaluated_at": rfc3339_or_none(self.evaluated_at),
            "created_at": rfc3339_or_none(self.created_at),
            "updated_at": rfc3339_or_none(self.updated_at),
        }


def policies(reader: Reader, *, workspace_id: int, registry: str | None = None) -> list[PolicyView]:
    """The workspace's policies (of one registry, if named), by name."""
    query = _query(workspace_id)
    if registry is not None:
        query = query.where(REGISTRIES.c.name == askable(registry))
    return [_view(row) for row in reader.execute(query.order_by(POLICIES.c.name))]


def policy(reader: Reader, name: str, *, workspace_id: int) -> PolicyView:
    """One policy, or NotFoundError naming it."""
    row = reader.execute(_query(workspace_id).where(POLICIES.c.name == _askable(name))).first()
    if row is None:
        raise missing(name)
    return _view(row)


def selection_history(reader: Reader, name: str, *, workspace_id: int, limit: int = 50) -> list[Any]:
    """The policy's `selected` events, newest first (rows of `EVENT_COLUMNS`): its history survives an edit,
    and a removal (the events stay), so it is asked by name."""
    check_limit(limit)
    query = (
        select(*EVENT_COLUMNS)
        .where(EVENTS.c.workspace_id == workspace_id, EVENTS.c.policy == _askable(name))
        .order_by(EVENTS.c.id.desc())
        .limit(limit)
    )
    return list(reader.execute(query))


def missing(name: str) -> NotFoundError:
    return NotFoundError(f"no policy named {name!r}: see `watcher policy list`")


def _askable(name: str) -> str:
    if "\x00" in name:
        raise missing(name)
    return name


def _query(workspace_id: int) -> Any:
    return (
        select(POLICIES, REGISTRIES.c.name.label("registry_name"), REGISTRIES.c.url.label("registry_url"))
        .join(REGISTRIES, REGISTRIES.c.id == POLICIES.c.registry_id)
        .where(POLICIES.c.workspace_id == workspace_id)
    )


def _view(row: Any) -> PolicyView:
    policy = Policy.stored(row)
    return PolicyView(
        name=row.name,
        registry=row.registry_name,
        repository=row.repository,
        options=policy.options(),
        strategy=policy.describe(),
        host=pull_host(row.registry_url),
        tag=row.selected_tag,
        digest=row.selected_digest,
        since=row.selected_at,
        considered=row.considered,
        ignored=row.ignored,
        evaluated_at=row.evaluated_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
