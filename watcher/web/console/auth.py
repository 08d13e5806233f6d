"""Who is using the console: the token in its signed session cookie, and the per-session CSRF token every
form carries.

The cookie is Starlette's signed session (itsdangerous), HttpOnly and SameSite=Strict, its key derived from
the watcher's secret key material. A page opened without a valid token redirects to the login page; a POST
whose hidden `csrf` field does not match the session's is refused before anything is done.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.datastructures import FormData
from starlette.middleware.sessions import SessionMiddleware

from watcher import vault
from watcher.web.deps import Principal, principal_of, session_token

COOKIE = "watcher_console"
SESSION_SECONDS = 12 * 3600
LOGIN_PATH = "/console/login"


class LoginRequired(Exception):
    """No valid token in the session: the person is sent to the login page, then back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class Refused(Exception):
    """A console request that may not be done: shown as a page with this one line and status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def install_sessions(app: FastAPI) -> None:
    app.add_middleware(
        SessionMiddleware,
        secret_key=vault.derive_key("console-session"),
        session_cookie=COOKIE,
        max_age=SESSION_SECONDS,
        same_site="strict",
        https_only=False,  # the console is served on plain HTTP on loopback by default
    )


def login_url(next_path: str) -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"


def safe_next(next_path: str | None) -> str:
    """Only a path of the console itself, never another site."""
    if next_path and next_path.startswith("/console/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return "/console/"


def current_user(request: Request) -> Principal:
    """The dependency of every console page but the login page."""
    principal = principal_of(session_token(request))
    if principal is None:
        request.session.pop("token", None)
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query if request.method == "GET" else "/console/")
    return principal


def require_admin(user: Principal) -> None:
    if user.role != "admin":
        raise Refused(403, f"token {user.name!r} is a reader: this needs an admin token")


def log_in(request: Request, token: str) -> Principal | None:
    """Start a fresh session for a valid token (a new CSRF token too: nothing carries over)."""
    principal = principal_of(token.strip())
    if principal is not None:
        request.session.clear()
        request.session["token"] = token.strip()
        request.session["csrf"] = secrets.token_urlsafe(32)
    return principal


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The posted form, once its `csrf` field has been found to be this session's."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise Refused(403, "this form did not come from this session of the console: reload the page and try again")
    return form
