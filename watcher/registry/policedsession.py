"""A requests session for a registrant-chosen target (the Azure SDK's pipeline, google-auth's token
request): its connections pass the network policy (`watcher.registry.netpolicy`) at connect time, and its bodies
stop at `WATCHER_MAX_BODY_BYTES`. A module of its own so that only the providers whose SDKs use requests
import requests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from watcher.registry.bodycap import CappedRaw
from watcher.registry.netpolicy import current_policy
from watcher.settings import get_settings


def _checked_addresses(connection: HTTPConnection) -> list[str]:
    host, port = connection._dns_host, connection.port
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NameResolutionError(connection.host, connection, socket.gaierror(str(exc))) from exc
    return current_policy().checked(connection.host, port, (str(info[4][0]) for info in found))


def _connect_checked(connection: HTTPConnection, connect: Callable[[], socket.socket]) -> socket.socket:
    """urllib3's own connect (its timeouts and error mapping), once per checked address of the host."""
    host = connection._dns_host
    last_error: Exception | None = None
    for address in _checked_addresses(connection):
        connection._dns_host = address  # only the socket's target; TLS and Host keep `connection.host`
        try:
            return connect()
        except (NewConnectionError, ConnectTimeoutError) as exc:
            last_error = exc
        finally:
            connection._dns_host = host
    assert last_error is not None
    raise last_error


class _PolicedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_checked(self, super()._new_conn)


class _PolicedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_checked(self, super()._new_conn)


class _PolicedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PolicedHTTPConnection


class _PolicedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PolicedHTTPSConnection


class PolicedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections pass the network policy, and whose bodies stop at a cap."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PolicedHTTPPool, "https": _PolicedHTTPSPool}

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.raw = CappedRaw(resp, get_settings().max_body_bytes)
        return response


def policed_session() -> requests.Session:
    """A requests session for a registrant-chosen target: the policy at connect time, bodies capped."""
    current_policy()  # a bad CIDR is reported now, not at the first connect
    session = requests.Session()
    adapter = PolicedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
