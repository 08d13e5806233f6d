"""The console's policy pages: the workspace's policies with what each selects now, one policy with its
selection (the pull reference to deploy, since when, how many tags it weighed) and its selection history,
and for admins (and operators) a form that adds one and a button that removes one.

The form takes what `watcher policy add` takes and hands it to the same `PolicySpec.build` and
`policies.store.save` (create only: a name in use is refused, as by the CLI); an error is shown next to the
field it concerns. A new policy that selects a tag writes its `selected` event with it, relayed at once as
by the API. Like every console page, they show the session's workspace alone: another workspace's policy is
the same 404 page as one that does not exist.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from watcher.db import session_scope
from watcher.errors import NotFoundError, WatcherError
from watcher.policies.store import PolicySpec, remove, save
from watcher.read import policies as readpolicies
from watcher.web.console import auth
from watcher.web.console.render import NO_REFUSAL, Refusal, form_page, page
from watcher.web.console.routes import User
from watcher.web.deps import Principal
from watcher.web.routes.policies import publish

router = APIRouter(prefix="/console", include_in_schema=False)
HISTORY_PER_PAGE = 50
#: the form's strategy choices, as `Policy.from_options` names them (newest-build takes no argument)
STRATEGIES = ("semver", "numeric", "alphabetical", "newest-build", "digest")
#: errors about a strategy's argument are shown next to the argument's field
ARGUMENT_FIELDS = frozenset({"semver", "numeric", "alphabetical", "digest"})
FIELDS = ("name", "registry", "repository", "strategy", "argument", "filter", "extract")


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


@router.get("/add-policy", response_class=HTMLResponse)
def add_policy_form(request: Request, user: User, registry: str = "") -> Response:
    auth.require_admin(user)
    return _form(request, user, {"registry": registry, "strategy": "semver"})


@router.post("/add-policy", response_class=HTMLResponse)
async def add_policy(request: Request, user: User) -> Response:
    form = await auth.checked_form(request)
    auth.require_admin(user)
    values = _values(form)
    try:
        spec = PolicySpec.build(values["name"], values["registry"], values["repository"], **_options(values))
        selects = await anyio.to_thread.run_sync(_save, spec, user.workspace_id)
    except NotFoundError as exc:  # the registry chosen is not (or no longer) one of this workspace
        return _form(request, user, values, Refusal(str(exc), "registry"))
    except WatcherError as exc:
        field = "argument" if exc.field in ARGUMENT_FIELDS else exc.field
        return _form(request, user, values, Refusal(str(exc), field))
    notice = f"policy {spec.name!r} is saved" + ("" if selects else ": it selects nothing yet")
    await anyio.to_thread.run_sync(auth.leave_notice, request, notice)
    return RedirectResponse(f"/console/policies/{spec.name}", status_code=303)


@router.post("/policies/{name}/remove")
async def remove_policy(request: Request, user: User, name: str) -> Response:
    await auth.checked_form(request)
    auth.require_admin(user)
    return await auth.acted(request, lambda: _remove(name, user.workspace_id), "/console/policies")


def _save(spec: PolicySpec, workspace_id: int) -> bool:
    """Save the new policy; whether it selects a tag (its first `selected` event, relayed at once)."""
    with session_scope() as session:
        saved = save(session, spec, workspace_id=workspace_id)
    if saved.events:
        publish()
    return any(event.tag for event in saved.events)


def _remove(name: str, workspace_id: int) -> str:
    with session_scope() as session:
        remove(session, readpolicies.policy(session, name, workspace_id=workspace_id).name, workspace_id=workspace_id)
    return f"policy {name!r} is removed; its events stay"


def _values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {key: str(form.get(key) or "").strip() for key in FIELDS}
    values["prerelease"] = form.get("prerelease") == "on"
    return values


def _options(values: dict[str, Any]) -> dict[str, Any]:
    """The form's strategy and argument as `Policy.from_options` takes them."""
    strategy, argument = values["strategy"], values["argument"]
    if strategy not in STRATEGIES:
        raise auth.Refused(400, f"unknown strategy {strategy[:40]!r}: one of {', '.join(STRATEGIES)}")
    chosen: dict[str, Any] = {"newest_build": True} if strategy == "newest-build" else {strategy: argument}
    return {**chosen, "filter": values["filter"], "extract": values["extract"], "prerelease": values["prerelease"]}


def _form(request: Request, user: Principal, values: dict[str, Any], refusal: Refusal = NO_REFUSAL) -> Response:
    status = 422 if refusal.error else 200
    return form_page(request, "add_policy.html", user, values, FIELDS, refusal, status, strategies=STRATEGIES)
