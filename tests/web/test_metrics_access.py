"""Who may scrape `/metrics`: it names every workspace's registries, so it takes the metrics token or an
operator's token, and is open to anyone only where WATCHER_METRICS_OPEN says so. Every refusal is one 401
in the API's error shape."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from tests.conftest import Watcher
from tests.web.conftest import Api
from tests.web.test_read_api import error_of
from watcher.db import session_scope
from watcher.registrations import tokens
from watcher.schema import api_tokens
from watcher.settings import get_settings

METRICS_TOKEN = "scrape-secret-0123456789"


def operator_token(watcher: Watcher, name: str) -> str:
    """A live token of role `operator` (made as an admin's and promoted: what the first start's token is)."""
    with session_scope(watcher.engine) as session:
        token = tokens.create(session, name, "admin")
        session.execute(update(api_tokens).where(api_tokens.c.name == name).values(role="operator"))
    return token


def scrape(api: Api, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.anonymous.get("/metrics", headers=headers)


def refused(response: httpx.Response) -> bool:
    error = error_of(response, 401, "unauthorized")
    assert "operator" in error["message"] and METRICS_TOKEN not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    return "watcher_registry_up" not in response.text


def served(response: httpx.Response) -> bool:
    return response.status_code == 200 and "# TYPE watcher_registry_up gauge" in response.text


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_by_default_only_an_operator_token_scrapes(watcher: Watcher, api: Api) -> None:
    """No metrics token set: a reader's or an admin's token (of any workspace) is refused, as is nothing, a
    forged token, or an empty bearer that would match an unset metrics token."""
    assert refused(scrape(api, None))
    assert refused(scrape(api, api.reader_token))
    assert refused(scrape(api, api.admin_token))
    assert refused(scrape(api, "wt_forged"))
    assert refused(api.anonymous.get("/metrics", headers={"Authorization": "Bearer"}))
    assert served(scrape(api, operator_token(watcher, "ops")))


def test_the_metrics_token_or_an_operator_token_scrapes(
    watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, WATCHER_METRICS_TOKEN=METRICS_TOKEN)
    assert served(scrape(api, METRICS_TOKEN))
    assert served(scrape(api, operator_token(watcher, "ops")))
    assert refused(scrape(api, None))
    assert refused(scrape(api, METRICS_TOKEN + "x"))
    assert refused(scrape(api, METRICS_TOKEN[:-1]))
    assert refused(scrape(api, api.reader_token))
    assert refused(scrape(api, api.admin_token))
    # not the scheme's word: only `Bearer`
    assert refused(api.anonymous.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"}))


def test_a_revoked_operator_token_is_refused_at_once(watcher: Watcher, api: Api) -> None:
    token = operator_token(watcher, "ops")
    assert served(scrape(api, token))
    with session_scope(watcher.engine) as session:
        tokens.revoke(session, "ops")
    assert refused(scrape(api, token))


def test_an_open_setting_serves_anyone(watcher: Watcher, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(scrape(api, None))
    set_env(monkeypatch, WATCHER_METRICS_OPEN="true")
    assert served(scrape(api, None))
    assert served(scrape(api, api.reader_token))
    set_env(monkeypatch, WATCHER_METRICS_OPEN="false")
    assert refused(scrape(api, None))
