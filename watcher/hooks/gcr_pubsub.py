"""Google Container Registry / Artifact Registry through a Pub/Sub push subscription to the `gcr` topic.

The registry publishes `{"action": "INSERT"|"DELETE", "digest": "HOST/PROJECT/…/IMAGE@sha256:…",
"tag": "HOST/PROJECT/…/IMAGE:TAG"}` (either reference may be missing) for every push and delete; Pub/Sub
pushes it wrapped as `{"message": {"data": BASE64, "messageId", "publishTime", "attributes"},
"subscription"}` (or bare, with `--push-no-wrapper`). The image's path is the gcr poller's repository name
(`PROJECT/IMAGE`, `PROJECT/REPO/IMAGE`); messages about another host or another project are ignored.

The request is authenticated by the OIDC token Pub/Sub adds (`watcher.hooks.googleoidc`), signed by Google for
the push service account: that account is the registry's own (its `--json-key`'s `client_email`), so there
is nothing more to configure on the watcher's side and no secret to copy.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from watcher.errors import InputError
from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_object, same_host
from watcher.hooks.payload import repository as valid_repository
from watcher.pollers.gcr import project_prefix, service_account_info
from watcher.registry.reference import shown

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook
    from watcher.registrations.spec import RegistrySpec

ACTIONS = ("INSERT", "DELETE")


def repositories(notification: Notification) -> list[str]:
    """The image's repository when it is in the registry's host and project; nothing otherwise."""
    payload = json_object(notification, "Pub/Sub")
    message = _message_data(payload["message"]) if "message" in payload else payload
    if message is None:
        return []
    action = message.get("action")
    reference = message.get("digest") or message.get("tag")
    if action not in ACTIONS or not isinstance(reference, str):
        raise Malformed(f"the gcr message has no INSERT/DELETE action and image ({shown(action)})")
    host, _, path = reference.partition("/")
    if not same_host(host, notification.registry_url):
        return []
    repository = valid_repository(_without_version(path), "the gcr message")
    project = str(notification.options.get("project_id") or "")
    return [repository] if project and repository.startswith(project_prefix(project)) else []


def _message_data(message: Any) -> dict[str, Any] | None:
    """The pushed message's data, decoded; None for a message without data."""
    if not isinstance(message, dict):
        raise Malformed('the push request\'s "message" is not an object')
    data = message.get("data")
    if data is None:
        return None
    try:
        decoded = json.loads(base64.b64decode(data, validate=True)) if isinstance(data, str) else None
    except (ValueError, binascii.Error, RecursionError):
        decoded = None
    if not isinstance(decoded, dict):
        raise Malformed("the message's data is not base64 of a JSON object")
    return decoded


def _without_version(path: str) -> str:
    """`PROJECT/IMAGE` of `PROJECT/IMAGE@sha256:…` or `PROJECT/IMAGE:TAG`."""
    path = path.split("@", 1)[0]
    head, _, last = path.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def push_account(spec: RegistrySpec) -> str:
    """The service account the push subscription must authenticate as: the registry's key's."""
    check(spec)
    return str(service_account_info(spec.name, spec.credentials["json_key"])["client_email"])


def check(spec: RegistrySpec) -> None:
    if spec.provider != "gcr" or not spec.credentials.get("json_key"):
        raise InputError(
            f"registry {spec.name!r}: webhook format 'gcr-pubsub' needs a gcr registry with a --json-key "
            "(its service account authenticates the Pub/Sub pushes)"
        )
    service_account_info(spec.name, spec.credentials["json_key"])


def setup(hook: Webhook) -> str:
    """The `gcr` topic and a push subscription authenticated as the registry's service account."""
    from watcher.db import session_scope
    from watcher.registrations.store import find, spec_of

    with session_scope() as session:
        spec = spec_of(find(session, hook.registry))
    email, project = push_account(spec), str(spec.options.get("project_id") or "")
    return "\n".join(
        [
            f"In project {project}, the registry publishes to the Pub/Sub topic `gcr` (create it once, if missing):",
            f"  gcloud pubsub topics create gcr --project={project}",
            "Then a push subscription authenticated as the registry's service account:",
            f"  gcloud pubsub subscriptions create {hook.resource_name} --project={project} --topic=gcr \\",
            f"    --push-endpoint={hook.url} \\",
            f"    --push-auth-service-account={email} \\",
            f"    --push-auth-token-audience={hook.url}",
            f"Only Google-signed tokens for {email} (its --json-key's client_email, email verified) with that",
            "audience are accepted. Creating the subscription needs iam.serviceAccounts.actAs on that account",
            "(roles/iam.serviceAccountUser). Pub/Sub pushes only to https: set WATCHER_PUBLIC_URL.",
            "The secret is not used by this format.",
        ]
    )


FORMAT = HookFormat("gcr-pubsub", Auth.OIDC, repositories, setup, check=check)
