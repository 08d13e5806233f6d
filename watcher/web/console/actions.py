"""What the console's forms do, in one place: validate, test and save a registry, and queue a poll.

Each raises a `watcher.errors.WatcherError` whose message is one line and whose `field` names the form
field at fault (None when no one field is), so the page can show the cause next to that field.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from watcher import registries
from watcher.db import session_scope
from watcher.errors import (
    AuthError,
    ConflictError,
    InputError,
    PermissionError_,
    RegistryError,
    ScopeError,
    TLSError,
    UnreachableError,
)
from watcher.forms import build_spec
from watcher.models import Registry
from watcher.spec import RegistrySpec
from watcher.web.console.providers import password_field

_OPTION = re.compile(r"--([a-z][a-z-]*)")
_SCOPE_FIELDS = {"dockerhub": "namespace", "ecr": "region", "gcr": "project_id"}


def validate(values: dict[str, Any]) -> None:
    """Check the values as `registry apply` would, contacting nothing."""
    _spec(values)


def test(values: dict[str, Any]) -> None:
    """Validate, then ping, authenticate and list the registry as `registry add` does; saves nothing."""
    _verify(_spec(values), values)


def save(values: dict[str, Any]) -> None:
    """Register a new registry: validated, tested, and only then saved (nothing is saved on failure)."""
    spec = _spec(values)
    with session_scope() as session:
        _refuse_existing(session, spec.name)
    _verify(spec, values)
    with session_scope() as session:
        _refuse_existing(session, spec.name)  # unless it was added meanwhile
        registries.save(session, spec)


def queue_poll(name: str) -> str:
    """Queue a poll of `name` now, as beat's tick does; returns the queued task's id."""
    from watcher.tasks.jobs import poll_registry

    with session_scope() as session:
        registries.find(session, name)
    return str(poll_registry.delay(name).id)


def _spec(values: dict[str, Any]) -> RegistrySpec:
    try:
        return build_spec(values, stdin_allowed=False)
    except InputError as exc:
        if exc.field is None:
            exc.field = field_of(str(exc))
        raise


def _refuse_existing(session: Session, name: str) -> None:
    if session.scalar(select(Registry.id).where(Registry.name == name)) is not None:
        raise ConflictError(f"registry {name!r} already exists: pick another name", field="name")


def _verify(spec: RegistrySpec, values: dict[str, Any]) -> None:
    from watcher.cli import verify

    try:
        verify(spec)
    except RegistryError as exc:
        exc.field = registry_error_field(exc, spec.provider, values)
        raise


def registry_error_field(exc: RegistryError, provider: str, values: dict[str, Any]) -> str | None:
    """The form field a registry's refusal points at."""
    if isinstance(exc, AuthError | PermissionError_):
        return password_field(provider, values)
    if isinstance(exc, UnreachableError | TLSError):
        return "url"
    if isinstance(exc, ScopeError):
        return _SCOPE_FIELDS.get(provider, "repositories")
    return None


def field_of(message: str) -> str | None:
    """The field a validation message is about, when the message names one (`--region …`, `URL …`)."""
    option = _OPTION.search(message)
    if option:
        name = option.group(1).replace("-", "_")
        return "repositories" if name == "repository" else name
    lowered = message.lower()
    for needle, field in (
        ("registry name", "name"),
        ("url", "url"),
        ("interval", "interval"),
        ("provider", "provider"),
    ):
        if needle in lowered:
            return field
    return None
