"""A registry's webhook receiver: opting in, its secret (encrypted like credentials), its URL and the
registry-side set-up `watcher registry webhook NAME` prints.

A notification is only a hint naming a repository to list again (`watcher.hooks`); the secret only keeps
strangers from costing listings. It is at least 32 random bytes, URL-safe, and shown only by that command.

The URL names the registry's workspace: `/hooks/v1/NAME` in workspace `default` (the URLs issued before
workspaces existed keep working), `/hooks/v1/workspaces/WORKSPACE/NAME` elsewhere (`path_of`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote

from sqlalchemy.orm import Session

from watcher.errors import InputError, StateError
from watcher.hooks.format import Auth, Webhook
from watcher.hooks.formats import FORMATS
from watcher.models import Registry
from watcher.registrations import store as registries
from watcher.registrations import vault
from watcher.registrations.keys import split_key
from watcher.schema import DEFAULT_WORKSPACE
from watcher.settings import get_settings

SECRET_BYTES = 32
PREFIX = "/hooks/v1"
#: the format each provider's registries send, when `--format` is not given
DEFAULT_FORMATS = {
    "oci": "distribution",
    "dockerhub": "dockerhub",
    "acr": "acr",
    "gcr": "gcr-pubsub",
    "ecr": "ecr-eventbridge",
}


def configure(
    session: Session, key: str, *, format: str | None = None, rotate: bool = False, disable: bool = False
) -> Webhook:
    """Enable (or, with `disable`, turn off) the receiver of the registry `key` (`watcher.registrations.keys`);
    a secret is made the first time or on `rotate`, and kept otherwise."""
    row = registries.find(session, key)
    chosen = format or row.webhook_format or DEFAULT_FORMATS.get(row.provider, "")
    if chosen not in FORMATS:
        raise InputError(f"--format {chosen!r} is not a webhook format: use one of {', '.join(FORMATS)}")
    _check(row, chosen, disable)
    secret = secret_of(row) if row.webhook_secret and not rotate else secrets.token_urlsafe(SECRET_BYTES)
    row.webhook_secret = vault.keyring().encrypt(secret.encode())
    row.webhook_format = chosen
    row.webhook_enabled = not disable
    return Webhook(key, hook_url(key, chosen, secret), secret, chosen, not disable, row.url)


def hook_url(key: str, format: str, secret: str) -> str:
    """The URL the registry `key` must call: `url_of(key)`, and for a format whose sender cannot send a
    header (Docker Hub, Quay) the secret as its last segment."""

    hook_format = FORMATS.get(format)
    if hook_format is not None and hook_format.auth is Auth.PATH:
        return f"{url_of(key)}/{quote(secret, safe='')}"
    return url_of(key)


def _check(row: Registry, chosen: str, disable: bool) -> None:
    """A format that cannot serve this registry (gcr-pubsub without a service-account key) is refused."""

    check = FORMATS[chosen].check if not disable else None
    if check is not None:
        check(registries.spec_of(row))


def secret_of(row: Registry) -> str:
    """The registry's webhook secret, decrypted; raises Undecryptable naming the registry."""
    if not row.webhook_secret:
        workspace = "" if row.workspace == DEFAULT_WORKSPACE else f" --workspace {row.workspace}"
        raise StateError(
            f"registry {row.name!r} has no webhook secret: run `watcher registry webhook {row.name}{workspace}`"
        )
    try:
        return vault.keyring().decrypt(row.webhook_secret).decode()
    except vault.Undecryptable as exc:
        raise vault.Undecryptable(f"registry {row.name!r}: webhook secret {exc}") from None


def authorized(header: str | None, secret: str) -> bool:
    """`Authorization: Bearer SECRET` or the bare secret, compared in constant time."""
    if not header:
        return False
    given = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
    return hmac.compare_digest(given.encode(), secret.encode())


def signed(header: str | None, body: bytes, secret: str) -> bool:
    """`X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body under the secret, compared in
    constant time."""
    if not header or header[:7].lower() != "sha256=":
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[7:].strip().lower().encode(), expected.encode())


def url_of(key: str) -> str:
    """`{WATCHER_PUBLIC_URL or http://WATCHER_LISTEN}` and `path_of(key)`."""
    settings = get_settings()
    base = settings.public_url.rstrip("/")
    if not base:
        if settings.listen.strip().lower() == "off":
            raise InputError("WATCHER_LISTEN is off: set WATCHER_PUBLIC_URL to the address registries reach")
        base = f"http://{settings.listen}"
    return f"{base}{path_of(key)}"


def path_of(key: str) -> str:
    """The receiver's path: `/hooks/v1/NAME` for a registry of workspace `default` (the URL it always had),
    `/hooks/v1/workspaces/WORKSPACE/NAME` for one of another workspace."""
    workspace, name = split_key(key)
    if workspace == DEFAULT_WORKSPACE:
        return f"{PREFIX}/{quote(name, safe='')}"
    return f"{PREFIX}/workspaces/{quote(workspace, safe='')}/{quote(name, safe='')}"


def setup(hook: Webhook) -> str:
    """What to configure on the registry's side, ready to paste."""

    return FORMATS[hook.format].setup(hook)
