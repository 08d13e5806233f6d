"""The console's subscription pages: every subscription of the workspace with its state, and one
subscription with its recent deliveries and its dead letters, which an admin may send again.

The same read model as `watcher subscription list|show|deliveries` and the API; the same session, CSRF and
role checks as every console page (`watcher.web.console.auth`). A subscription of another workspace is the
same 404 as one that does not exist. No page shows a secret, and an endpoint's URL only as
`watcher.read.subscriptions.shown_url` shows it.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from watcher.db import session_scope
from watcher.delivery.manage import redeliver
from watcher.errors import NotFoundError, WatcherError
from watcher.read import subscriptions as reads
from watcher.web.console import auth
from watcher.web.console.render import page
from watcher.web.deps import Principal

router = APIRouter(prefix="/console/subscriptions", include_in_schema=False)
User = Annotated[Principal, Depends(auth.current_user)]
DELIVERIES_PER_PAGE = 50


@router.get("", response_class=HTMLResponse)
def subscriptions_page(request: Request, user: User) -> Response:
    with session_scope() as session:
        views = reads.subscriptions(session, workspace_id=user.workspace_id)
    return page(request, "subscriptions.html", user, subscriptions=views)


@router.get("/{name}", response_class=HTMLResponse)
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


@router.post("/{name}/redeliver")
async def redeliver_dead_letters(request: Request, user: User, name: str) -> Response:
    """Every dead letter of the subscription back to pending, in its place in the order."""
    await auth.checked_form(request)
    auth.require_admin(user)

    def run() -> int:
        with session_scope() as session:
            return redeliver(session, name, workspace_id=user.workspace_id)

    try:
        count = await anyio.to_thread.run_sync(run)
    except NotFoundError as exc:
        raise auth.Refused(404, str(exc)) from None
    notice = f"{count} dead letter{'' if count == 1 else 's'} of {name!r} pending again: they are sent in their order"
    await anyio.to_thread.run_sync(auth.leave_notice, request, notice)
    return RedirectResponse(f"/console/subscriptions/{name}", status_code=303)
