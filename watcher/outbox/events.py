"""One change as the event the contract promises: stream fields, and a CloudEvent carrying a CDEvent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from watcher.diff import Change, ChangeKind
from watcher.read.views import rfc3339  # where the quick commands find it without SQLAlchemy
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from watcher.models import Event

CDEVENTS_SPEC = "0.5.1"
#: a policy's selection changed: a CDEvents custom event (`dev.cdeventsx.<tool>-<subject>.<predicate>.<version>`)
SELECTED = "selected"
SELECTED_TYPE = "dev.cdeventsx.watcher-policy.selected.0.1.0"
#: every event's `change`: a tag's three, and a policy's selection
CHANGES = (*(kind.value for kind in ChangeKind), SELECTED)
#: where the HTTP side serves the JSON Schema of `SELECTED_TYPE` (the event's `schemaUri`, under the public URL)
SELECTED_SCHEMA_PATH = "/schemas/cdevents/watcher-policy-selected-0.1.0.json"
#: that schema, shipped beside this module
SELECTED_SCHEMA_FILE = "watcher-policy-selected-0.1.0.json"
CDEVENT_TYPES = {
    ChangeKind.ADDED: "dev.cdevents.artifact.published.0.3.0",
    ChangeKind.UPDATED: "dev.cdevents.artifact.published.0.3.0",
    ChangeKind.REMOVED: "dev.cdevents.artifact.deleted.0.2.0",
}


#: the OCI annotations a tag event's `customData` names (`source`, `revision`)
SOURCE_ANNOTATION = "org.opencontainers.image.source"
REVISION_ANNOTATION = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class ImageFacts:
    """What a tag event says of its digest's image (`watcher.schema.images`), in its CloudEvent's
    `customData`: `created`, `platforms` ("os/arch[/variant]"), and the `source` and `revision` annotations.
    Unknown (not fetched yet, or a failed fetch): all empty."""

    created: datetime | None = None
    platforms: tuple[str, ...] = ()
    source: str = ""
    revision: str = ""

    @classmethod
    def of(cls, created: datetime | None, platforms: object, annotations: object) -> ImageFacts:
        """From an `images` row's columns (or an `ImageMeta`'s fields)."""
        found = annotations if isinstance(annotations, Mapping) else {}
        return cls(
            created,
            tuple(platform_text(p) for p in (platforms if isinstance(platforms, list) else []) if platform_text(p)),
            str(found.get(SOURCE_ANNOTATION) or ""),
            str(found.get(REVISION_ANNOTATION) or ""),
        )

    def custom_data(self) -> dict[str, object]:
        return {
            "created": rfc3339(self.created),
            "platforms": list(self.platforms),
            "source": self.source,
            "revision": self.revision,
        }


def platform_text(platform: object) -> str:
    """`os/architecture[/variant]` of a stored platform; "" when it names neither."""
    found = platform if isinstance(platform, Mapping) else {}
    if not found.get("os") or not found.get("architecture"):
        return ""
    return "/".join(str(found[key]) for key in ("os", "architecture", "variant") if found.get(key))


NO_IMAGE = ImageFacts()


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
    image: ImageFacts = NO_IMAGE,
) -> Event:
    """The history row (and outbox entry) for one change, its CloudEvent built once, here. `registry` is the
    registry's plain name (never its key): the workspace is a field of its own. `image` is what is known of
    the change's digest (its CloudEvent's `customData` only: not a stream field)."""
    values = _owned(workspace_id, workspace, registry_id, registry) | {
        "repository": change.repository,
        "tag": change.tag,
        "change": change.kind.value,
        "digest": change.digest,
        "previous_digest": change.previous_digest,
        "pushed_at": change.pushed_at,
        "detected_at": detected_at,
        "policy": None,
        "previous_tag": "",
    }
    return _built(values, url, image)


def selection_event(
    registry_id: int,
    registry: str,
    url: str,
    policy: str,
    repository: str,
    selected: tuple[str, str, datetime | None] | None,
    previous: tuple[str, str] | None,
    detected_at: datetime,
    *,
    workspace: str = DEFAULT_WORKSPACE,
    workspace_id: int = DEFAULT_WORKSPACE_ID,
) -> Event:
    """The history row (and outbox entry) for a policy whose selection changed: `selected` is the (tag,
    digest, push time) it selects now (None: nothing any more), `previous` the (tag, digest) it selected
    before (None: nothing)."""
    tag, digest, pushed_at = selected or ("", "", None)
    previous_tag, previous_digest = previous or ("", "")
    values = _owned(workspace_id, workspace, registry_id, registry) | {
        "repository": repository,
        "tag": tag,
        "change": SELECTED,
        "digest": digest,
        "previous_digest": previous_digest,
        "pushed_at": pushed_at,
        "detected_at": detected_at,
        "policy": policy,
        "previous_tag": previous_tag,
    }
    return _built(values, url)


def _owned(workspace_id: int, workspace: str, registry_id: int, registry: str) -> dict[str, Any]:
    """A new event's id, and whose it is."""
    return {
        "event_id": str(uuid.uuid4()),
        "workspace_id": workspace_id,
        "workspace": workspace,
        "registry_id": registry_id,
        "registry_name": registry,
    }


