"""Azure Container Registry's webhooks, sent with the custom header set by `az acr webhook create --headers`.

ACR posts one JSON object per event (learn.microsoft.com/azure/container-registry/
container-registry-webhook-reference): `id`, `timestamp`, `action` (`push`, `delete`, `chart_push`,
`chart_delete`, `quarantine`, and `ping` from `az acr webhook ping`), `target` (`mediaType`, `digest`,
`repository`, `tag`; a Helm chart's `name` and `version`) and `request` (`host`: the registry's login
server, `method`, `useragent`). Images are re-listed on `push` and `delete`; charts live outside the OCI
listing, so their actions are ignored like the others.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from watcher.hooks.format import Auth, HookFormat, Notification
from watcher.hooks.payload import hostname, json_object, member, repository, same_host, text

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

RELISTING_ACTIONS = ("push", "delete")
WHAT = "an Azure Container Registry webhook"


def repositories(notification: Notification) -> list[str]:
    """The repository of an image push or delete; none for another action, or for another registry's
    event (its `request.host` is not the registry's host)."""
    body = json_object(notification, WHAT)
    action = text(body, "action", "")
    if action not in RELISTING_ACTIONS:
        return []  # `ping` has no target
    target = member(body, "target", dict, "")
    name = repository(target.get("repository"), f"{action} event: target.repository")
    request = body.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    if isinstance(host, str) and host and not same_host(host, notification.registry_url):
        return []
    return [name]


def setup(hook: Webhook) -> str:
    """The `az acr webhook create` command, with the secret as the Authorization header."""
    login_server = hostname(hook.registry_url) or "REGISTRY.azurecr.io"
    registry = login_server.split(".", 1)[0]
    header = f"Authorization=Bearer {hook.secret}"
    return "\n".join(
        [
            f"az acr webhook create --registry {shlex.quote(registry)} --name watcher \\",
            f"  --uri {shlex.quote(hook.url)} --actions push delete \\",
            f"  --headers {shlex.quote(header)}",
            "(Add --scope 'REPOSITORY:*' to notify about some repositories only; "
            "`az acr webhook ping --registry ... --name watcher` checks the set-up.)",
        ]
    )


FORMAT = HookFormat("acr", Auth.HEADER, repositories, setup)
