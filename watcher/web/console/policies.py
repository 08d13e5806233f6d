"""The console's policy pages: the workspace's policies with what each selects now, and one policy with its
selection (the pull reference to deploy, since when, how many tags it weighed) and its selection history.

Read-only: a policy is put with `watcher policy add`, a `registry apply` file or `PUT /api/v1/policies/{name}`.
Like every console page, they show the session's workspace alone: another workspace's policy is the same
404 page as one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from watcher.db import session_scope
from watcher.errors import NotFoundError
from watcher.read import policies as readpolicies
from watcher.web.console import auth
from watcher.web.console.render import page
from watcher.web.console.routes import User

router = APIRouter(prefix="/console", include_in_schema=False)
HISTORY_PER_PAGE = 50


@router.get("/policies", response_class=HTMLResponse)
def policies_page(request: Request, user: User) -> Response:
    with session_scope() as session:
        views = readpolicies.policies(session, workspace_id=user.workspace_id)
    return page(request, "policies.html", user, policies=views)


@router.get("/policies/{name}", response_class=HTMLResponse)
def policy_page(request: Request, user: User, name: str) -> Response:
    with session_scope() as session:
        try:
            view = readpolicies.policy(session, name, workspace_id=user.workspace_id)
        except NotFoundError as exc:
            raise auth.Refused(404, str(exc)) from None
        history = readpolicies.selection_history(session, name, workspace_id=user.workspace_id, limit=HISTORY_PER_PAGE)
    return page(request, "policy.html", user, policy=view, history=history, shown=HISTORY_PER_PAGE)
