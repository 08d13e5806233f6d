"""The console's subscription pages: every subscription of the workspace with its state, and one
subscription with its recent deliveries and its dead letters, which an admin may send again; and for admins
a form that adds one (its generated secret shown once, on the page that answers the form), a button that
sends it a sample event and shows the answer, and one that removes it — what `watcher subscription
add|test|rm` do, through the same `SubscriptionSpec.build`, `save`, `manage.test` and `remove`.

The same read model as `watcher subscription list|show|deliveries` and the API; the same session, CSRF and
role checks as every console page (`watcher.web.console.auth`). A subscription of another workspace is the
same 404 as one that does not exist. No page shows a secret, and an endpoint's URL only as
`watcher.read.subscriptions.shown_url` shows it.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from watcher.db import session_scope
from watcher.delivery import manage
from watcher.delivery.manage import redeliver
from watcher.delivery.subscriptions import FORMATS, SubscriptionSpec, remove, save
from watcher.errors import NotFoundError, WatcherError
from watcher.outbox.events import CHANGES
from watcher.read import subscriptions as reads
from watcher.web.console import auth
from watcher.web.console.render import NO_REFUSAL, Refusal, form_page, page
from watcher.web.deps import Principal

router = APIRouter(prefix="/console", include_in_schema=False)
User = Annotated[Principal, Depends(auth.current_user)]
DELIVERIES_PER_PAGE = 50
#: the form's text fields (the changes are checkboxes, the secret is never shown back)
FIELDS = ("name", "url", "format", "registry", "repository", "policy")


@router.get("/subscriptions", response_class=HTMLResponse)
def subscriptions_page(request: Request, user: User) -> Response:
    with session_scope() as session:
        views = reads.subscriptions(session, workspace_id=user.workspace_id)
    return page(request, "subscriptions.html", user, subscriptions=views)


@router.get("/subscriptions/{name}", response_class=HTMLResponse)
def subscription_page(request: Request, user: User, name: str, cursor: str | None = None) -> Response:
    workspace_id = user.workspace_id
    with session_scope() as session:
        try:
            view = reads.subscription(session, name, workspace_id=workspace_id)
            recent = reads.deliveries_page(
                session, name, cursor=cursor, limit=DELIVERIES_PER_PAGE, workspace_id=workspace_id
            )
            dead = reads.deliveries_page(
                session, name, state="dead", limit=DELIVERIES_PER_PAGE, workspace_id=workspace_id
            )
        except NotFoundError as exc:
            raise auth.Refused(404, str(exc)) from None
        except WatcherError as exc:
            raise auth.Refused(400, str(exc)) from None
    return page(request, "subscription.html", user, subscription=view, recent=recent, dead=dead, cursor=cursor)


@router.post("/subscriptions/{name}/redeliver")
async def redeliver_dead_letters(request: Request, user: User, name: str) -> Response:
    """Every dead letter of the subscription back to pending, in its place in the order."""
    await auth.checked_form(request)
    auth.require_admin(user)

    def run() -> str:
        with session_scope() as session:
            count = redeliver(session, name, workspace_id=user.workspace_id)
        return f"{count} dead letter{'' if count == 1 else 's'} of {name!r} pending again: they are sent in their order"

    return await auth.acted(request, run, f"/console/subscriptions/{name}")


@router.get("/add-subscription", response_class=HTMLResponse)
def add_subscription_form(request: Request, user: User) -> Response:
    auth.require_admin(user)
    return _form(request, user, {"format": FORMATS[0], "changes": []})


@router.post("/add-subscription", response_class=HTMLResponse)
async def add_subscription(request: Request, user: User) -> Response:
    form = await auth.checked_form(request)
    auth.require_admin(user)
    values: dict[str, Any] = {key: str(form.get(key) or "").strip() for key in FIELDS}
    values["changes"] = [str(change) for change in form.getlist("change")]
    given_secret = str(form.get("secret") or "").strip() or None
    try:
        spec = SubscriptionSpec.build(
            values["name"],
            values["url"],
            values["format"],
            registry=values["registry"] or None,
            repository=values["repository"] or None,
            changes=values["changes"] or None,
            policy=values["policy"] or None,
        )
        secret = await anyio.to_thread.run_sync(_save, spec, user.workspace_id, given_secret)
    except WatcherError as exc:
        return _form(request, user, values, Refusal(str(exc), exc.field))
    shown = secret if given_secret is None else None  # a secret the admin typed is never echoed
    return page(request, "subscription_added.html", user, http_status=201, name=spec.name, secret=shown)


@router.post("/subscriptions/{name}/test")
async def test_subscription(request: Request, user: User, name: str) -> Response:
    """One sample event (never in the history) sent now; what the endpoint answered is the next notice."""
    await auth.checked_form(request)
    auth.require_admin(user)

    def run() -> str:
        with session_scope() as session:
            row = reads.subscription_row(session, name, workspace_id=user.workspace_id)
            event = manage.sample_event(session, row)
        outcome = manage.test(row, event)  # the transaction is over before the endpoint is contacted
        verdict = "accepted" if outcome.delivered else "not accepted"
        return f"the sample event {outcome.event_id} was {verdict}: {outcome.line()}"

    return await auth.acted(request, run, f"/console/subscriptions/{name}")


@router.post("/subscriptions/{name}/remove")
async def remove_subscription(request: Request, user: User, name: str) -> Response:
    await auth.checked_form(request)
    auth.require_admin(user)

    def run() -> str:
        with session_scope() as session:
            remove(session, reads.askable(name), workspace_id=user.workspace_id)
        return f"subscription {name!r} is removed with its deliveries; the events stay"

    return await auth.acted(request, run, "/console/subscriptions")


def _save(spec: SubscriptionSpec, workspace_id: int, secret: str | None) -> str:
    with session_scope() as session:
        return save(session, spec, workspace_id=workspace_id, secret=secret)


def _form(request: Request, user: Principal, values: dict[str, Any], refusal: Refusal = NO_REFUSAL) -> Response:
    fields = (*FIELDS, "changes", "secret")
    status = 422 if refusal.error else 200
    return form_page(
        request, "add_subscription.html", user, values, fields, refusal, status, formats=FORMATS, changes=CHANGES
    )
