"""Policies in a `registry apply` file: a top-level `policies:` list beside `registries:`.

Each entry is typed as strictly as a registry's (`PolicyEntry`: unknown keys refused by name, `newest_build`
and `prerelease` real booleans, a range a string — `semver: 1.2` is a number and is refused, not read as
`1.2.0`), then built by `PolicySpec.build`, the same checks as `watcher policy add`. Values are taken as
written: no `${VAR}` expansion, so an `extract: '${ts}'` stays the name of a group.

The file is all or nothing. Every entry of both lists is checked, and every policy's registry is found in
the file or among the workspace's registries, before anything is contacted or saved; then the registries
are tested and saved, and the policies created or replaced in the same transaction, in the file's order,
each with its first evaluation and its `selected` event (`watcher.policies.store.save`). Policies the file
does not name are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from watcher.errors import InputError
from watcher.policies.store import PolicySpec, save
from watcher.registrations.applyfile import entries_of, read_document, schema_error, specs_of
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from watcher.models import Event


class PolicyEntry(BaseModel):
    """One entry of `policies:`, typed: what `watcher policy add` takes, as YAML values."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    registry: str
    repository: str
    semver: str | None = None
    numeric: str | None = None
    alphabetical: str | None = None
    newest_build: bool | None = None
    digest: str | None = None
    filter: str | None = None
    extract: str | None = None
    prerelease: bool | None = None


#: what each key takes, in the words of the one-line error
EXPECTED = {
    "semver": "a range as a string (quote it: '1.2')",
    "numeric": "asc or desc",
    "alphabetical": "asc or desc",
    "newest_build": "true or false (unquoted)",
    "digest": "a tag as a string (quote it)",
    "prerelease": "true or false (unquoted)",
}


@dataclass(frozen=True)
class ApplyFile:
    """A `registry apply` file, checked: its registries and its policies, in the file's order."""

    registries: list[RegistrySpec]
    policies: list[PolicySpec] = field(default_factory=list)
    source: str = "the file"  # what a failure names it by: its path


@dataclass(frozen=True)
class Applied:
    """What applying a file did: (kind, name, outcome) per entry — `created`, `updated` or `unchanged` —
    and the `selected` events written (to publish)."""

    outcomes: list[tuple[str, str, str]]
    events: list[Event]


def load(path: Path, *, workspace: str = DEFAULT_WORKSPACE) -> ApplyFile:
    """Every entry of the file, checked (its policies' registries not yet: see `apply`), or one InputError
    naming the file and the entry."""
    try:
        document = read_document(path)
        return ApplyFile(specs_of(document, path, workspace=workspace), policy_specs_of(document, path), str(path))
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None


def policy_specs_of(document: Any, path: Path) -> list[PolicySpec]:
    specs = []
    for number, entry in enumerate(entries_of(document, "policies"), 1):
        name = entry.get("name")
        named = isinstance(name, str) and len(name) <= 63
        where = f"{path}: policy #{number}" + (f" ({name})" if named else "")
        try:
            values = typed_policy(entry)
            specs.append(
                PolicySpec.build(values.pop("name"), values.pop("registry"), values.pop("repository"), **values)
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"policy {duplicates[0]!r} appears twice")
    return specs


def typed_policy(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry checked against PolicyEntry (keys may use '-' or '_'), as `PolicySpec.build`'s arguments."""
    values = {str(key).replace("-", "_"): value for key, value in entry.items()}
    if len(values) < len(entry):
        raise InputError("a setting is given twice (once with '-' and once with '_')")
    try:
        checked = PolicyEntry.model_validate(values)
    except ValidationError as exc:
        raise InputError(schema_error(exc, EXPECTED)) from None
    return checked.model_dump(exclude_none=True)


def apply(file: ApplyFile, *, workspace: str = DEFAULT_WORKSPACE, verify_first: bool = True) -> Applied:
    """Apply the file in `workspace`, all or nothing (see the module's note)."""
    from watcher.registrations.registration import apply as apply_registries

    check_registries(file, workspace)
    outcomes: list[tuple[str, str, str]] = []
    events: list[Event] = []

    def save_policies(session: Session) -> None:
        outcomes.extend(("policy", name, outcome) for name, outcome in _save(session, file.policies, workspace, events))

    saved = apply_registries(file.registries, verify_first=verify_first, then=save_policies)
    return Applied([("registry", name, outcome) for name, outcome in saved] + outcomes, events)


def check_registries(file: ApplyFile, workspace: str) -> None:
    """Each policy's registry is in the file or already in the workspace; else one line naming the policy."""
    if not file.policies:
        return
    from sqlalchemy import select

    from watcher.db import read_scope
    from watcher.read.model import workspace_id_of
    from watcher.schema import registries

    wanted = {spec.registry for spec in file.policies} - {spec.name for spec in file.registries}
    with read_scope() as reader:
        workspace_id = workspace_id_of(reader, workspace)
        query = select(registries.c.name).where(
            registries.c.workspace_id == workspace_id, registries.c.name.in_(sorted(wanted))
        )
        known = set(reader.execute(query).scalars())
    for number, spec in enumerate(file.policies, 1):
        if spec.registry in wanted - known:
            raise InputError(
                f"{file.source}: policy #{number} ({spec.name}): no registry named {spec.registry!r} in the file "
                "or the workspace: add it to `registries:`, or with `watcher registry add`",
                field="registry",
            )


def _save(session: Session, specs: Sequence[PolicySpec], workspace: str, events: list[Event]) -> list[tuple[str, str]]:
    from watcher.registrations.workspaces import find_id

    if not specs:
        return []
    session.flush()  # the registries just saved, for the policies' Core queries
    workspace_id = find_id(session, workspace)
    outcomes = []
    for spec in specs:
        saved = save(session, spec, workspace_id=workspace_id, replace=True)
        events.extend(saved.events)
        outcomes.append((spec.name, "created" if saved.created else "updated" if saved.changed else "unchanged"))
    return outcomes
