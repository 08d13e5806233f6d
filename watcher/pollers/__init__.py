"""Providers by name: each lists one kind of registry; `poller_for` picks the one a registry needs."""

from __future__ import annotations

from watcher.errors import InputError
from watcher.pollers.base import Poller
from watcher.pollers.oci import OciPoller
from watcher.spec import RegistrySpec

PROVIDERS: dict[str, type[Poller]] = {cls.provider: cls for cls in (OciPoller,)}


def provider_class(name: str) -> type[Poller]:
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise InputError(f"unknown provider {name!r}: use one of {known}") from None


def poller_for(spec: RegistrySpec) -> Poller:
    return provider_class(spec.provider)(spec)
