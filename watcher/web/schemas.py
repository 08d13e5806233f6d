"""The API's bodies as pydantic models: they validate what comes in and document what goes out, so
`/openapi.json` is the contract a client (or a fuzzer) can walk."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Items(BaseModel, Generic[T]):
    items: list[T]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class RegistryStatus(BaseModel):
    name: str
    provider: str
    state: Literal["pending", "ok", "failing"]
    last_poll_at: str | None
    last_success_at: str | None
    last_error: str | None
    next_poll_at: str | None
    repositories: int
    tags: int
    last_webhook_at: str | None = None


class Registry(BaseModel):
    """`watcher registry show --json`, plus `status`; secrets appear only as "set"."""

    name: str
    provider: str
    url: str
    interval: str
    credentials: dict[str, str] | str  # a string says why they cannot be decrypted
    options: dict[str, Any]
    emit_existing: bool
    baselined: bool
    repositories: int
    tags: int
    next_poll_at: str | None
    last_poll: dict[str, Any] | None
    #: the newest poll a webhook triggered (of the repositories it named): not part of `status`
    last_webhook_poll: dict[str, Any] | None = None
    status: RegistryStatus


class Repository(BaseModel):
    name: str
    tags: int
    last_pushed_at: str | None
    first_seen_at: str | None


class Tag(BaseModel):
    """A tag stored now; `platforms`, `size` and `annotations` are null until the watcher has read what its
    digest is, `created` also when the image says no time."""

    tag: str
    digest: str
    pushed_at: str | None
    image: str
    reference: str
    created: str | None = None
    platforms: list[str] | None = None  # "os/architecture[/variant]"; an index's: each entry's
    size: int | None = None  # bytes: config and layers; an index: its manifests as listed
    annotations: dict[str, str] | None = None  # the OCI keys org.opencontainers.image.{source,revision,...}


class Poll(BaseModel):
    """One run of the poll history: a registry-wide poll (`schedule` or `manual`), or a webhook's poll of
    the repositories it named (`listed_repositories`; null for a registry-wide poll)."""

    id: int
    started_at: str | None
    finished_at: str | None
    outcome: str
    error: str | None
    repositories: int
    tags: int
    events: int
    requests: int
    ignored: int
    trigger: Literal["schedule", "webhook", "manual"]
    listed_repositories: list[str] | None = None


class Event(BaseModel):
    """`watcher events --json`, plus `id`, the event's place in the history."""

    id: int
    event_id: str
    change: Literal["added", "updated", "removed", "selected"]
    workspace: str
    registry: str
    repository: str
    tag: str
    digest: str
    previous_digest: str
    pushed_at: str
    detected_at: str
    cloudevent: str
    #: a `selected` event's policy and the tag it selected before (absent from tag events)
    policy: str | None = None
    previous_tag: str | None = None


class Queued(BaseModel):
    poll_id: str


class Ok(BaseModel):
    ok: bool


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "malformed request"),
        (401, "no token, or an unknown, revoked or expired one"),
        (403, "a reader asked for more than reading"),
        (404, "no such registry or repository"),
        (422, "invalid input"),
    )
}