def _built(values: dict[str, Any], url: str, image: ImageFacts = NO_IMAGE) -> Event:
    """The Event of these column values, its CloudEvent built once, here: from plain attributes (read from
    the ORM instance, its ~30 reads cost more than the rest)."""
    from watcher.models import Event  # the ORM: not for `watcher events`, which shows the read model's rows

    document = cloudevent(SimpleNamespace(**values), urlsplit(url).netloc, image)
    shown = json.dumps(document, separators=(",", ":"))
    return Event(**values, cloudevent=shown)


def event_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The events as rows of `watcher.schema.events`, for one multi-row INSERT (the id is the database's;
    the workspace's name, loaded with a row, is never written)."""
    columns = _event_columns()
    return [{column: getattr(event, key) for key, column in columns} for event in events]


@cache
def _event_columns() -> list[tuple[str, str]]:
    """(attribute, column) of every event column but the id."""
    from sqlalchemy import inspect

    from watcher.models import Event
    from watcher.schema import events as table

    return [
        (attr.key, column.key)
        for attr in inspect(Event).column_attrs
        if attr.key != "id" and (column := attr.columns[0]) in table.c.values()
    ]


def fields_of(event: Event | Any) -> dict[str, str]:
    """The stream entry's fields except `cloudevent`, all strings (of an Event, or of the read model's row
    of one: `readmodel.events_page`); a `selected` event adds `policy` and `previous_tag`."""
    if event.change == SELECTED:
        return {**_tag_fields(event), "policy": event.policy or "", "previous_tag": event.previous_tag or ""}
    return _tag_fields(event)


def _tag_fields(event: Event | Any) -> dict[str, str]:
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


def cloudevent(event: Event | Any, host: str, image: ImageFacts = NO_IMAGE) -> dict[str, object]:
    """The CloudEvent (with the extension attribute `workspace`) carrying the CDEvent, whose `customData`
    are the stream fields; a tag event's add what is known of its digest's image (`image`)."""
    if event.change == SELECTED:
        return _selection_cloudevent(event, host)
    kind = ChangeKind(event.change)
    subject = {"id": package_url(host, event.repository, event.tag, event.digest), "content": {}}
    return _envelope(event, CDEVENT_TYPES[kind], subject, f"{event.repository}:{event.tag}", image=image)


def _envelope(
    event: Any,
    kind: str,
    subject: Mapping[str, object],
    about: str,
    schema: str = "",
    image: ImageFacts | None = None,
) -> dict[str, object]:
    """The CloudEvent of type `kind` about `about`, carrying the CDEvent of that type whose subject is
    `subject` (its `source` added: the registry's), with `schema` as its `schemaUri` (a custom event's);
    `image` (a tag event's) adds its four keys to `customData`."""
    fields = fields_of(event)
    source = source_of(event.workspace, event.registry_name)
    context = {
        "specversion": CDEVENTS_SPEC,
        "id": event.event_id,
        "source": source,
        "type": kind,
        "timestamp": fields["detected_at"],
    }
    if schema:
        context["schemaUri"] = schema
    cdevent = {
        "context": context,
        "subject": {"id": subject["id"], "source": source, "content": subject["content"]},
        "customData": fields if image is None else {**fields, **image.custom_data()},
        "customDataContentType": "application/json",
    }
    document: dict[str, object] = {
        "specversion": "1.0",
        "id": event.event_id,
        "source": source,
        "type": kind,
        "subject": about,
        "time": fields["detected_at"],
        "datacontenttype": "application/json",
    }
    if schema:
        document["dataschema"] = schema
    return {**document, "workspace": event.workspace, "data": cdevent}


def schema_uri() -> str:
    """The absolute URL of `SELECTED_SCHEMA_PATH` on this installation (`WATCHER_PUBLIC_URL`, else the
    address `WATCHER_LISTEN` serves)."""
    from watcher.settings import get_settings

    settings = get_settings()
    base = settings.public_url.strip().rstrip("/")
    if not base:
        listen = settings.listen.strip()
        base = f"http://{'127.0.0.1:8080' if listen.lower() == 'off' else listen}"
    return f"{base}{SELECTED_SCHEMA_PATH}"


def policy_uri(workspace: str, policy: str) -> str:
    """The policy as a URI reference: the subject of its `selected` events."""
    return f"/watcher/workspaces/{quote(workspace, safe='')}/policies/{quote(policy, safe='')}"


def _selection_cloudevent(event: Any, host: str) -> dict[str, object]:
    """A `selected` event: the CDEvents custom event `SELECTED_TYPE`, whose subject is the policy and whose
    content is what it selects now and before (the pull reference and purl only when it selects an image)."""
    content: dict[str, object] = {
        "policy": event.policy,
        "registry": event.registry_name,
        "repository": event.repository,
        "tag": event.tag,
        "digest": event.digest,
        "previousTag": event.previous_tag or "",
        "previousDigest": event.previous_digest or "",
    }
    if event.tag:
        content["pullReference"] = f"{host}/{event.repository}:{event.tag}@{event.digest}"
        content["artifactId"] = package_url(host, event.repository, event.tag, event.digest)
    subject = {"id": policy_uri(event.workspace, event.policy), "content": content}
    return _envelope(event, SELECTED_TYPE, subject, f"policy/{event.policy}", schema_uri())
