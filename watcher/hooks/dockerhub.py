"""Docker Hub's repository webhooks. Hub cannot send a header or sign its requests, so the secret is the
URL's last segment (`/hooks/v1/NAME/SECRET`).

Hub posts one JSON object per push (docs.docker.com/docker-hub/repos/manage/webhooks): `callback_url`,
`push_data` (`pushed_at`, `pusher`, `tag`) and `repository` (`repo_name` = `NAMESPACE/NAME`, `namespace`,
`name`, ...). There is no event type: Hub announces pushes only, so deleted tags are seen by the
scheduled polls. `repo_name` is what the dockerhub poller names a repository (`NAMESPACE/NAME`); a
repository outside the registry's `--namespace` is never listed (`watcher.pollers.dockerhub`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcher.hooks.format import Auth, HookFormat, Notification
from watcher.hooks.payload import json_object, member, repository, text

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

WHAT = "a Docker Hub webhook"


def repositories(notification: Notification) -> list[str]:
    """The pushed repository, `NAMESPACE/NAME` (an official image's bare name is `library/NAME`)."""
    body = json_object(notification, WHAT)
    member(body, "push_data", dict, "")
    named = member(body, "repository", dict, "")
    name = text(named, "repo_name", "repository.")
    if "/" not in name:
        namespace = named.get("namespace")
        name = f"{namespace if isinstance(namespace, str) and namespace else 'library'}/{name}"
    return [repository(name, "repository.repo_name")]


def setup(hook: Webhook) -> str:
    """Hub's Webhooks tab of each repository to watch."""
    return "\n".join(
        [
            "On Docker Hub, for each repository to watch: Repositories > REPOSITORY > Webhooks:",
            "  Webhook name: watcher",
            f"  Webhook URL: {hook.url}",
            "  then Create.",
            "The URL holds the secret (Docker Hub cannot send a header or sign): keep it as private as the secret.",
            "Docker Hub announces pushes only: deleted tags are seen by the scheduled polls.",
        ]
    )


FORMAT = HookFormat("dockerhub", Auth.PATH, repositories, setup)
