"""`/api/v1/policies`: the workspace's image policies with what each selects now and its selection history,
and putting or removing one; plus the JSON Schema of the `selected` event, served open at the `schemaUri`
those events carry.

Every route acts in the workspace of the request (`watcher.web.deps.authorize`): a policy of another
workspace is a 404 exactly like one that does not exist, and a policy put names a registry of that workspace.
A body is the CLI's options as JSON (`registry`, `repository`, one strategy, `filter`, `extract`,
`prerelease`), checked by the same `PolicySpec.build` with the same one-line errors.

A write that changes a selection commits its `selected` event to the outbox with the policy; the relay is
then run once the answer is sent, so the event is on the stream at once rather than at the next sweep (which
still catches up within 5 s if Redis did not answer: the event waits in the database, never lost).
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, field_validator

from watcher.db import session_scope
from watcher.errors import InputError, NotFoundError, StateError
from watcher.outbox import events as outbox_events
from watcher.policies.store import PolicySpec, remove, save
from watcher.read import policies as readpolicies
from watcher.read.model import MAX_PAGE
from watcher.registrations.spec import NAME
from watcher.web.deps import Caller, DbSession
from watcher.web.feed import event_json

router = APIRouter(prefix="/policies", tags=["policies"])
#: open routes (no token): the schema of the `selected` event, which any consumer of the stream may fetch
public = APIRouter(include_in_schema=False)
log = logging.getLogger("watcher.web")

HISTORY = 20
History = Annotated[int, Query(ge=0, le=MAX_PAGE, description="how many of the newest `selected` events to include")]
RegistryName = Annotated[str | None, Query(max_length=255, description="only the policies of this registry")]
SCHEMA_MEDIA_TYPE = "application/schema+json"


class PolicyBody(BaseModel):
    """`watcher policy add`'s options as JSON: exactly one of `semver`, `numeric`, `alphabetical`,
    `newest_build`, `digest`. The name is the path's (`name` in the body, if given, must be the same)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    registry: StrictStr
    repository: StrictStr
    semver: StrictStr | None = None
    numeric: StrictStr | None = None
    alphabetical: StrictStr | None = None
    newest_build: StrictBool = False
    digest: StrictStr | None = None
    filter: StrictStr = ""
    extract: StrictStr = ""
    prerelease: StrictBool = False

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # no name, tag or pattern can hold one, and PostgreSQL's text cannot store one (a 500 otherwise)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    def options(self) -> dict[str, Any]:
        """The strategy's options, as `Policy.from_options` takes them."""
        return self.model_dump(exclude={"name", "registry", "repository"})


class PolicySelection(BaseModel):
    tag: str
    digest: str
    #: `HOST/REPOSITORY:TAG@DIGEST`: the image to deploy
    reference: str | None
    #: when the policy came to select it
    since: str | None


class Policy(BaseModel):
    """`watcher policy show --json`: the definition, and what it selects now (`selected`: null when no tag
    qualifies); `considered` tags took part in the last selection, `ignored` ones were filtered out or have
    no key for the strategy."""

    name: str
    registry: str
    repository: str
    #: the strategy as the body of a PUT gives it
    policy: dict[str, Any]
    #: the strategy in one line, for a person
    strategy: str
    selected: PolicySelection | None
    considered: int
    ignored: int
    evaluated_at: str | None
    created_at: str | None
    updated_at: str | None


class SelectionEvent(BaseModel):
    """A `selected` event, as `/api/v1/events` shows events: the stream entry's fields plus `id`."""

    id: int
    event_id: str
    change: Literal["selected"]
    workspace: str
    registry: str
    repository: str
    policy: str
    tag: str
    digest: str
    previous_tag: str
    previous_digest: str
    pushed_at: str
    detected_at: str
    cloudevent: str


class PolicyDetail(Policy):
    #: its `selected` events, newest first (`?history=N`, 20 unless asked)
    history: list[SelectionEvent]


class PolicyList(BaseModel):
    items: list[Policy]


@router.get("", response_model=PolicyList)
def list_policies(session: DbSession, caller: Caller, registry: RegistryName = None) -> dict[str, Any]:
    """The workspace's policies (of one registry, with `?registry=`), by name, each with its selection."""
    views = readpolicies.policies(session, workspace_id=caller.workspace_id, registry=registry)
    return {"items": [view.as_json() for view in views]}


@router.get("/{name}", response_model=PolicyDetail)
def get_policy(session: DbSession, caller: Caller, name: str, history: History = HISTORY) -> dict[str, Any]:
    """One policy with its selection and its newest `selected` events."""
    return detail(session, _known(name), caller.workspace_id, history)


def detail(session: Any, name: str, workspace_id: int, history: int = HISTORY) -> dict[str, Any]:
    """The policy as `GET /api/v1/policies/{name}` answers it."""
    view = readpolicies.policy(session, name, workspace_id=workspace_id)
    rows = readpolicies.selection_history(session, name, workspace_id=workspace_id, limit=history) if history else []
    return {**view.as_json(), "history": [event_json(row) for row in rows]}


@router.put(
    "/{name}",
    response_model=PolicyDetail,
    responses={201: {"model": PolicyDetail, "description": "created"}},
)
def put_policy(
    caller: Caller, name: str, body: PolicyBody, response: Response, background: BackgroundTasks
) -> dict[str, Any]:
    """Create the policy (201) or put this definition in place of the one of that name (200), evaluated
    against the repository's stored tags at once: a changed selection is one `selected` event."""
    if body.name is not None and body.name != name:
        raise InputError(f"the body names policy {body.name[:80]!r}, the path {name[:80]!r}", field="name")
    spec = PolicySpec.build(name, body.registry, body.repository, **body.options())
    try:
        with session_scope() as session:
            saved = save(session, spec, workspace_id=caller.workspace_id, replace=True)
    except NotFoundError as exc:  # the registry the body names: the request's input, not the resource
        raise InputError(str(exc), field="registry") from None
    if saved.events:
        background.add_task(publish)
    response.status_code = 201 if saved.created else 200
    with session_scope() as session:
        return detail(session, name, caller.workspace_id)


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_policy(caller: Caller, name: str) -> Response:
    """Forget the policy; its `selected` events stay in the history."""
    with session_scope() as session:
        remove(session, _known(name), workspace_id=caller.workspace_id)
    return Response(status_code=204)


def _known(name: str) -> str:
    """`name`, when it can name a policy at all; else the 404 of a missing one (a NUL, say, never reaches
    the database)."""
    if not NAME.match(name):
        raise readpolicies.missing(name[:80])
    return name


def publish() -> None:
    """Relay the outbox now (after the answer is sent): a policy's `selected` event reaches the stream at
    once. A Redis that does not answer loses nothing: the event stays in the outbox for the relay's sweep."""
    from watcher import bus
    from watcher.outbox.relay import relay

    try:
        relay(bus.connect(), wait_seconds=2)
    except StateError as exc:
        log.warning("%s", exc)


@cache
def _schema() -> bytes:
    return (Path(outbox_events.__file__).parent / outbox_events.SELECTED_SCHEMA_FILE).read_bytes()


@public.get(outbox_events.SELECTED_SCHEMA_PATH)
def selected_schema() -> Response:
    """The JSON Schema of `dev.cdeventsx.watcher-policy.selected.0.1.0`, the `schemaUri` of every `selected`
    event: open (it holds nothing of the installation), versioned so never changed, so cached for a day."""
    headers = {"Cache-Control": "public, max-age=86400", "Access-Control-Allow-Origin": "*"}
    return Response(_schema(), media_type=SCHEMA_MEDIA_TYPE, headers=headers)
