"""A small Docker token-auth server for integration tests.

Implements the token endpoint of
https://distribution.github.io/distribution/spec/auth/token/ (GET with HTTP
Basic credentials) and its OAuth2 variant (POST form, ``grant_type=password``)
so a real CNCF Distribution registry configured with ``auth.token`` accepts
the JWTs it issues.  Tests get a real bearer-token flow (challenge, token
fetch, scoped access) without any cloud service, and can count and inspect
token requests to assert on token caching.

What Distribution 2.8 requires of the JWT (``registry/auth/token/token.go``):

* ``alg`` RS256 (any libtrust algorithm) and a signing key it can trust: we put
  the signing certificate in the ``x5c`` header; the registry verifies that
  chain against ``auth.token.rootcertbundle`` (the same self-signed cert).
* ``iss`` equal to ``auth.token.issuer`` and ``aud`` equal to
  ``auth.token.service``, the latter as a *plain string*: 2.8 decodes ``aud``
  into a Go ``string``, so a JSON list makes the whole token "malformed".
* ``nbf``/``exp``: checked with 60 s of leeway each way, so a token that
  expired less than a minute ago is still accepted (tests of expiry must
  mint tokens that are well past it, see ``issue_token(issued_at=...)``).
* ``access``: ``[{"type", "name", "actions"}]``; ``"*"`` grants every action.
  Deleting a manifest is challenged as ``repository:NAME:delete``; the
  actions of a challenge come in random (Go map) order.
* Without ``x5c`` (and without a libtrust ``kid``/``jwk``) the token is
  refused; so is an ``aud`` list, a wrong ``aud`` and a wrong ``iss``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.servers import BackgroundServer

__all__ = ["Grant", "TokenRequest", "TokenServer", "parse_scope"]

DEFAULT_SERVICE = "watcher-test-registry"
DEFAULT_ISSUER = "watcher-test-token-issuer"

CredentialCheck = Callable[[str, str], bool]


@dataclass(frozen=True)
class Grant:
    """One ``access`` entry of a token: a resource and the actions granted on it."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenRequest:
    """What a client asked the token server, recorded so tests can assert on it."""

    method: str
    service: str | None
    scopes: tuple[str, ...]
    username: str | None
    status: int
    grant_type: str | None = None
    granted: tuple[Grant, ...] = field(default=())


def parse_scope(scope: str) -> Grant | None:
    """Parse ``type:name:actions``; the name may itself contain ``:`` (ports)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return Grant(kind, name, tuple(a for a in actions.split(",") if a))


def _make_signing_cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A throwaway RSA key and self-signed cert that acts as its own root."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watcher test token signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


class TokenServer(BackgroundServer):
    """Docker token-auth server on a free loopback port, served from a thread.

    ``users`` maps usernames to passwords; ``check`` is a fallback callback for
    credentials not in ``users`` (e.g. accept ``oauth2accesstoken`` with any
    Google-looking access token).  Authenticated clients get every action they
    ask for; anonymous clients get only ``pull`` on repositories, and only when
    ``anonymous_pull`` is set, otherwise 401.  Wrong credentials always get 401.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        check: CredentialCheck | None = None,
        anonymous_pull: bool = False,
        expires_in: int = 300,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
    ) -> None:
        self.users: dict[str, str] = dict(users or {})
        self.check = check
        self.anonymous_pull = anonymous_pull
        self.expires_in = expires_in
        self.service = service
        self.issuer = issuer
        self.tokens_issued = 0
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key, self._cert = _make_signing_cert()
        self.cert_pem: bytes = self._cert.public_bytes(serialization.Encoding.PEM)
        self._x5c = [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]
        super().__init__(_handler_for(self), name="token-server")
        self.realm = f"{self.url}/token"

    # -- lifecycle ---------------------------------------------------------

    def reset(self) -> None:
        """Forget counted tokens and recorded requests (per-test isolation)."""
        with self._lock:
            self.tokens_issued = 0
            self.requests.clear()

    # -- policy and signing ------------------------------------------------

    def authenticate(self, username: str, password: str) -> bool:
        """True when the credentials are in ``users`` or accepted by ``check``."""
        if username in self.users and self.users[username] == password:
            return True
        return self.check is not None and self.check(username, password)

    def grants_for(self, username: str | None, scopes: tuple[str, ...]) -> tuple[Grant, ...]:
        """Everything requested for users; repository ``pull`` only for anonymous."""
        grants: list[Grant] = []
        for scope in scopes:
            grant = parse_scope(scope)
            if grant is None:
                continue
            if username is None:
                if grant.type != "repository" or "pull" not in grant.actions:
                    continue
                grant = Grant(grant.type, grant.name, ("pull",))
            grants.append(grant)
        return tuple(grants)

    def issue_token(
        self,
        subject: str,
        grants: tuple[Grant, ...] | list[Grant],
        *,
        service: str | None = None,
        expires_in: int | None = None,
        issued_at: int | None = None,
    ) -> str:
        """Sign a registry JWT; public so tests can mint expired or odd tokens."""
        now = int(time.time()) if issued_at is None else issued_at
        lifetime = self.expires_in if expires_in is None else expires_in
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service or self.service,  # a plain string: 2.8 rejects a list
            "exp": now + lifetime,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [g.claim() for g in grants],
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": self._x5c})

    def _respond(
        self,
        method: str,
        *,
        service: str | None,
        scopes: tuple[str, ...],
        username: str | None,
        password: str | None,
        grant_type: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Decide and build the answer to one token request, recording it."""
        if username is not None and not self.authenticate(username, password or ""):
            grants: tuple[Grant, ...] = ()
            status, body = 401, _error("UNAUTHORIZED", "invalid credentials")
        elif username is None and not self.anonymous_pull:
            grants = ()
            status, body = 401, _error("UNAUTHORIZED", "authentication required")
        else:
            grants = self.grants_for(username, scopes)
            now = int(time.time())
            token = self.issue_token(username or "", grants, service=service, issued_at=now)
            issued = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = 200
            body = {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": issued,
            }
        with self._lock:
            if status == 200:
                self.tokens_issued += 1
            self.requests.append(TokenRequest(method, service, scopes, username, status, grant_type, grants))
        return status, body


def _error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "detail": None}]}


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic``; malformed headers count as bad creds."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return ("", "")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    user, _, password = decoded.partition(":")
    return user, password


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="watcher-test-token"')
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._send(404, _error("NOT_FOUND", url.path))
                return
            query = parse_qs(url.query)
            creds = _basic_credentials(self.headers.get("Authorization"))
            status, body = server._respond(
                "GET",
                service=_first(query, "service"),
                scopes=_split_scopes(query.get("scope", [])),
                username=creds[0] if creds else None,
                password=creds[1] if creds else None,
            )
            self._send(status, body)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            if url.path != "/token":
                self._send(404, _error("NOT_FOUND", url.path))
                return
            grant_type = _first(form, "grant_type")
            if grant_type != "password":
                self._send(400, {"error": "unsupported_grant_type"})
                return
            status, body = server._respond(
                "POST",
                service=_first(form, "service"),
                scopes=_split_scopes(form.get("scope", [])),
                username=(form.get("username") or [""])[0],
                password=(form.get("password") or [""])[0],
                grant_type=grant_type,
            )
            self._send(status, body)

    return Handler


def _first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _split_scopes(values: list[str]) -> tuple[str, ...]:
    """Scopes come as repeated params and/or space-separated (OAuth2 form)."""
    return tuple(s for v in values for s in v.split() if s)
