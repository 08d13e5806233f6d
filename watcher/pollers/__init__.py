"""Providers by name: each lists one kind of registry; `poller_for` picks the one a registry needs.

Provider modules are imported on first use, so a command that never meets a cloud does not pay for
importing its SDK.
"""

from __future__ import annotations

from importlib import import_module

from watcher.errors import InputError
from watcher.pollers.base import Poller
from watcher.spec import RegistrySpec

_PROVIDERS = {
    "oci": "watcher.pollers.oci:OciPoller",
    "ecr": "watcher.pollers.ecr:EcrPoller",
    "acr": "watcher.pollers.acr:AcrPoller",
    "gcr": "watcher.pollers.gcr:GcrPoller",
    "dockerhub": "watcher.pollers.dockerhub:DockerHubPoller",
}
PROVIDER_NAMES = tuple(_PROVIDERS)


def provider_class(name: str) -> type[Poller]:
    try:
        module, _, cls = _PROVIDERS[name].partition(":")
    except KeyError:
        raise InputError(f"unknown provider {name!r}: use one of {', '.join(PROVIDER_NAMES)}") from None
    found: type[Poller] = getattr(import_module(module), cls)
    return found


def poller_for(spec: RegistrySpec) -> Poller:
    return provider_class(spec.provider)(spec)
