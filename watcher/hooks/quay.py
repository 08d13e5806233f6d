"""Quay's repository notifications ("Webhook POST"). Quay sends no custom header and does not sign, so the
secret is the URL's last segment (`/hooks/v1/NAME/SECRET`).

Quay posts the event's JSON object (docs.projectquay.io, "Repository notifications"). A push
(`repo_push`) is `name`, `repository` (`NAMESPACE/NAME`), `namespace`, `docker_url` (`HOST/NAMESPACE/NAME`),
`homepage` and `updated_tags` (a list of tags; older Quay sent an object of tag -> image id). The other
events carry no `updated_tags` (builds have a `build_id`, scans a `vulnerability`, mirroring a `message`)
and are ignored: a finished build pushes, and that push is its own notification.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_object, repository, same_host, text
from watcher.registry.reference import shown

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

WHAT = "a Quay repository notification"


def repositories(notification: Notification) -> list[str]:
    """The pushed repository; none for another event, or for a push to another host than the registry's."""
    body = json_object(notification, WHAT)
    name = repository(text(body, "repository", ""), "repository")
    if "updated_tags" not in body or "build_id" in body:
        return []
    if not isinstance(body["updated_tags"], list | dict):
        raise Malformed('"updated_tags" is neither an array of tags nor an object')
    docker_url = text(body, "docker_url", "")
    host, _, path = docker_url.partition("/")
    if path != name:
        raise Malformed(f'"docker_url" {shown(docker_url)} is not HOST/{name}')
    return [name] if same_host(host, notification.registry_url) else []


def setup(hook: Webhook) -> str:
    """The notification to add to each Quay repository to watch: in the UI, or with Quay's API."""
    quay = hook.registry_url.rstrip("/") or "https://quay.io"
    notification = {"event": "repo_push", "method": "webhook", "config": {"url": hook.url}, "eventConfig": {}}
    return "\n".join(
        [
            "In Quay, for each repository to watch: REPOSITORY > Settings > Events and Notifications >",
            "Create Notification:",
            "  When this event occurs: Push to Repository",
            "  Then issue a notification: Webhook POST",
            f"  Webhook URL: {hook.url}",
            "Or with Quay's API (an OAuth token with the repo:admin scope):",
            f"  curl -X POST {quay}/api/v1/repository/NAMESPACE/NAME/notification/ \\",
            "    -H 'Authorization: Bearer TOKEN' -H 'Content-Type: application/json' \\",
            f"    -d {shlex.quote(json.dumps(notification | {'title': 'watcher'}))}",
            "The URL holds the secret (Quay cannot send a header or sign): keep it as private as the secret.",
            "Quay announces pushes only: deleted and expired tags are seen by the scheduled polls.",
            f"(Quay names its host in each notification's docker_url: one naming another host than {quay} is ignored.)",
        ]
    )


FORMAT = HookFormat("quay", Auth.PATH, repositories, setup)
