"""An API server per test on the test's own watcher installation, and tokens of both roles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from watcher.db import session_scope
from watcher.registrations import tokens


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
