"""Subscriptions: which of a workspace's events go to which endpoint, in which wire format, signed with
which secret.

Every door (`watcher subscription add`, the API, the console) builds a `SubscriptionSpec` — each value
checked, one `InputError` line for the first that is not — and `save`s it. An endpoint is someone else's
server: its URL is `http(s)://host[:port]/path` without credentials, and its host must resolve only to
addresses the network policy allows (checked here at `add`, and again at every delivery's connect, as DNS
can change). The secret is at least 32 random bytes (`whsec_` + base64, the Standard Webhooks form), or for
`github-dispatch` the token the user gives; it is encrypted at rest like registry credentials, shown once.
"""

from __future__ import annotations

import base64
import secrets
import socket
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select

from watcher import schema
from watcher.errors import InputError, NotFoundError
from watcher.outbox.events import CHANGES
from watcher.registrations import vault
from watcher.registrations.owned import check_name, insert_named, remove_named, shown

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

FORMATS = ("cloudevents", "cloudevents-structured", "slack", "teams", "github-dispatch")
MAX_URL_LENGTH = 2000
MAX_GLOB_LENGTH = 500
SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"
SUBSCRIPTIONS = schema.subscriptions


@dataclass(frozen=True)
class Filters:
    """Which events a subscription wants; an empty filter wants every event of the workspace."""

    registry: str = ""
    repository: str = ""  # a glob, as a registration's `--repository`
    changes: tuple[str, ...] = ()
    policy: str = ""

    def matches(self, event: Any) -> bool:
        """Whether the event (an Event, or a read-model row of one) is wanted."""
        if self.registry and event.registry_name != self.registry:
            return False
        if self.repository and not fnmatchcase(event.repository, self.repository):
            return False
        if self.changes and event.change not in self.changes:
            return False
        return not (self.policy and event.policy != self.policy)

    def as_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry or None,
            "repository": self.repository or None,
            "changes": list(self.changes) or None,
            "policy": self.policy or None,
        }

    @classmethod
    def stored(cls, value: Any) -> Filters:
        """The filters of a row's `filters` column."""
        value = value or {}
        return cls(
            value.get("registry") or "",
            value.get("repository") or "",
            tuple(value.get("changes") or ()),
            value.get("policy") or "",
        )


@dataclass(frozen=True)
class SubscriptionSpec:
    """What a user says a subscription is."""

    name: str
    url: str
    format: str
    filters: Filters = field(default_factory=Filters)

    @classmethod
    def build(
        cls,
        name: object,
        url: object,
        format: object = "cloudevents",
        *,
        registry: object = None,
        repository: object = None,
        changes: object = None,
        policy: object = None,
    ) -> SubscriptionSpec:
        """Checked, in order: the name, the URL, the format, then each filter."""
        checked_name = check_name(name, "subscription name")
        checked_format = _format(format)
        checked_url = check_url(url, checked_format)
        filters = Filters(
            check_name(registry, "--registry", "registry") if registry else "",
            _glob(repository) if repository else "",
            _changes(changes) if changes else (),
            check_name(policy, "--policy", "policy") if policy else "",
        )
        return cls(checked_name, checked_url, checked_format, filters)


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes: the Standard Webhooks secret form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def save(session: Session, spec: SubscriptionSpec, *, workspace_id: int, secret: str | None = None) -> str:
    """Create the subscription and return its secret (shown once). `github-dispatch` needs `secret` (the
    token GitHub authorizes with); the others get a new random one unless given one of at least 32 bytes."""
    if spec.format == "github-dispatch":
        if not secret:
            raise InputError(
                "--format github-dispatch needs --secret: a GitHub token that may dispatch", field="secret"
            )
    elif secret is None:
        secret = new_secret()
    else:
        _check_secret(secret)
    owned = SUBSCRIPTIONS.c.workspace_id == workspace_id
    taken = session.execute(select(SUBSCRIPTIONS.c.id).where(owned, SUBSCRIPTIONS.c.name == spec.name)).first()
    exists = InputError(f"subscription {spec.name!r} exists: remove it first or choose another name", field="name")
    if taken is not None:
        raise exists
    check_reachable(spec.url)
    insert_named(
        session,
        insert(SUBSCRIPTIONS).values(
            workspace_id=workspace_id,
            name=spec.name,
            url=spec.url,
            format=spec.format,
            filters=spec.filters.as_json(),
            secret=vault.keyring().encrypt(secret.encode()),
            created_at=schema.utcnow(),
        ),
        exists,
    )
    return secret


