"""`watcher token`: created with a role, shown once, stored as a hash, revoked and expired tokens refused."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from tests.conftest import Watcher
from watcher.db import session_scope
from watcher.models import ApiToken, ConsoleSession, utcnow
from watcher.registrations import tokens
from watcher.web.console import sessions as console_sessions


def create(watcher: Watcher, name: str, role: str, *extra: str) -> str:
    result = watcher.cli("token", "create", name, "--role", role, *extra)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("wt_") and len(token) > 40
    assert "not shown again" in result.stderr
    return token


def test_a_token_is_shown_once_and_stored_only_as_its_hash(watcher: Watcher) -> None:
    token = create(watcher, "ci", "reader")
    with session_scope(watcher.engine) as session:
        row = session.scalar(select(ApiToken))
        assert row is not None and row.token_hash == tokens.digest(token) and token not in row.token_hash
        found = tokens.authenticate(session, token)
        assert found is not None and found.role == "reader"
        assert tokens.authenticate(session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert tokens.authenticate(session, "") is None
    listed = watcher.cli("token", "list", "--json")
    assert token not in listed.output
    assert [(t["name"], t["role"], t["state"]) for t in json.loads(listed.stdout)] == [("ci", "reader", "active")]
    assert json.loads(listed.stdout)[0]["last_used_at"] is not None


def test_revoked_and_expired_tokens_are_refused(watcher: Watcher) -> None:
    token = create(watcher, "ops", "admin")
    short = create(watcher, "short", "reader", "--expires", "1h")
    assert watcher.cli("token", "revoke", "ops").stdout.strip() == "revoked token 'ops'"
    with session_scope(watcher.engine) as session:
        assert tokens.authenticate(session, token) is None
        assert tokens.authenticate(session, short) is not None
        row = session.scalar(select(ApiToken).where(ApiToken.name == "short"))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    with session_scope(watcher.engine) as session:
        assert tokens.authenticate(session, short) is None
    states = {t["name"]: t["state"] for t in json.loads(watcher.cli("token", "list", "--json").stdout)}
    assert states == {"ops": "revoked", "short": "expired"}
    again = create(watcher, "ops", "reader")  # a revoked name may be reused; the old token stays dead
    with session_scope(watcher.engine) as session:
        assert tokens.authenticate(session, token) is None and tokens.authenticate(session, again) is not None


def test_token_mistakes_are_one_line(watcher: Watcher) -> None:
    create(watcher, "ci", "reader")
    for args, needle in (
        (["create", "ci", "--role", "reader"], "token 'ci' already exists"),
        (["create", "bad name", "--role", "reader"], "token name 'bad name' is not valid"),
        (["create", "x", "--role", "root"], "--role"),
        (["create", "x", "--role", "admin", "--expires", "soon"], "--expires 'soon' is not a duration"),
        (["revoke", "nobody"], "no active token named 'nobody'"),
    ):
        result = watcher.cli("token", *args)
        assert result.exit_code != 0 and needle in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_console_session_is_kept_as_a_hash_and_ends_with_its_token(watcher: Watcher) -> None:
    token = create(watcher, "ops", "admin")
    with session_scope(watcher.engine) as session:
        assert console_sessions.open_session(session, token[:-1] + "x") is None
        opened = console_sessions.open_session(session, token)
        assert opened is not None
        session_id, live = opened
    assert (live.name, live.role) == ("ops", "admin") and len(session_id) >= 43
    with session_scope(watcher.engine) as session:
        row = session.scalar(select(ConsoleSession))
        assert row is not None and row.session_hash == tokens.digest(session_id)
        assert session_id not in row.session_hash and token not in row.session_hash
        found = console_sessions.resolve(session, session_id)
        assert found is not None and found.name == "ops"
        assert console_sessions.resolve(session, session_id + "x") is None
        assert console_sessions.resolve(session, "x" * 10_000) is None
    assert watcher.cli("token", "revoke", "ops").exit_code == 0
    with session_scope(watcher.engine) as session:
        assert session.scalar(select(ConsoleSession)) is None  # revoking ended it at once
        assert console_sessions.resolve(session, session_id) is None
