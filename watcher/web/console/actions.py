"""What the console's forms do, in one place: validate, test and save a registry, and queue a poll.

Each raises a `watcher.errors.WatcherError` whose message is one line and whose `field` names the form
field at fault (None when no one field is), so the page can show the cause next to that field.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from watcher.errors import InputError
from watcher.registrations.forms import build_spec
from watcher.registrations.registration import register, verify
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE

_OPTION = re.compile(r"--([a-z][a-z-]*)")


def validate(values: dict[str, Any]) -> None:
    """Check the values as `registry apply` would, contacting nothing."""
    _spec(values, DEFAULT_WORKSPACE)


def test(values: dict[str, Any], *, workspace: str) -> None:
    """Validate, then ping, authenticate and list the registry as `registry add` does; saves nothing."""
    verify(_spec(values, workspace))


def save(values: dict[str, Any], *, workspace: str) -> None:
    """Register a new registry in `workspace` (the one the console shows): validated, tested, and only then
    saved (nothing is saved on failure)."""
    register(_spec(values, workspace))


def _spec(values: dict[str, Any], workspace: str) -> RegistrySpec:
    try:
        return dataclasses.replace(build_spec(values, source="remote"), workspace=workspace)
    except InputError as exc:
        if exc.field is None:
            exc.field = field_of(str(exc))
        raise


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
