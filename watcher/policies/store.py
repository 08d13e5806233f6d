"""Creating, replacing and removing policies, each in one transaction with its first evaluation.

Every door (`watcher policy add`, a `registry apply` file, `PUT /api/v1/policies/{name}`) builds a
`PolicySpec` — each value checked, one `InputError` line for the first that is not — and hands it to `save`,
which writes the row and evaluates the policy against the stored snapshot in the same transaction: when that
changes its selection (a new policy that finds a tag, an edit that selects another), the `selected` event is
written with it, to the same outbox as a poll's. A policy belongs to the workspace it is saved in, and names a
registry of that workspace (another workspace's registry is missing, exactly like one that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from watcher import schema
from watcher.errors import InputError, NotFoundError
from watcher.outbox.events import event_rows
from watcher.policies.evaluation import evaluate_stored
from watcher.policies.strategies import Policy
from watcher.registrations.owned import check_name, insert_named, remove_named, shown
from watcher.registry.reference import repository_problem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from watcher.models import Event

POLICIES = schema.policies
REGISTRIES = schema.registries


@dataclass(frozen=True)
class PolicySpec:
    """What a user says a policy is: its name, the repository it watches, and its strategy."""

    name: str
    registry: str
    repository: str
    policy: Policy

    @classmethod
    def build(cls, name: object, registry: object, repository: object, **options: Any) -> PolicySpec:
        """Checked: the name, the registry's name, the repository, then `Policy.from_options(**options)`."""
        check_name(name, "policy name")
        check_name(registry, "--registry", "registry")
        problem = repository_problem(repository)
        if problem is not None:
            raise InputError(f"--repository {shown(repository)} {problem}", field="repository")
        assert isinstance(repository, str)
        assert isinstance(name, str) and isinstance(registry, str)
        return cls(name, registry, repository, Policy.from_options(**options))

    def options(self) -> dict[str, Any]:
        """The spec as `build` takes it (an `apply` file's entry, the API's body)."""
        return {"name": self.name, "registry": self.registry, "repository": self.repository, **self.policy.options()}


@dataclass(frozen=True)
class Saved:
    """What `save` did: `created` (else it replaced, or found the policy as it was) and the events written."""

    created: bool
    changed: bool
    events: list[Event]


@dataclass(frozen=True)
class _Owner:
    registry_id: int
    registry: str
    url: str
    workspace: str
    workspace_id: int


def save(session: Session, spec: PolicySpec, *, workspace_id: int, replace: bool = False) -> Saved:
    """Create the policy (or, with `replace`, put this definition in place of the one of that name) and
    evaluate it; a policy of that name without `replace` is an InputError."""
    owner = _owner(session, spec.registry, workspace_id)
    row = session.execute(
        select(POLICIES).where(POLICIES.c.workspace_id == workspace_id, POLICIES.c.name == spec.name).with_for_update()
    ).first()
    taken = InputError(
        f"policy {spec.name!r} exists: remove it first (`watcher policy rm {spec.name}`), or edit it with "
        "`watcher registry apply`",
        field="name",
    )
    if row is not None and not replace:
        raise taken
    now = schema.utcnow()
    values = {"registry_id": owner.registry_id, "repository": spec.repository, **_definition(spec.policy)}
    if row is None:
        statement = insert(POLICIES).values(workspace_id=workspace_id, name=spec.name, created_at=now, updated_at=now)
        policy_id = insert_named(session, statement.values(**values), taken).inserted_primary_key[0]
        changed = True
    else:
        policy_id = row.id
        changed = any(getattr(row, key) != value for key, value in values.items())
        if changed:
            session.execute(update(POLICIES).where(POLICIES.c.id == row.id).values(**values, updated_at=now))
    events = evaluate_stored(session, owner, spec.repository, policy_id) if changed else []
    if events:
        session.execute(insert(schema.events), event_rows(events))
    return Saved(row is None, changed, events)


def remove(session: Session, name: str, *, workspace_id: int) -> None:
    """Forget the policy (its `selected` events stay in the history), or NotFoundError naming it."""
    if not remove_named(session, POLICIES, name, workspace_id=workspace_id):
        raise missing(name)


def missing(name: str) -> NotFoundError:
    return NotFoundError(f"no policy named {shown(name)}: see `watcher policy list`")


def _definition(policy: Policy) -> dict[str, Any]:
    return {
        "strategy": policy.strategy.value,
        "argument": policy.argument,
        "filter": policy.filter,
        "extract": policy.extract,
        "prerelease": policy.prerelease,
    }


def _owner(session: Session, registry: str, workspace_id: int) -> _Owner:
    """The registry named `registry` in the workspace, with what an event names it by; NotFoundError else."""
    reg, ws = REGISTRIES.c, schema.workspaces.c
    row = session.execute(
        select(reg.id, reg.name, reg.url, ws.name.label("workspace"))
        .join(schema.workspaces, ws.id == reg.workspace_id)
        .where(reg.workspace_id == workspace_id, reg.name == registry)
    ).first()
    if row is None:
        raise NotFoundError(f"no registry named {registry!r}: see `watcher registry list`")
    return _Owner(row.id, row.name, row.url, row.workspace, workspace_id)
