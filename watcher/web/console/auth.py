"""Who is using the console: a server-side session named by a random id in an HttpOnly, SameSite=Strict
cookie (`watcher.web.console.sessions`), and the CSRF token every form carries, bound to that id.

The cookie holds no part of the token: logging out deletes the session, so a copy of the cookie is refused
from then on, and so it is once the token is revoked or expires, or the session is idle or old. Before
login the cookie holds a random id that names no session, only so that the login form's CSRF token is
bound to something. A page opened without a live session redirects to the login page; a POST whose hidden
`csrf` field is not this cookie's is refused before anything is done.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from watcher.db import session_scope
from watcher.errors import NotFoundError
from watcher.registrations import vault, workspaces
from watcher.settings import get_settings
from watcher.web.console import sessions as console_sessions
from watcher.web.deps import COOKIE, WRITE_ROLES, Principal, session_id

LOGIN_PATH = "/console/login"


class LoginRequired(Exception):
    """No live session: the person is sent to the login page, then back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class Refused(Exception):
    """A console request that may not be done: shown as a page with this one line and status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def install_sessions(app: FastAPI) -> None:
    """The key CSRF tokens are made with, derived once from the secret key material (never the credentials'
    key itself; a rotation changes it at the next start, and open forms then ask for a reload)."""
    app.state.csrf_key = vault.derive_key("console-csrf").encode()


def login_url(next_path: str) -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"


def safe_next(next_path: str | None) -> str:
    """Only a path of the console itself, never another site."""
    if next_path and next_path.startswith("/console/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return "/console/"


def visitor(request: Request, *, take_notice: bool = False) -> console_sessions.Live | None:
    """This request's live session, looked up once per request (a page and its error handler share it), and
    for an operator the workspaces its header offers to switch to."""
    if not hasattr(request.state, "console_session"):
        with session_scope() as session:
            found = console_sessions.resolve(session, session_id(request), take_notice=take_notice)
            request.state.console_session = found
            operator = found is not None and found.role == "operator"
            request.state.console_workspaces = console_sessions.workspace_names(session) if operator else []
    live: console_sessions.Live | None = request.state.console_session
    return live


def workspace_of(request: Request) -> str:
    """The name of the workspace this request's session shows (looked up with the session)."""
    found: console_sessions.Live | None = getattr(request.state, "console_session", None)
    return found.workspace if found is not None else ""


def switchable(request: Request) -> list[str]:
    """The workspaces an operator's header lists (none for anyone else)."""
    names: list[str] = getattr(request.state, "console_workspaces", [])
    return names


def user_of(request: Request) -> Principal | None:
    found = visitor(request)
    return Principal(found.name, found.role, found.workspace_id) if found is not None else None


def current_user(request: Request) -> Principal:
    """The dependency of every console page but the login page; a page (a GET) takes the session's waiting
    notice to show it."""
    found = visitor(request, take_notice=request.method == "GET")
    if found is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query if request.method == "GET" else "/console/")
    return Principal(found.name, found.role, found.workspace_id)


def require_admin(user: Principal) -> None:
    if user.role not in WRITE_ROLES:
        raise Refused(403, f"token {user.name!r} is a reader: this needs an admin token")


def require_operator(user: Principal) -> None:
    if not user.operator:
        raise Refused(403, f"token {user.name!r} is a {user.role}: switching workspaces needs an operator token")


def switch_workspace(request: Request, name: str) -> None:
    """Show the workspace `name` in this session from now on; Refused 404 when there is none."""
    found = visitor(request)
    if found is None:
        raise LoginRequired("/console/")
    with session_scope() as session:
        try:
            workspace_id = workspaces.find_id(session, name)
        except NotFoundError as exc:
            raise Refused(404, str(exc)) from None
        console_sessions.switch(session, found.id, workspace_id)


def log_in(request: Request, token: str) -> tuple[str, Principal] | None:
    """Open a fresh session for a valid token: a new id (never the one the cookie had before, so a planted
    cookie cannot be logged into), hence a new CSRF token too; a session the cookie named is ended."""
    with session_scope() as session:
        opened = console_sessions.open_session(session, token.strip())
        if opened is not None:
            console_sessions.close(session, session_id(request))
    if opened is None:
        return None
    sid, found = opened
    return sid, Principal(found.name, found.role, found.workspace_id)


def log_out(request: Request) -> None:
    with session_scope() as session:
        console_sessions.close(session, session_id(request))


def leave_notice(request: Request, notice: str) -> None:
    """A one-time notice the next page of this session shows."""
    found = visitor(request)
    if found is not None:
        with session_scope() as session:
            console_sessions.leave_notice(session, found.id, notice)


async def acted(request: Request, work: Callable[[], str], then: str) -> RedirectResponse:
    """Run an admin's action (`work`, in a thread: it touches the database and maybe the network), leave
    the notice it returns for the next page, and go to `then`; an object that is not (or no longer) there is
    the 404 page."""
    try:
        said = await anyio.to_thread.run_sync(work)
    except NotFoundError as exc:
        raise Refused(404, str(exc)) from None
    await anyio.to_thread.run_sync(leave_notice, request, said)
    return RedirectResponse(then, status_code=303)


def notice(request: Request) -> str | None:
    found: console_sessions.Live | None = getattr(request.state, "console_session", None)
    return found.notice if found is not None else None


def set_cookie(response: Response, sid: str) -> None:
    """The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it), Secure
    when the console is served over https; for the whole site, as the API's reads accept it too."""
    response.set_cookie(
        COOKIE,
        sid,
        max_age=int(console_sessions.LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(),
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_secure())


def _secure() -> bool:
    return get_settings().public_url.strip().lower().startswith("https://")


def csrf_token(request: Request) -> str:
    """The CSRF token of this cookie: a keyed hash of its id, so it is valid for this session alone, and
    reveals nothing of the id. A first visit gets an anonymous id (see `attach_cookie`)."""
    sid = session_id(request) or getattr(request.state, "new_cookie", None)
    if sid is None:
        sid = request.state.new_cookie = console_sessions.new_id()
    return _csrf_of(request, sid)


def attach_cookie(request: Request, response: Response) -> None:
    """Send the anonymous cookie a first visit's CSRF token was made for."""
    minted = getattr(request.state, "new_cookie", None)
    if minted is not None:
        set_cookie(response, minted)


def _csrf_of(request: Request, sid: str) -> str:
    key: bytes = request.app.state.csrf_key
    return hmac.new(key, sid.encode(), hashlib.sha256).hexdigest()


async def checked_form(request: Request) -> FormData:
    """The posted form, once its `csrf` field has been found to be this cookie's."""
    form = await request.form()
    sent = form.get("csrf")
    sid = session_id(request)
    expected = _csrf_of(request, sid) if sid is not None else None
    if not isinstance(sent, str) or expected is None or not hmac.compare_digest(sent, expected):
        raise Refused(403, "this form did not come from this session of the console: reload the page and try again")
    return form