def remove(session: Session, name: str, *, workspace_id: int) -> None:
    """Forget the subscription and its deliveries (the events stay), or NotFoundError naming it."""
    if not remove_named(session, SUBSCRIPTIONS, name, workspace_id=workspace_id):
        raise missing(name)


def secret_of(row: Any) -> str:
    """A subscription row's secret, decrypted (with the key or one of its fallbacks)."""
    return vault.keyring().decrypt(row.secret).decode()


def missing(name: str) -> NotFoundError:
    return NotFoundError(f"no subscription named {shown(name)}: see `watcher subscription list`")


def check_url(url: object, format: str) -> str:
    """`http(s)://host[:port][/path][?query]`, no credentials, no fragment; for `github-dispatch` the
    `https://HOST/repos/OWNER/REPO/dispatches` endpoint."""
    usage = "use http(s)://HOST[:PORT]/PATH"
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isprintable() or " " in url:
        raise InputError(f"--url is not a URL: {usage} (at most {MAX_URL_LENGTH} characters)", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InputError(f"--url is not a URL: {usage}", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--url must be http or https with a host: {usage}", field="url")
    if parts.username is not None or parts.password is not None:
        raise InputError("--url must not hold credentials: the subscription's secret signs each request", field="url")
    if parts.fragment:
        raise InputError("--url must not have a #fragment", field="url")
    if format == "github-dispatch":
        segments = parts.path.strip("/").split("/")
        if parts.scheme != "https" or len(segments) != 4 or segments[0] != "repos" or segments[3] != "dispatches":
            raise InputError(
                "--format github-dispatch needs --url https://api.github.com/repos/OWNER/REPO/dispatches", field="url"
            )
    return url


def check_reachable(url: str) -> None:
    """The URL's host resolves, and only to addresses the network policy allows (`WATCHER_DENY_NETWORKS`,
    `WATCHER_ALLOW_NETWORKS`, and the always-refused link-local and metadata addresses)."""
    from watcher.registry.netpolicy import NetworkRefused, current_policy

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InputError(f"--url: the host {host!r} does not resolve", field="url") from None
    try:
        current_policy().checked(host, port, (str(address[0]) for *_, address in found))
    except NetworkRefused as exc:
        raise InputError(f"--url: {exc}", field="url") from None


def _check_secret(secret: str) -> None:
    material = secret.removeprefix(SECRET_PREFIX)
    try:
        size = len(base64.b64decode(material, validate=True))
    except ValueError:
        size = 0
    if size < SECRET_BYTES:
        raise InputError(f"--secret must be {SECRET_PREFIX} and the base64 of at least 32 bytes", field="secret")


def _format(value: object) -> str:
    if value not in FORMATS:
        raise InputError(f"--format {shown(value)} is not one of {', '.join(FORMATS)}", field="format")
    assert isinstance(value, str)
    return value


def _glob(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_GLOB_LENGTH or not value.isprintable():
        raise InputError(f"--repository must be a glob of at most {MAX_GLOB_LENGTH} characters", field="repository")
    return value


def _changes(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise InputError(f"--change takes a comma-separated list of {', '.join(CHANGES)}", field="changes")
    chosen: list[str] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if text not in CHANGES:
            raise InputError(f"--change {shown(text)} is not one of {', '.join(CHANGES)}", field="changes")
        if text not in chosen:
            chosen.append(text)
    return tuple(sorted(chosen, key=CHANGES.index))
