"""One change as the event the contract promises: stream fields, and a CloudEvent carrying a CDEvent."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from watcher.diff import Change, ChangeKind
from watcher.read.views import rfc3339  # where the quick commands find it without SQLAlchemy
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from watcher.models import Event

CDEVENTS_SPEC = "0.5.1"
CDEVENT_TYPES = {
    ChangeKind.ADDED: "dev.cdevents.artifact.published.0.3.0",
    ChangeKind.UPDATED: "dev.cdevents.artifact.published.0.3.0",
    ChangeKind.REMOVED: "dev.cdevents.artifact.deleted.0.2.0",
}


def package_url(host: str, repository: str, tag: str, digest: str) -> str:
    """`pkg:oci/NAME@sha256%3AHEX?repository_url=HOST/REPOSITORY&tag=TAG` (the purl `oci` type)."""
    name = repository.rsplit("/", 1)[-1].lower()
    return (
        f"pkg:oci/{quote(name, safe='')}@{quote(digest, safe='')}"
        f"?repository_url={quote(f'{host}/{repository}', safe='/:')}&tag={quote(tag, safe='')}"
    )


def source_of(workspace: str, registry: str) -> str:
    """The CloudEvent `source`: the registry inside its workspace (names are unique only there)."""
    return f"/watcher/workspaces/{quote(workspace, safe='')}/registries/{quote(registry, safe='')}"


def new_event(
    registry_id: int,
    registry: str,
    url: str,
    change: Change,
    detected_at: datetime,
    *,
    workspace: str = DEFAULT_WORKSPACE,
    workspace_id: int = DEFAULT_WORKSPACE_ID,
) -> Event:
    """The history row (and outbox entry) for one change, its CloudEvent built once, here. `registry` is the
    registry's plain name (never its key): the workspace is a field of its own."""
    from watcher.models import Event  # the ORM: not for `watcher events`, which shows the read model's rows

    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "workspace_id": workspace_id,
        "workspace": workspace,
        "registry_id": registry_id,
        "registry_name": registry,
        "repository": change.repository,
        "tag": change.tag,
        "change": change.kind.value,
        "digest": change.digest,
        "previous_digest": change.previous_digest,
        "pushed_at": change.pushed_at,
        "detected_at": detected_at,
    }
    # the CloudEvent from plain attributes: read from the ORM instance, its ~30 reads cost more than the rest
    shown = json.dumps(cloudevent(SimpleNamespace(**values), urlsplit(url).netloc), separators=(",", ":"))
    return Event(**values, cloudevent=shown)


def fields_of(event: Event | Any) -> dict[str, str]:
    """The stream entry's fields except `cloudevent`, all strings (of an Event, or of the read model's row
    of one: `readmodel.events_page`)."""
    return {
        "event_id": event.event_id,
        "change": event.change,
        "workspace": event.workspace,
        "registry": event.registry_name,
        "repository": event.repository,
        "tag": event.tag,
        "digest": event.digest,
        "previous_digest": event.previous_digest or "",
        "pushed_at": rfc3339(event.pushed_at),
        "detected_at": rfc3339(event.detected_at),
    }


def stream_entry(event: Event | Any) -> dict[str, str]:
    return {**fields_of(event), "cloudevent": event.cloudevent}


def cloudevent(event: Event | Any, host: str) -> dict[str, object]:
    """The CloudEvent (with the extension attribute `workspace`) carrying the CDEvent, whose `customData`
    are the stream fields."""
    kind = ChangeKind(event.change)
    fields = fields_of(event)
    source = source_of(event.workspace, event.registry_name)
    subject: dict[str, object] = {
        "id": package_url(host, event.repository, event.tag, event.digest),
        "source": source,
        "content": {},
    }
    cdevent = {
        "context": {
            "specversion": CDEVENTS_SPEC,
            "id": event.event_id,
            "source": source,
            "type": CDEVENT_TYPES[kind],
            "timestamp": fields["detected_at"],
        },
        "subject": subject,
        "customData": fields,
        "customDataContentType": "application/json",
    }
    return {
        "specversion": "1.0",
        "id": event.event_id,
        "source": source,
        "type": CDEVENT_TYPES[kind],
        "subject": f"{event.repository}:{event.tag}",
        "time": fields["detected_at"],
        "datacontenttype": "application/json",
        "workspace": event.workspace,
        "data": cdevent,
    }
