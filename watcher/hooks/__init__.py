"""Reading registries' notifications: which repositories each says to list again, and nothing more.

A notification is a hint, never the truth: it only names repositories, which are then listed and diffed
exactly as a scheduled poll would (`watcher.repopoll`). So no format looks at tags or digests beyond "the
event is about a manifest": a forged or replayed notification costs a listing, never an event.

Each format lives in its own module and is described by one `HookFormat`: how its sender authenticates
(`Auth`), how its body names repositories, and what to configure on the registry's side. The receiver
(`watcher.web.routes.hooks`) and `watcher registry webhook` look formats up in FORMATS.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher.errors import WatcherError

if TYPE_CHECKING:
    from watcher.spec import RegistrySpec
    from watcher.webhooks import Webhook


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
    #: does not show one yet is made once more a moment later (`watcher.queue.CONFIRM_SECONDS`)
    pushed: Callable[[Notification], dict[str, list[str]]] | None = None
    #: raises InputError for a registry this format cannot serve (called when the receiver is enabled)
    check: Callable[[RegistrySpec], None] | None = None


def _formats() -> dict[str, HookFormat]:
    from watcher.hooks import (
        acr,
        cloudevents,
        distribution,
        dockerhub,
        ecr_eventbridge,
        gcr_pubsub,
        github,
        harbor,
        quay,
    )

    received = (
        *(distribution.FORMAT, harbor.FORMAT, dockerhub.FORMAT, acr.FORMAT, quay.FORMAT, ecr_eventbridge.FORMAT),
        *(github.FORMAT, cloudevents.FORMAT, gcr_pubsub.FORMAT),
    )
    return {one.name: one for one in received}


FORMATS: dict[str, HookFormat] = _formats()
