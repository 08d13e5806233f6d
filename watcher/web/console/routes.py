"""The console's pages: login, registries, one registry (repositories, tags, polls), add a registry, events.

Server-rendered; `static/console.js` adds the provider switch, copy buttons, "Test connection" without
leaving the page, and live events. Every page but the login page needs a live session (`auth`); every
POST carries the session's CSRF token; only admins (and operators) may act.

Every page shows one workspace, the session's (`Principal.workspace_id`): its token's, or the one an
operator switched to. A registry of another workspace is looked up in that one only, so it is the same 404
as a registry that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData, UploadFile

from watcher.db import session_scope
from watcher.errors import NotFoundError, WatcherError
from watcher.outbox.events import CHANGES
from watcher.polling.queue import queue_poll
from watcher.read import model as readmodel
from watcher.registrations.keys import registry_key
from watcher.web.console import actions, auth, providers, subscriptions
from watcher.web.console.render import page
from watcher.web.deps import Principal
from watcher.web.routes.registries import checked_repository

router = APIRouter(prefix="/console", include_in_schema=False)
User = Annotated[Principal, Depends(auth.current_user)]
STATIC = providers.__file__.rsplit("/", 1)[0] + "/static"
MAX_KEY_BYTES = 64 * 1024
REPOSITORIES_PER_PAGE = 50
TAGS_PER_PAGE = 100
POLLS_PER_PAGE = 20
EVENTS_PER_PAGE = 50


def install(app: FastAPI) -> None:
    """Mount the console on the app: its CSRF key, pages, static files and its two answers."""
    auth.install_sessions(app)
    app.include_router(router)
    app.include_router(subscriptions.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @app.exception_handler(auth.LoginRequired)
    async def _login(_: Request, exc: auth.LoginRequired) -> Response:
        return RedirectResponse(auth.login_url(exc.next_path), status_code=303)

    @app.exception_handler(auth.Refused)
    async def _refused(request: Request, exc: auth.Refused) -> Response:
        user = await anyio.to_thread.run_sync(auth.user_of, request)
        return page(request, "error.html", user, http_status=exc.status, status=exc.status, message=exc.message)


def _go(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# ---- login ------------------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", None, next=auth.safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await auth.checked_form(request)
    token, target = str(form.get("token") or ""), auth.safe_next(str(form.get("next") or ""))
    opened = await anyio.to_thread.run_sync(auth.log_in, request, token) if token.strip() else None
    if opened is None:
        error = "the token is unknown, revoked or expired" if token.strip() else "paste a token to log in"
        return page(request, "login.html", None, http_status=401, next=target, error=error)
    response = _go(target)
    auth.set_cookie(response, opened[0])
    return response


@router.post("/logout")
async def logout(request: Request, user: User) -> Response:
    """The session is deleted server-side: a copy of its cookie is refused from now on."""
    await auth.checked_form(request)
    await anyio.to_thread.run_sync(auth.log_out, request)
    response = _go(auth.LOGIN_PATH)
    auth.clear_cookie(response)
    return response


# ---- workspaces ---------------------------------------------------------------------------------------
@router.post("/workspace")
async def switch_workspace(request: Request, user: User) -> Response:
    """An operator's console shows another workspace from now on (stored with the session, so the API's
    reads its live feed makes with the session cookie act in it too). Back to the same kind of page: a
    registry of the one left is not in the one chosen."""
    form = await auth.checked_form(request)
    auth.require_operator(user)
    name = str(form.get("workspace") or "").strip()
    await anyio.to_thread.run_sync(auth.switch_workspace, request, name)
    await anyio.to_thread.run_sync(auth.leave_notice, request, f"the console now shows workspace {name!r}")
    back = auth.safe_next(str(form.get("back") or ""))
    kinds = ("/console/events", "/console/policies")
    return _go(next((kind for kind in kinds if back.startswith(kind)), "/console/"))


# ---- registries ---------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def registries_page(request: Request, user: User) -> Response:
    with session_scope() as session:
        statuses = readmodel.registry_statuses(session, workspace_id=user.workspace_id)
        lag = readmodel.schedule_lag(session, workspace_id=user.workspace_id)
    return page(request, "registries.html", user, statuses=statuses, lag=lag)


@router.post("/registries/{name}/poll")
async def poll_now(request: Request, user: User, name: str) -> Response:
    form = await auth.checked_form(request)
    auth.require_admin(user)
    try:  # by its key: the registry of this name in the session's workspace, and no other
        await anyio.to_thread.run_sync(queue_poll, registry_key(auth.workspace_of(request), name))
    except NotFoundError as exc:
        raise auth.Refused(404, str(exc)) from None
    except WatcherError as exc:
        raise auth.Refused(503, f"the poll could not be queued: {exc}") from None
    notice = f"a poll of {name!r} is queued: the page shows its outcome once a worker ran it"
    await anyio.to_thread.run_sync(auth.leave_notice, request, notice)
    return _go(auth.safe_next(str(form.get("back") or "")))


@router.get("/registries/{name}", response_class=HTMLResponse)
def registry_page(
    request: Request, user: User, name: str, cursor: str | None = None, polls: str | None = None
) -> Response:
    workspace_id = user.workspace_id
    with session_scope() as session:
        try:
            described = readmodel.registry_detail(session, name, workspace_id=workspace_id)
        except NotFoundError as exc:
            raise auth.Refused(404, str(exc)) from None
        (status,) = readmodel.registry_statuses(session, [name], workspace_id=workspace_id)
        repositories = _paged(readmodel.repositories_page, session, user, name, cursor, REPOSITORIES_PER_PAGE)
        history = _paged(readmodel.polls_page, session, user, name, polls, POLLS_PER_PAGE)
        return page(
            request,
            "registry.html",
            user,
            status=status,
            registry=described,
            repositories=repositories,
            polls=history,
            cursor=cursor,
        )


@router.get("/registries/{name}/repositories/{repository:path}", response_class=HTMLResponse)
def repository_page(
    request: Request, user: User, name: str, repository: str, cursor: str | None = None, order: str = "name"
) -> Response:
    sort: readmodel.ImageOrder = next((known for known in readmodel.IMAGE_ORDERS if known == order), "name")
    with session_scope() as session:
        try:
            tags = readmodel.images_page(
                session,
                name,
                checked_repository(repository),
                order=sort,
                cursor=cursor,
                limit=TAGS_PER_PAGE,
                workspace_id=user.workspace_id,
            )
        except NotFoundError as exc:  # no such registry in this workspace: checked before the cursor
            raise auth.Refused(404, str(exc)) from None
        except WatcherError as exc:
            raise auth.Refused(400, str(exc)) from None
    return page(request, "repository.html", user, name=name, repository=repository, tags=tags, order=sort)


def _paged(query: Any, session: Any, user: Principal, name: str, cursor: str | None, limit: int) -> readmodel.Page:
    try:
        page_: readmodel.Page = query(session, name, cursor=cursor, limit=limit, workspace_id=user.workspace_id)
    except NotFoundError as exc:
        raise auth.Refused(404, str(exc)) from None
    except WatcherError as exc:
        raise auth.Refused(400, str(exc)) from None
    return page_


# ---- add a registry -----------------------------------------------------------------------------------
@router.get("/add", response_class=HTMLResponse)
def add_form(request: Request, user: User, provider: str | None = None) -> Response:
    auth.require_admin(user)
    return _add_page(request, user, {"provider": providers.provider(provider).key, "interval": "5m"})


@router.post("/add", response_class=HTMLResponse)
async def add(request: Request, user: User) -> Response:
    form = await auth.checked_form(request)
    auth.require_admin(user)
    values = await _values(form)
    wants_json = "application/json" in request.headers.get("accept", "")
    action = actions.test if form.get("action") == "test" else actions.save
    workspace = auth.workspace_of(request)  # saved into the workspace the console shows
    try:
        await anyio.to_thread.run_sync(lambda: action(values, workspace=workspace))
    except WatcherError as exc:
        field, message = exc.field, str(exc)
        if wants_json:
            return JSONResponse({"ok": False, "message": message, "field": field}, status_code=422)
        return _add_page(request, user, values, http_status=422, error=message, error_field=field)
    if action is actions.test:
        message = "connection OK: the registry answered, accepted the credentials and could be listed"
        if wants_json:
            return JSONResponse({"ok": True, "message": message, "field": None})
        return _add_page(request, user, values, notice=message)
    notice = f"registry {values['name']!r} is saved: it is polled within a tick"
    await anyio.to_thread.run_sync(auth.leave_notice, request, notice)
    return _go(f"/console/registries/{values['name']}")


def _add_page(
    request: Request,
    user: Principal,
    values: dict[str, Any],
    *,
    http_status: int = 200,
    error: str | None = None,
    error_field: str | None = None,
    notice: str | None = None,
) -> Response:
    chosen = providers.provider(str(values.get("provider") or ""))
    shown_fields = chosen.field_names() | providers.COMMON_FIELDS
    return page(
        request,
        "add.html",
        user,
        http_status=http_status,
        providers=providers.PROVIDERS,
        chosen=chosen.key,
        values={k: v for k, v in values.items() if k not in providers.SECRET_FIELDS},
        repositories_text="\n".join(values.get("repositories") or []),
        error=error,
        error_field=error_field if error_field in shown_fields else None,
        notice=notice,
    )


async def _values(form: FormData) -> dict[str, Any]:
    """The posted form as `build_spec` values: only the chosen provider's fields, the JSON key read from
    its upload, the repositories one per line."""
    chosen = providers.provider(str(form.get("provider") or ""))
    values: dict[str, Any] = {"provider": chosen.key}
    for key in ("name", "interval"):
        values[key] = str(form.get(key) or "").strip()
    values["repositories"] = [r for r in str(form.get("repositories") or "").replace(",", "\n").split() if r]
    for field in chosen.fields:
        raw = form.get(field.name)
        if isinstance(raw, UploadFile):
            data = await raw.read(MAX_KEY_BYTES + 1)
            if len(data) > MAX_KEY_BYTES:
                raise auth.Refused(413, "the key file is over 64 KiB: upload the service-account JSON key")
            values[field.name] = data.decode("utf-8", errors="replace").strip()
        elif raw is not None:
            text = str(raw)
            values[field.name] = text if field.name in providers.SECRET_FIELDS else text.strip()
    return values


# ---- events -------------------------------------------------------------------------------------------
@router.get("/events", response_class=HTMLResponse)
def events_page(
    request: Request,
    user: User,
    registry: str = "",
    repository: str = "",
    tag: str = "",
    change: str = "",
    cursor: str | None = None,
) -> Response:
    change = change if change in CHANGES else ""
    filters = readmodel.EventFilters(registry or None, repository or None, tag or None, change or None)
    with session_scope() as session:
        workspace_id = user.workspace_id
        try:
            found = readmodel.events_page(
                session, filters, cursor=cursor, limit=EVENTS_PER_PAGE, workspace_id=workspace_id
            )
        except WatcherError as exc:
            raise auth.Refused(400, str(exc)) from None
        names = readmodel.registry_names(session, workspace_id=workspace_id)
        newest = max((e.id for e in found.items), default=0) if cursor is None else 0
        if cursor is None and not found.items:
            newest = readmodel.newest_event_id(session, workspace_id=workspace_id)
        query = {"registry": registry, "repository": repository, "tag": tag, "change": change}
        return page(
            request,
            "events.html",
            user,
            events=found,
            names=names,
            query=query,
            live=cursor is None,
            newest=newest,
            newest_cursor=readmodel.encode_cursor([newest]),
            changes=CHANGES,
        )
