"""Harbor's webhook policies (the Default payload format), sent with the policy's Auth Header.

Harbor posts one JSON object per event (goharbor/harbor `src/pkg/notifier/model/event.go`): `type`
(`PUSH_ARTIFACT`, `DELETE_ARTIFACT`, `PULL_ARTIFACT`, `SCANNING_COMPLETED`, ...), `occur_at`, `operator`
and `event_data` with `resources` (`digest`, `tag`, `resource_url` = `HOST/PROJECT/REPO:TAG`) and
`repository` (`name`, `namespace` = the project, `repo_full_name` = `PROJECT/REPO`, `repo_type`). The full
name is what the watcher names a Harbor repository (`watcher.pollers.harbor`: `project/repo`).
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_object, member, repository, same_host, text
from watcher.registry.reference import shown

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

#: the event types that can change a tag; every other one (pulls, scans, quotas, replication) is ignored
RELISTING_TYPES = ("PUSH_ARTIFACT", "DELETE_ARTIFACT")
WHAT = "a Harbor webhook (Default payload format)"


def repositories(notification: Notification) -> list[str]:
    """The repository of a push or delete of an artifact; none for any other event type, or for an event
    naming another host than the registry's (another Harbor's notification costs nothing)."""
    body = json_object(notification, WHAT)
    if "specversion" in body:
        raise Malformed("the body is a CloudEvent: set the webhook's Payload Format to Default")
    event_type = text(body, "type", "")
    if event_type not in RELISTING_TYPES:
        return []
    data = member(body, "event_data", dict, "")
    named = member(data, "repository", dict, "event_data.")
    full_name = repository(text(named, "repo_full_name", "event_data.repository."), f"{event_type} event")
    _check_parts(named, full_name)
    for resource in _resources(data):
        url = resource.get("resource_url")
        if isinstance(url, str) and url and not same_host(url, notification.registry_url):
            return []
    return [full_name]


def _check_parts(named: dict[str, Any], full_name: str) -> None:
    """`namespace`/`name`, when sent, must spell the full name: a body that disagrees with itself is refused."""
    namespace, name = named.get("namespace"), named.get("name")
    if isinstance(namespace, str) and isinstance(name, str) and f"{namespace}/{name}" != full_name:
        raise Malformed(
            f"event_data.repository: repo_full_name {shown(full_name)} is not namespace/name "
            f"{shown(namespace)}/{shown(name)}"
        )


def _resources(data: dict[str, Any]) -> list[dict[str, Any]]:
    resources = data.get("resources")
    if resources is None:
        return []  # Go leaves an empty list out
    if not isinstance(resources, list) or not all(isinstance(item, dict) for item in resources):
        raise Malformed('event_data."resources" is not an array of objects')
    return resources


def setup(hook: Webhook) -> str:
    """The webhook policy to add to each Harbor project to watch: in the UI, or with Harbor's API."""
    policy = {
        "name": "watcher",
        "enabled": True,
        "event_types": list(RELISTING_TYPES),
        "targets": [
            {
                "type": "http",
                "address": hook.url,
                "auth_header": f"Bearer {hook.secret}",
                "payload_format": "Default",
                "skip_cert_verify": False,
            }
        ],
    }
    harbor = hook.registry_url.rstrip("/") or "https://HARBOR"
    return "\n".join(
        [
            "In Harbor, for each project to watch: Projects > PROJECT > Webhooks > + NEW WEBHOOK:",
            "  Name: watcher",
            "  Notify Type: http",
            "  Payload Format: Default",
            "  Event Type: Artifact pushed, Artifact deleted",
            f"  Endpoint URL: {hook.url}",
            f"  Auth Header: Bearer {hook.secret}",
            "  Verify Remote Certificate: on",
            "Or with Harbor's API, as a project administrator:",
            f"  curl -u ADMIN -X POST {harbor}/api/v2.0/projects/PROJECT/webhook/policies \\",
            "    -H 'Content-Type: application/json' \\",
            f"    -d {shlex.quote(json.dumps(policy))}",
            f"(Harbor names its external URL in each notification: one naming another host than {harbor} is ignored.)",
        ]
    )


FORMAT = HookFormat("harbor", Auth.HEADER, repositories, setup)
