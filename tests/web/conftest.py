"""An API server per test on the test's own watcher installation, and tokens of both roles; the console
tests' browser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from watcher.db import session_scope
from watcher.registrations import tokens

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@dataclass
class Api:
    server: ApiServer
    admin: httpx.Client
    reader: httpx.Client
    anonymous: httpx.Client
    admin_token: str
    reader_token: str


@pytest.fixture
def api(watcher: Watcher) -> Iterator[Api]:
    with session_scope(watcher.engine) as session:
        admin = tokens.create(session, "test-admin", "admin")
        reader = tokens.create(session, "test-reader", "reader")
    with (
        ApiServer() as server,
        server.client(admin) as as_admin,
        server.client(reader) as as_reader,
        server.client() as anonymous,
    ):
        yield Api(server, as_admin, as_reader, anonymous, admin, reader)


@pytest.fixture(scope="session")
def driver() -> Iterator[WebDriver]:
    """One headless Chromium for every console test of this test process (each test starts by deleting
    its cookies): a browser started per module cost a second or more each time."""
    from tests.support.browser import chromium  # Selenium, only where a console test runs

    browser = chromium()
    try:
        yield browser
    finally:
        browser.quit()
