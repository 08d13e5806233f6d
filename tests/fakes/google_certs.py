"""A FAKE of Google's OIDC signing-certificate endpoint and of the tokens Google signs for a Pub/Sub push
subscription, for tests only.

`GET /oauth2/v1/certs` answers as https://www.googleapis.com/oauth2/v1/certs does: a JSON object mapping
each key id to a self-signed X.509 certificate in PEM, with `Cache-Control: public, max-age=N,
must-revalidate, no-transform`. Google publishes two keys at a time; so does this fake.

`token(...)` makes the JWT Pub/Sub puts in `Authorization: Bearer`: RS256, header `{"alg", "kid", "typ"}`,
claims `aud`, `azp`, `email`, `email_verified`, `exp`, `iat`, `iss`, `sub` (as Google documents for push
authentication). Every claim can be changed, and it can be signed by a key Google never published.
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.fakes.google_token import rsa_key
from tests.support.servers import BackgroundServer, QuietHandler

__all__ = ["CERTS_PATH", "FakeGoogleCerts", "certificate_pem"]

CERTS_PATH = "/oauth2/v1/certs"
ISSUER = "https://accounts.google.com"


def certificate_pem(key: rsa.RSAPrivateKey, kid: str) -> str:
    """A self-signed certificate for `key`, shaped like Google's (CN = the key id's hash, a short validity)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=14))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


class FakeGoogleCerts(BackgroundServer):
    """The certificate endpoint on a free loopback port. `hits` counts its GETs; `max_age` is what its
    Cache-Control says; `fail` makes it answer 503; `body` (when set) replaces its answer; `gzip` sends it
    compressed whatever was asked."""

    def __init__(self, *, max_age: int = 21600) -> None:
        self.max_age = max_age
        self.hits = 0
        self.fail = False
        self.body: bytes | None = None
        self.gzip = False
        self.keys = {secrets.token_hex(20): rsa_key(slot) for slot in (1, 2)}
        self.kid = next(iter(self.keys))
        self._certs = {kid: certificate_pem(key, kid) for kid, key in self.keys.items()}
        self._lock = threading.Lock()
        super().__init__(_Handler, name="fake-google-certs")
        self.certs_url = f"{self.url}{CERTS_PATH}"

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.hits += 1
        if self.fail:
            return 503, {"Content-Type": "text/html"}, b"<html>Service Unavailable</html>"
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "Cache-Control": f"public, max-age={self.max_age}, must-revalidate, no-transform",
        }
        body = self.body if self.body is not None else json.dumps(self._certs).encode()
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body)
        return 200, headers, body

    def token(
        self,
        *,
        audience: str,
        email: str,
        email_verified: Any = True,
        issuer: str = ISSUER,
        lifetime: int = 3600,
        issued_at: float | None = None,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A push request's token, as Google signs it (unless told otherwise)."""
        iat = int(time.time() if issued_at is None else issued_at)
        subject = str(10**20 + secrets.randbelow(10**20))
        payload = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": email_verified,
            "exp": iat + lifetime,
            "iat": iat,
            "iss": issuer,
            "sub": subject,
            **claims,
        }
        kid = kid or self.kid
        signer = key or self.keys.get(kid) or self.keys[self.kid]
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != CERTS_PATH:
            status, headers, body = 404, {"Content-Type": "text/plain"}, b"Not Found"
        else:
            status, headers, body = self.owner.answer()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
