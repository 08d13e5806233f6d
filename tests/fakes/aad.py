"""A FAKE Azure AD (Microsoft Entra ID) authority, over TLS, for the client-credentials flow only.

No Azure AD can run here, so this speaks just what azure-identity's `ClientSecretCredential` (through
msal) sends, in the real wire format:

* `GET /{tenant}/v2.0/.well-known/openid-configuration` -> `{"token_endpoint", "authorization_endpoint",
  "issuer"}` (msal's tenant discovery, done even with instance discovery disabled); an unknown tenant is
  `400 {"error": "invalid_tenant", ...}` as Azure AD answers it.
* `POST /{tenant}/oauth2/v2.0/token`, form `client_id, client_secret, grant_type=client_credentials,
  scope=AUDIENCE/.default` -> `{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}`.
  A wrong secret is `401 {"error": "invalid_client", "error_description": "AADSTS7000215: ..."}`, an
  unknown application `400 unauthorized_client` (AADSTS700016), both with Azure AD's extra fields.

Tokens are opaque random strings; `audience_of` lets the fake ACR check a token it is handed. The module
also holds the small threaded TLS server both fakes use (`TlsServer`).
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from tests.support.servers import BackgroundServer

Handler = Callable[["Request"], "Reply"]


@dataclass
class Request:
    """One request as a fake sees it: method, raw path, query, form body and headers."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]

    def first(self, name: str, source: str = "form") -> str:
        values = (self.form if source == "form" else self.query).get(name) or [""]
        return values[0]


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


class TlsServer(BackgroundServer):
    """A threaded HTTPS/1.1 server on 127.0.0.1 whose certificate is issued by a test CA; `handle` answers."""

    def __init__(self, ca: trustme.CA, handle: Handler) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        super().__init__(_handler_class(handle), name="fake-tls", tls=context)


def _handler_class(handle: Handler) -> type[BaseHTTPRequestHandler]:
    class TlsHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            url = urlsplit(self.path)
            request = Request(
                self.command,
                url.path,
                parse_qs(url.query),
                parse_qs(raw),
                {k.lower(): v for k, v in self.headers.items()},
            )
            reply = handle(request)
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for key, value in (reply.headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

    return TlsHandler


def write_ca(ca: trustme.CA, directory: Path) -> Path:
    """The CA certificate as a PEM file, for REQUESTS_CA_BUNDLE."""
    path = directory / "fake-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@dataclass(frozen=True)
class IssuedToken:
    tenant: str
    client_id: str
    audience: str


class FakeAad(TlsServer):
    """FAKE Azure AD authority: knows service principals (tenant, client id -> secret), issues tokens."""

    def __init__(self, ca: trustme.CA) -> None:
        self._apps: dict[tuple[str, str], str] = {}
        self._issued: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()
        self.token_requests = 0
        super().__init__(ca, self._handle)

    def add_app(self, tenant: str, client_id: str, client_secret: str) -> None:
        self._apps[(tenant, client_id)] = client_secret

    def audience_of(self, token: str) -> str | None:
        """The audience an access token was issued for, None if this authority never issued it."""
        issued = self._issued.get(token)
        return issued.audience if issued else None

    # -- wire ---------------------------------------------------------------------------------------------
    def _handle(self, request: Request) -> Reply:
        parts = request.path.strip("/").split("/")
        tenant = parts[0] if parts else ""
        known_tenant = any(t == tenant for t, _ in self._apps)
        if request.method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            if not known_tenant:
                return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
            base = f"{self.url}/{tenant}"
            return Reply(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )
        if request.method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self._token(tenant, request)
        return Reply(404, {"error": "not_found"})

    def _token(self, tenant: str, request: Request) -> Reply:
        with self._lock:
            self.token_requests += 1
        if request.first("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id, scope = request.first("client_id"), request.first("scope")
        secret = self._apps.get((tenant, client_id))
        if secret is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
            )
        if not secrets.compare_digest(request.first("client_secret"), secret):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        if not scope.endswith("/.default"):
            return _aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid.")
        token = secrets.token_urlsafe(32)
        self._issued[token] = IssuedToken(tenant, client_id, scope.removesuffix("/.default"))
        return Reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})


def _aad_error(status: int, error: str, code: int, description: str) -> Reply:
    """An error the way Azure AD words it: AADSTS code, trace and correlation ids on further lines."""
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Reply(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
            f"\r\nTimestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )
