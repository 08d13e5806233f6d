"""Registering a registry, whichever door it comes through (`registry add`, the API, the console): test the
connection, then create it — and the error, when there is one, names the input at fault.

`verify` is bounded like a poll: the registry's `--poll-timeout` is its deadline, so a registry that
trickles its answer cannot hold a command or a request forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from watcher.db import session_scope
from watcher.errors import AuthError, PermissionError_, RegistryError, ScopeError, TLSError, UnreachableError
from watcher.models import Registry
from watcher.pollers import poller_for
from watcher.registrations import store as registries
from watcher.registrations import workspaces
from watcher.registrations.spec import RegistrySpec, format_interval
from watcher.registry.deadline import run_bounded

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: where a "not found" points, per provider
_SCOPE_FIELDS = {"dockerhub": "namespace", "ecr": "region", "gcr": "project_id"}


def register(spec: RegistrySpec, *, verify_first: bool = True) -> None:
    """Create a new registry in its workspace after testing it; an existing name, a workspace that does not
    exist and a quota that refuses it are refused before anything is contacted, and a racing registration
    of the same name loses at the insert with the same ConflictError (`store.create`)."""
    with session_scope() as session:
        workspace_id = workspaces.find_id(session, spec.workspace)
        taken = select(Registry.id).where(Registry.workspace_id == workspace_id, Registry.name == spec.name)
        if session.scalar(taken) is not None:
            raise registries.already_exists(spec.name)
        workspaces.admit(session, spec.workspace, [spec], lock=False)
    if verify_first:
        verify(spec)
    with session_scope() as session:
        registries.create(session, spec)


def admissible(specs: Sequence[RegistrySpec]) -> None:
    """The quotas' verdict on `specs` (of one workspace) before any registry is contacted; they are checked
    again, locked, in the transaction that saves them."""
    if specs:
        with session_scope() as session:
            workspaces.admit(session, specs[0].workspace, specs, lock=False)


def apply(
    specs: Sequence[RegistrySpec], *, verify_first: bool = True, then: Callable[[Session], None] | None = None
) -> list[tuple[str, str]]:
    """Create or update `specs` (of one workspace) all or nothing: the quotas are checked for all of them,
    then each is tested, then all are saved in one transaction — with `then`'s work after them (a file's
    policies: `watcher.policies.applying`); (name, outcome) for each."""
    admissible(specs)
    if verify_first:
        for spec in specs:
            verify(spec)
    with session_scope() as session:
        if specs:
            workspaces.admit(session, specs[0].workspace, specs)
        together = len(specs) > 1  # a batch takes its baselines spread over its interval
        saved = [(spec.name, registries.save(session, spec, together=together, admitted=True)[1]) for spec in specs]
        if then is not None:
            then(session)
        return saved


def verify(spec: RegistrySpec, stop: threading.Event | None = None) -> None:
    """Ping, authenticate and list: raises the precise RegistryError, named for the registry, with the
    field it concerns."""

    async def run() -> None:
        poller = poller_for(spec)
        try:
            await poller.verify()
        finally:
            await poller.aclose()

    seconds = spec.poll_timeout()
    try:
        run_bounded(
            run,
            seconds=seconds,
            stop=stop or threading.Event(),
            deadline_message=f"the test exceeded its {format_interval(int(seconds))} deadline (--poll-timeout)",
        )
    except RegistryError as exc:
        exc.registry = spec.name
        exc.field = field_at_fault(exc, spec)
        raise


def secret_field(spec: RegistrySpec) -> str:
    """The input holding the secret a registry checks, for this provider and these credentials."""
    if spec.provider == "acr" and any(spec.credentials.get(k) for k in ("tenant_id", "client_id", "client_secret")):
        return "client_secret"
    return {"ecr": "secret_key", "gcr": "json_key"}.get(spec.provider, "password")


def field_at_fault(exc: RegistryError, spec: RegistrySpec) -> str | None:
    """The input a registry's refusal points at, if one does."""
    if isinstance(exc, AuthError | PermissionError_):
        return secret_field(spec)
    if isinstance(exc, UnreachableError | TLSError):
        return "url"
    if isinstance(exc, ScopeError):
        return _SCOPE_FIELDS.get(spec.provider, "repositories")
    return None
