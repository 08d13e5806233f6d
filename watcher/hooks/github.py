"""GitHub Packages / GHCR: the `package` event of a repository or organization webhook, and the
`registry_package` event GitHub Apps (and organization webhooks) receive; both signed with
`X-Hub-Signature-256`.

Only container packages (`package_type` `CONTAINER`) that were `published`, `updated` (or `deleted`, where
GitHub sends it) re-list their repository, named as ghcr.io names it: `OWNER/NAME`, lower-case. Every other
event GitHub delivers to the same webhook (`ping` when it is created, `push`, npm or Maven packages) is
acknowledged and ignored. The event is read from the signed body (its `package` or `registry_package`
object), not from the unsigned `X-GitHub-Event` header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_object
from watcher.hooks.payload import repository as valid_repository
from watcher.registry.reference import shown

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

EVENTS = ("package", "registry_package")
RELISTING_ACTIONS = frozenset({"published", "updated", "deleted"})


def repositories(notification: Notification) -> list[str]:
    """The container package's repository (`owner/name`), or nothing for any other event."""
    payload = json_object(notification, "GitHub")
    event = next((name for name in EVENTS if name in payload), None)
    if event is None:
        return []  # ping, push, …: not about a package
    package, action = payload[event], payload.get("action")
    if not isinstance(package, dict) or not isinstance(action, str):
        raise Malformed(f"the {event} event has no {event!r} object and action")
    if action not in RELISTING_ACTIONS or str(package.get("package_type") or "").lower() != "container":
        return []
    return [_repository(package, event)]


def _repository(package: dict[str, Any], event: str) -> str:
    """`OWNER/NAME` as ghcr.io names the image (GitHub keeps the owner's capitals; ghcr.io does not)."""
    owner = package.get("owner")
    login = owner.get("login") if isinstance(owner, dict) else None
    name = package.get("name")
    if not isinstance(login, str) or not login or not isinstance(name, str) or not name:
        raise Malformed(f"the {event} event's package has no owner login and name ({shown(name)})")
    return valid_repository(f"{login}/{name}".lower(), f"the {event} event")


def setup(hook: Webhook) -> str:
    """A webhook on the GitHub repository (or organization) the package belongs to."""
    return "\n".join(
        [
            "On GitHub, in the repository the package is connected to (or its organization):",
            "Settings → Webhooks → Add webhook",
            f"  Payload URL:    {hook.url}",
            "  Content type:   application/json",
            f"  Secret:         {hook.secret}",
            '  Events:         "Let me select individual events" → Packages, Registry packages',
            "Or with the GitHub CLI (OWNER/REPO: that repository):",
            "  gh api repos/OWNER/REPO/hooks -f name=web -F active=true \\",
            f"    -f 'config[url]={hook.url}' -f 'config[content_type]=json' \\",
            f"    -f 'config[secret]={hook.secret}' -f 'events[]=package' -f 'events[]=registry_package'",
            "The registry must be an `oci` registry with --url https://ghcr.io; GitHub signs every delivery",
            "with X-Hub-Signature-256 (HMAC-SHA256 of the body under the secret).",
        ]
    )


FORMAT = HookFormat("github", Auth.HMAC, repositories, setup)
