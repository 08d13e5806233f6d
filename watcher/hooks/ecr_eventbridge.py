"""Amazon ECR's events through an EventBridge API destination, whose connection sends the secret as an API
key: header `Authorization`, value `Bearer SECRET`.

EventBridge posts the event itself (docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html):
`version`, `id`, `detail-type` ("ECR Image Action"), `source` ("aws.ecr"), `account`, `time`, `region`,
`resources` and `detail` (`result` SUCCESS or FAILURE, `repository-name`, `image-digest`, `action-type`
PUSH or DELETE, `image-tag`). Only a successful push or delete re-lists its repository; scans, replication,
pull-through cache events and failures are ignored, and so is an event of another account or region than
the registry's URL names (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from watcher.hooks.format import Auth, HookFormat, Notification
from watcher.hooks.payload import hostname, json_object, member, repository, text

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

DETAIL_TYPE = "ECR Image Action"
SOURCE = "aws.ecr"
RELISTING_ACTIONS = ("PUSH", "DELETE")
WHAT = "an EventBridge event"
#: what the rule lets through: the receiver ignores anything else anyway
EVENT_PATTERN = {
    "source": [SOURCE],
    "detail-type": [DETAIL_TYPE],
    "detail": {"action-type": list(RELISTING_ACTIONS), "result": ["SUCCESS"]},
}


def repositories(notification: Notification) -> list[str]:
    """The repository of a successful image push or delete in the registry's account and region."""
    event = json_object(notification, WHAT)
    if text(event, "source", "") != SOURCE or text(event, "detail-type", "") != DETAIL_TYPE:
        return []
    detail = member(event, "detail", dict, "")
    if detail.get("action-type") not in RELISTING_ACTIONS or detail.get("result") != "SUCCESS":
        return []
    name = repository(detail.get("repository-name"), 'detail."repository-name"')
    home = account_and_region(notification.registry_url)
    if home is not None and (event.get("account"), event.get("region")) != home:
        return []
    return [name]


def account_and_region(registry_url: str) -> tuple[str, str] | None:
    """(account, region) of `https://ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]`, or None."""
    labels = hostname(registry_url).split(".")
    if len(labels) < 5 or labels[1:3] not in (["dkr", "ecr"], ["dkr", "ecr-fips"]) or labels[4] != "amazonaws":
        return None
    account, region = labels[0], labels[3]
    return (account, region) if len(account) == 12 and account.isdigit() else None


def setup(hook: Webhook) -> str:
    """The aws CLI commands: a connection holding the secret, an API destination calling the receiver, a
    role EventBridge may use to call it, and a rule sending ECR's image actions there."""
    account, region = account_and_region(hook.registry_url) or ("ACCOUNT", "REGION")
    base = hook.resource_name[:57]
    role = f"{base}-events"
    auth = {"ApiKeyAuthParameters": {"ApiKeyName": "Authorization", "ApiKeyValue": f"Bearer {hook.secret}"}}
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    invoke = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "events:InvokeApiDestination", "Resource": "DESTINATION"}],
    }
    invoke_document = '"' + json.dumps(invoke).replace('"', '\\"').replace("DESTINATION", "$DESTINATION") + '"'
    lines = [
        f"# account {account}, region {region}: EventBridge calls the watcher through an API destination",
        f"CONNECTION=$(aws events create-connection --region {region} --name {base} \\",
        f"  --authorization-type API_KEY --auth-parameters {shlex.quote(json.dumps(auth))} \\",
        "  --query ConnectionArn --output text)",
        f"DESTINATION=$(aws events create-api-destination --region {region} --name {base} \\",
        f'  --connection-arn "$CONNECTION" --invocation-endpoint {shlex.quote(hook.url)} \\',
        "  --http-method POST --invocation-rate-limit-per-second 10 --query ApiDestinationArn --output text)",
        f"ROLE=$(aws iam create-role --role-name {role} \\",
        f"  --assume-role-policy-document {shlex.quote(json.dumps(trust))} --query Role.Arn --output text)",
        f"aws iam put-role-policy --role-name {role} --policy-name invoke-api-destination \\",
        f"  --policy-document {invoke_document}",
        f"aws events put-rule --region {region} --name {base} \\",
        f"  --event-pattern {shlex.quote(json.dumps(EVENT_PATTERN))}",
        f'aws events put-targets --region {region} --rule {base} --targets "Id=watcher,Arn=$DESTINATION,RoleArn=$ROLE"',
    ]
    if not hook.url.startswith("https://"):
        lines.append(
            "# EventBridge calls https:// endpoints only: set WATCHER_PUBLIC_URL to the watcher's https address"
        )
    return "\n".join(lines)


FORMAT = HookFormat("ecr-eventbridge", Auth.HEADER, repositories, setup)
