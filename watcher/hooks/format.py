"""What a webhook format is: how its sender authenticates, what the receiver hands it, and the receiver
it configures. Types only, so each format's module and the receiver share them without importing each other."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher.errors import WatcherError

if TYPE_CHECKING:
    from watcher.registrations.spec import RegistrySpec


class Malformed(WatcherError):
    """The body is not a notification of the registry's format."""


class Auth(enum.Enum):
    """How a format's sender proves it knows the secret."""

    #: `Authorization: Bearer SECRET` (or the bare secret as the whole value)
    HEADER = "header"
    #: the secret is the URL's last segment: `/hooks/v1/NAME/SECRET` (the sender cannot send a header)
    PATH = "path"
    #: `X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of the body under the secret
    HMAC = "hmac"
    #: a Google-signed OIDC token whose audience is the receiver's URL (Pub/Sub push)
    OIDC = "oidc"


@dataclass(frozen=True)
class Notification:
    """What the receiver hands a format: the raw body (≤ 1 MB), its content type, and the registry's URL
    (for formats that name images by their full reference, to strip the registry's own host) and options
    (gcr's `project_id`: a Pub/Sub message names images of every project)."""

    body: bytes
    content_type: str | None
    registry_url: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HookFormat:
    name: str
    auth: Auth
    #: the repositories a notification says to list again, each once, in order; raises Malformed
    repositories: Callable[[Notification], list[str]]
    #: the registry-side set-up, ready to paste
    setup: Callable[[Webhook], str]
    #: the tags a notification says were pushed, by repository, for formats that name them; a listing that
    #: does not show one yet is made once more a moment later (`watcher.polling.queue.CONFIRM_SECONDS`)
    pushed: Callable[[Notification], dict[str, list[str]]] | None = None
    #: raises InputError for a registry this format cannot serve (called when the receiver is enabled)
    check: Callable[[RegistrySpec], None] | None = None


@dataclass(frozen=True, repr=False)
class Webhook:
    """A registry's receiver as `watcher registry webhook` shows it (never logged: no repr)."""

    #: the registry's key (`watcher.registrations.keys`): `NAME` in workspace `default`, else `WORKSPACE/NAME`
    registry: str
    url: str
    secret: str
    format: str
    enabled: bool
    #: the registry's own URL (the set-up of some formats names its host, account or region)
    registry_url: str = ""

    @property
    def resource_name(self) -> str:
        """`watcher-NAME` (workspace `default`) or `watcher-WORKSPACE--NAME`: what the set-up calls the objects
        it creates on the registry's side (an EventBridge rule, a Pub/Sub subscription), whose names allow
        no `/`."""
        return "watcher-" + self.registry.replace("/", "--")

    def as_json(self) -> dict[str, object]:
        return {"url": self.url, "secret": self.secret, "format": self.format, "enabled": self.enabled}
