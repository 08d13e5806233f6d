"""Providers by name: each lists one kind of registry; `poller_for` picks the one a registry needs.

Provider modules are imported on first use, so a command that never meets a cloud does not pay for
importing its SDK; what a command that only shows registries needs of a provider (which credential fields
are secret) is known here without importing it (tests/pollers/test_providers.py checks it agrees).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from watcher.errors import InputError

if TYPE_CHECKING:
    from watcher.pollers.base import Poller
    from watcher.registrations.spec import RegistrySpec

_PROVIDERS = {
    "oci": "watcher.pollers.oci:OciPoller",
    "ecr": "watcher.pollers.ecr:EcrPoller",
    "acr": "watcher.pollers.acr:AcrPoller",
    "gcr": "watcher.pollers.gcr:GcrPoller",
    "dockerhub": "watcher.pollers.dockerhub:DockerHubPoller",
}
PROVIDER_NAMES = tuple(_PROVIDERS)
#: each provider's `Poller.secret_fields`: the credentials shown only as `set`
SECRET_FIELDS: dict[str, frozenset[str]] = {
    "oci": frozenset({"password"}),
    "ecr": frozenset({"secret_key"}),
    "acr": frozenset({"password", "client_secret"}),
    "gcr": frozenset({"json_key"}),
    "dockerhub": frozenset({"password"}),
}


def provider_class(name: str) -> type[Poller]:
    try:
        module, _, cls = _PROVIDERS[name].partition(":")
    except KeyError:
        raise InputError(f"unknown provider {name!r}: use one of {', '.join(PROVIDER_NAMES)}") from None
    found: type[Poller] = getattr(import_module(module), cls)
    return found


def secret_fields(name: str) -> frozenset[str]:
    """The credential fields of provider `name` that are never shown, without importing the provider."""
    if name not in SECRET_FIELDS:
        raise InputError(f"unknown provider {name!r}: use one of {', '.join(PROVIDER_NAMES)}")
    return SECRET_FIELDS[name]


def poller_for(spec: RegistrySpec) -> Poller:
    return provider_class(spec.provider)(spec)
