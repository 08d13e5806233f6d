"""`/api/v1/subscriptions`: the workspace's subscriptions, their deliveries, a test send and redelivery of
dead letters — what `watcher subscription` does, over HTTP.

Every route acts in the workspace of the request (`watcher.web.deps.authorize`): another workspace's
subscription is a 404 exactly like one that does not exist. Readers read; creating, removing, testing and
redelivering need an admin (or operator) token. A secret appears once, in the answer to the POST that made
it; a remote request gives only literal values (no `@PATH` is read).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from watcher.db import session_scope
from watcher.delivery import manage
from watcher.delivery.subscriptions import SubscriptionSpec, remove, save
from watcher.errors import ConflictError, InputError
from watcher.read import model as readmodel
from watcher.read import subscriptions as reads
from watcher.web.deps import Caller, DbSession
from watcher.web.schemas import Items, Page

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])
Limit = Annotated[int, Query(ge=1, le=readmodel.MAX_PAGE, description="rows per page")]
Cursor = Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the previous page")]
State = Annotated[Literal["pending", "delivered", "dead"] | None, Query(description="only deliveries in this state")]


# ---- bodies ---------------------------------------------------------------------------------------
class SubscriptionIn(BaseModel):
    """A new subscription: `watcher subscription add`'s options."""

    model_config = ConfigDict(extra="forbid")
    name: str
    url: str
    format: str = "cloudevents"
    registry: str | None = None
    repository: str | None = None
    changes: list[str] | None = None
    policy: str | None = None
    #: the signing secret (default: a new random one), or for github-dispatch the GitHub token
    secret: str | None = None


class Subscription(BaseModel):
    """A subscription and how its deliveries go; never its secret (a Slack or Teams URL shows its host only)."""

    name: str
    url: str
    format: str
    filters: dict[str, Any]
    state: Literal["ok", "failing"]
    pending: int
    dead: int
    last_delivered_at: str | None
    last_failed_at: str | None
    last_error: str
    created_at: str | None


class SubscriptionCreated(Subscription):
    #: the secret the watcher made, shown this once (null when the request gave one)
    secret: str | None


class DeliveredEvent(BaseModel):
    event_id: str
    registry: str
    repository: str
    tag: str
    change: str
    digest: str
    policy: str | None
    detected_at: str | None


class Delivery(BaseModel):
    id: int
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    created_at: str | None
    next_attempt_at: str | None
    finished_at: str | None
    last_status: int | None
    last_error: str
    event: DeliveredEvent


class TestAnswer(BaseModel):
    """What the endpoint answered the sample event (`delivered`: it accepted it)."""

    delivered: bool
    outcome: Literal["delivered", "retry", "permanent"]
    status: int | None
    error: str
    excerpt: str
    event_id: str


class RedeliverIn(BaseModel):
    """`{"all": true}`, or the ids of the dead letters to send again."""

    model_config = ConfigDict(extra="forbid")
    all: bool = False
    delivery_ids: list[int] | None = None


class Redelivered(BaseModel):
    redelivered: int


# ---- routes ---------------------------------------------------------------------------------------
@router.get("", response_model=Items[Subscription])
def list_subscriptions(session: DbSession, caller: Caller) -> dict[str, Any]:
    return {"items": [view.as_json() for view in reads.subscriptions(session, workspace_id=caller.workspace_id)]}


@router.post("", status_code=201, response_model=SubscriptionCreated)
def create_subscription(caller: Caller, body: SubscriptionIn) -> dict[str, Any]:
    """Subscribe an endpoint: checked (its host too, against the network policy) before it is saved; 409
    if the name exists in the workspace. The answer holds the secret, this once."""
    spec = SubscriptionSpec.build(
        body.name,
        body.url,
        body.format,
        registry=body.registry,
        repository=body.repository,
        changes=body.changes,
        policy=body.policy,
    )
    with session_scope() as session:
        try:
            secret = save(session, spec, workspace_id=caller.workspace_id, secret=body.secret)
        except InputError as exc:
            if exc.field == "name":  # the name was checked by `build`: here it can only be taken
                raise ConflictError(str(exc), field="name") from None
            raise
    with session_scope() as session:
        view = reads.subscription(session, spec.name, workspace_id=caller.workspace_id)
    return {**view.as_json(), "secret": secret if body.secret is None else None}


@router.get("/{name}", response_model=Subscription)
def get_subscription(session: DbSession, caller: Caller, name: str) -> dict[str, Any]:
    return reads.subscription(session, name, workspace_id=caller.workspace_id).as_json()


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_subscription(caller: Caller, name: str) -> Response:
    """Forget a subscription and its deliveries; the events stay."""
    with session_scope() as session:
        remove(session, name, workspace_id=caller.workspace_id)
    return Response(status_code=204)


@router.post("/{name}/test", response_model=TestAnswer)
def test_subscription(caller: Caller, name: str) -> dict[str, Any]:
    """Send one sample event (id `test-…`, never in the history) and return what the endpoint answered:
    200 whatever it answered (`delivered` says whether it accepted it)."""
    with session_scope() as session:
        row = reads.subscription_row(session, name, workspace_id=caller.workspace_id)
        event = manage.sample_event(session, row)
    return manage.test(row, event).as_json()  # the transaction is over before the endpoint is contacted


@router.get("/{name}/deliveries", response_model=Page[Delivery])
def list_deliveries(
    session: DbSession, caller: Caller, name: str, state: State = None, cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    """The subscription's deliveries, newest first (`state=dead`: its dead letters)."""
    page = reads.deliveries_page(
        session, name, state=state, cursor=cursor, limit=limit, workspace_id=caller.workspace_id
    )
    return {"items": [item.as_json() for item in page.items], "next_cursor": page.next_cursor}


@router.post("/{name}/redeliver", response_model=Redelivered)
def redeliver(caller: Caller, name: str, body: RedeliverIn) -> dict[str, int]:
    """Put dead letters back to pending, in their place in the subscription's order."""
    if body.all == (body.delivery_ids is not None):
        raise InputError('give {"all": true} or "delivery_ids", not both', field="delivery_ids")
    with session_scope() as session:
        count = manage.redeliver(
            session, name, workspace_id=caller.workspace_id, delivery_ids=None if body.all else body.delivery_ids
        )
    return {"redelivered": count}
