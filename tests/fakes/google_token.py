"""A FAKE of Google's OAuth 2.0 token endpoint, for tests only (Google's own cannot run here).

It speaks the wire format google-auth uses for a service-account key (the RFC 7523 JWT-bearer grant):
`POST token_uri` with form fields `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
`assertion=<JWT>`. The assertion is verified as Google does: RS256, signed by the key (`kid`) registered
for the account named in `iss`, `aud` equal to Google's token URL (google-auth hard-codes
`https://oauth2.googleapis.com/token` whatever the key's `token_uri` says), a `scope`, and a short-lived
`iat`/`exp` window. The answer is `{"access_token", "expires_in", "token_type": "Bearer"}`, or Google's
error shape `{"error", "error_description"}` with HTTP 400.

`ServiceAccount` makes keys shaped like the JSON files Google hands out, with a fresh RSA key pair.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.servers import BackgroundServer

__all__ = ["GOOGLE_TOKEN_URL", "JWT_BEARER", "FakeGoogleTokenServer", "ServiceAccount", "rsa_key"]

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 60
TIMEFRAME = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)


@cache
def rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """An RSA key per slot, generated once per test session (2048-bit generation costs ~50 ms)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class ServiceAccount:
    """A service account of `project_id` and one of its keys."""

    project_id: str
    name: str = "watcher"
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa_key(0))
    key_id: str = field(default_factory=lambda: secrets.token_hex(20))

    @property
    def email(self) -> str:
        return f"{self.name}@{self.project_id}.iam.gserviceaccount.com"

    def private_key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def info(self, token_uri: str, *, key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        """The JSON key file's content; `key` signs with another private key (a key that was replaced)."""
        pem = self.private_key_pem() if key is None else ServiceAccount(self.project_id, key=key).private_key_pem()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{self.email}",
            "universe_domain": "googleapis.com",
        }


@dataclass(frozen=True)
class Issued:
    token: str
    email: str
    scope: str
    expires_at: float


class FakeGoogleTokenServer(BackgroundServer):
    """The fake endpoint on a free loopback port, served from a thread.

    `register` an account's public key first. `hits` counts every POST; `issued` lists the access tokens
    in order; `accepts(token)` is what a registry's token server asks (issued here, not expired, not revoked)
    and records the tokens presented to it. `expires_in` may be changed between requests.
    """

    def __init__(self, *, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.hits = 0
        self.issued: list[Issued] = []
        self.presented: list[str] = []
        self.errors: list[str] = []
        self.revoked: set[str] = set()
        self._keys: dict[str, dict[str, rsa.RSAPublicKey]] = {}
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), name="fake-google")
        self.token_uri = f"{self.url}/token"

    def register(self, account: ServiceAccount) -> None:
        with self._lock:
            self._keys.setdefault(account.email, {})[account.key_id] = account.key.public_key()

    def accepts(self, token: str) -> bool:
        with self._lock:
            self.presented.append(token)
            found = next((i for i in self.issued if i.token == token), None)
            return found is not None and token not in self.revoked and found.expires_at > time.time()

    def revoke_all(self) -> None:
        with self._lock:
            self.revoked.update(i.token for i in self.issued)

    # -- the grant --------------------------------------------------------------------------------
    def grant(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """Google's answer to one token request."""
        with self._lock:
            self.hits += 1
        grant_type = (form.get("grant_type") or [""])[0]
        if grant_type != JWT_BEARER:
            return self._refuse("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._refuse("invalid_grant", "Invalid JWT: malformed assertion.")
        email = str(unverified.get("iss", ""))
        with self._lock:
            keys = dict(self._keys.get(email, {}))
        if not keys:
            return self._refuse("invalid_grant", "Invalid grant: account not found")
        public = keys.get(str(header.get("kid", "")))
        if header.get("alg") != "RS256" or public is None:
            return self._refuse("invalid_grant", "Invalid JWT Signature.")
        return self._verify(assertion, public, email)

    def _verify(self, assertion: str, public: rsa.RSAPublicKey, email: str) -> tuple[int, dict[str, Any]]:
        try:
            claims = jwt.decode(
                assertion,
                public,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_URL,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return self._refuse("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return self._refuse(
                "invalid_grant", f"Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URL}"
            )
        except jwt.PyJWTError:
            return self._refuse(
                "invalid_grant",
                TIMEFRAME,
            )
        if int(claims["exp"]) - int(claims["iat"]) > MAX_ASSERTION_LIFETIME:
            return self._refuse(
                "invalid_grant",
                TIMEFRAME,
            )
        scope = str(claims.get("scope") or "")
        if not scope.strip():
            return self._refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return self._issue(email, scope)

    def _issue(self, email: str, scope: str) -> tuple[int, dict[str, Any]]:
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._lock:
            lifetime = self.expires_in
            self.issued.append(Issued(token, email, scope, time.time() + lifetime))
        return 200, {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}

    def _refuse(self, error: str, description: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.errors.append(error)
        return 400, {"error": error, "error_description": description}


def _handler_for(server: FakeGoogleTokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            if urlsplit(self.path).path != "/token":
                self._send(404, {"error": "not_found", "error_description": self.path})
            elif not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                self._send(400, {"error": "invalid_request", "error_description": "Bad Request"})
            else:
                self._send(*server.grant(parse_qs(body)))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
