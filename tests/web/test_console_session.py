"""The console's session over HTTP: an opaque id stored server-side as a hash, ended by logout, by revoking
or expiring its token, and by idling; its CSRF tokens are bound to it. (The browser's view: test_console.)"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import Watcher
from tests.support import console
from tests.web.conftest import Api
from watcher.db import session_scope
from watcher.models import ApiToken, ConsoleSession, utcnow
from watcher.registrations import tokens
from watcher.web.console import sessions as console_sessions
from watcher.web.routes import events


def refused(client: httpx.Client) -> bool:
    """The cookie is refused both by the API (401 in the error shape) and by the console (to the login page)."""
    api = client.get("/api/v1/registries")
    page = client.get("/console/")
    if api.status_code == 200 and page.status_code == 200:
        return False
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthorized", api.text
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login"), page.text
    return True


def backdate(cookie: str, **ago: timedelta) -> None:
    with session_scope() as session:
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.session_hash == tokens.digest(cookie))
            .values(**{column: utcnow() - delta for column, delta in ago.items()})
        )


def session_row(cookie: str) -> ConsoleSession | None:
    with session_scope() as session:
        return session.scalar(select(ConsoleSession).where(ConsoleSession.session_hash == tokens.digest(cookie)))


def test_the_cookie_is_an_opaque_id_and_logging_out_ends_every_copy_of_it(watcher: Watcher, api: Api) -> None:
    url = api.server.url
    with console.log_in(url, api.admin_token) as browser:
        cookie = console.cookie_of(browser)
        console.assert_opaque(cookie, api.admin_token)
        set_cookie = browser.get("/console/login").headers.get("set-cookie")
        assert set_cookie is None  # a logged-in cookie is kept, not replaced by an anonymous one
        with console.copy(url, cookie) as thief:
            assert not refused(thief)
            csrf = console.csrf_of(browser.get("/console/"))
            assert browser.post("/console/logout", data={"csrf": csrf}).status_code == 303
            assert session_row(cookie) is None
            assert refused(thief)
            # the API's writes never took the cookie
            assert thief.post("/api/v1/registries/any/poll").status_code == 401


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("ending", ["revoked", "expired"])
def test_a_session_ends_at_once_with_its_token(watcher: Watcher, api: Api, ending: str) -> None:
    with console.log_in(api.server.url, api.reader_token) as browser:
        assert not refused(browser)
        if ending == "revoked":
            assert watcher.cli("token", "revoke", "test-reader").exit_code == 0
        else:  # an expiry is seen by the check on every request: nothing deletes the session beforehand
            with session_scope() as session:
                session.execute(update(ApiToken).where(ApiToken.name == "test-reader").values(expires_at=utcnow()))
            assert session_row(console.cookie_of(browser)) is not None
        assert refused(browser)
        assert session_row(console.cookie_of(browser)) is None
        # the admin's session, opened with another token, is untouched
        with console.log_in(api.server.url, api.admin_token) as admin:
            assert not refused(admin)


def test_an_idle_or_old_session_expires(watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    url = api.server.url
    with console.log_in(url, api.reader_token) as browser:
        cookie = console.cookie_of(browser)
        backdate(cookie, last_used_at=timedelta(minutes=29))
        assert not refused(browser)  # used again within the idle time: the clock starts again
        backdate(cookie, last_used_at=timedelta(minutes=31))
        assert refused(browser)

    # the idle time is a constant a deployment's tests may shorten
    monkeypatch.setattr(console_sessions, "IDLE", timedelta(minutes=5))
    with console.log_in(url, api.reader_token) as browser:
        backdate(console.cookie_of(browser), last_used_at=timedelta(minutes=6))
        assert refused(browser)

    # however busy, a session lasts 12 hours at most
    with console.log_in(url, api.reader_token) as browser:
        backdate(console.cookie_of(browser), created_at=timedelta(hours=12, minutes=1))
        assert refused(browser)


def test_reading_writes_the_last_use_at_most_once_a_minute(watcher: Watcher, api: Api) -> None:
    with console.log_in(api.server.url, api.reader_token) as browser:
        cookie = console.cookie_of(browser)
        opened = session_row(cookie)
        assert opened is not None
        for _ in range(3):
            assert browser.get("/api/v1/registries").status_code == 200
        row = session_row(cookie)
        assert row is not None and row.last_used_at == opened.last_used_at
        backdate(cookie, last_used_at=timedelta(seconds=61))
        before = utcnow()
        assert browser.get("/console/").status_code == 200
        row = session_row(cookie)
        assert row is not None and row.last_used_at >= before - timedelta(seconds=1)


def test_expired_sessions_are_pruned_on_login(watcher: Watcher, api: Api) -> None:
    url = api.server.url
    with session_scope() as session:
        idle, old, gone = (tokens.create(session, name, "reader") for name in ("idle", "old", "gone"))
    with console.log_in(url, idle) as first, console.log_in(url, old) as second, console.log_in(url, gone):
        backdate(console.cookie_of(first), last_used_at=timedelta(minutes=31))
        backdate(console.cookie_of(second), created_at=timedelta(hours=13))
        with session_scope() as session:  # a token revoked behind the API's back (as by an older version)
            session.execute(update(ApiToken).where(ApiToken.name == "gone").values(revoked_at=utcnow()))
        with session_scope() as session:
            assert len(list(session.scalars(select(ConsoleSession.id)))) == 3
        with console.log_in(url, api.admin_token) as admin:
            with session_scope() as session:
                left = list(session.scalars(select(ConsoleSession.session_hash)))
            assert left == [tokens.digest(console.cookie_of(admin))]


def test_csrf_tokens_are_bound_to_the_session_id(watcher: Watcher, api: Api) -> None:
    url = api.server.url
    assert watcher.add_registry("r1", "http://127.0.0.1:9", "--no-verify").exit_code == 0
    before_login = console.csrf_of(httpx.get(url + "/console/login"))
    with console.log_in(url, api.admin_token) as first, console.log_in(url, api.admin_token) as second:
        csrf = console.csrf_of(first.get("/console/"))
        assert console.csrf_of(first.get("/console/events")) == csrf  # stable for its session
        assert csrf != console.csrf_of(second.get("/console/"))
        for other in (before_login, console.csrf_of(second.get("/console/"))):
            answer = first.post("/console/registries/r1/poll", data={"csrf": other})
            assert answer.status_code == 403 and "did not come from this session" in answer.text
        # a login form's CSRF token works only with the cookie it was shown with
        answer = second.post("/console/login", data={"csrf": before_login, "token": api.admin_token})
        assert answer.status_code == 403
        # logging in again replaces the session the cookie named
        old = console.cookie_of(first)
        csrf_login = console.csrf_of(first.get("/console/login"))
        assert first.post("/console/login", data={"csrf": csrf_login, "token": api.reader_token}).status_code == 303
        assert console.cookie_of(first) != old and session_row(old) is None


def test_the_cookie_is_secure_when_the_console_is_served_over_https(
    watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.settings import get_settings

    plain = httpx.get(api.server.url + "/console/login").headers["set-cookie"].lower()
    assert "httponly" in plain and "samesite=strict" in plain and "path=/" in plain and "secure" not in plain
    monkeypatch.setenv("WATCHER_PUBLIC_URL", "https://watcher.example.com")
    get_settings.cache_clear()
    secure = httpx.get(api.server.url + "/console/login").headers["set-cookie"].lower()
    assert "; secure" in secure and "httponly" in secure and "samesite=strict" in secure


@pytest.mark.parametrize("ending", ["logout", "revoke"])
def test_an_open_event_stream_ends_with_its_session_or_token(
    watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A stream is one long request: it checks its caller again as it runs, so a cookie copied before logout
    (or a revoked token) does not keep reading events."""
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    monkeypatch.setattr(events, "RECHECK_SECONDS", 0.1)
    url = api.server.url
    with console.log_in(url, api.admin_token) as browser:
        reader = console.copy(url, console.cookie_of(browser)) if ending == "logout" else api.reader
        with reader.stream("GET", "/api/v1/events/stream") as stream:
            assert stream.status_code == 200
            lines = (line for line in stream.iter_lines() if line)
            assert next(lines) == ": connected"
            for _ in range(5):  # still allowed, past a few re-checks
                assert next(lines) == ": keep-alive"
            if ending == "logout":
                csrf = console.csrf_of(browser.get("/console/"))
                assert browser.post("/console/logout", data={"csrf": csrf}).status_code == 303
            else:
                assert watcher.cli("token", "revoke", "test-reader").exit_code == 0
            deadline = time.monotonic() + 10
            for _ in lines:  # keep-alives until the next re-check, then the server ends the stream
                assert time.monotonic() < deadline, "the stream outlived its session"
        assert reader.get("/api/v1/events/stream").status_code == 401
