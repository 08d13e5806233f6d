"""Verifying the OIDC token Google signs for a Pub/Sub push request (`gcr-pubsub` webhooks).

A push subscription made with `--push-auth-service-account=EMAIL --push-auth-token-audience=URL` sends
`Authorization: Bearer JWT`, a token Google signs for that service account. It is accepted only when all of
this holds: the signature verifies against one of Google's published certificates, `iss` is Google's, `aud`
is this receiver's own URL, it is neither expired nor issued in the future, and `email` is the expected
service account with `email_verified` true. Without the audience check a token minted for any other service
would do; without the email check, a token of ANY Google account (anyone can get one for any audience).

Google's certificates are fetched at most once per their `Cache-Control: max-age` (and, for a token naming
a key not seen yet, at most once per MIN_REFETCH_SECONDS), with a timeout and a cap on the body, and kept
in memory: a notification is answered without a request to Google, except for the very first one. When the
cached set expires it is still used while one background refresh fetches the next.
`WATCHER_GOOGLE_CERTS_URL` (test-only) points the fetch elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import httpx
from google.auth import jwt

from watcher.settings import get_settings

log = logging.getLogger("watcher")

ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
#: Google's clock and ours may differ this much on `iat` / `exp`
CLOCK_SKEW_SECONDS = 30
#: a token naming an unknown key fetches the certificates again at most this often
MIN_REFETCH_SECONDS = 60.0
#: how long a certificate set is fresh when Google says nothing, and the bounds of what it may say
DEFAULT_MAX_AGE_SECONDS = 3600.0
MAX_AGE_BOUNDS = (60.0, 86400.0)
#: a stale set is still used while it is being refreshed in the background, for at most this long
STALE_GRACE_SECONDS = 3600.0
FETCH_TIMEOUT_SECONDS = 5.0
#: Google's certificate map is ~3 KB
MAX_CERTS_BYTES = 256 * 1024
#: a Pub/Sub token is ~1 KB; anything far longer is not one (and is not parsed)
MAX_TOKEN_CHARS = 8192
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)", re.IGNORECASE)


class Refused(Exception):
    """The token does not prove the push comes from the expected account; the message says why (never the
    token)."""


class CertsUnavailable(Refused):
    """Google's certificates could not be fetched: nothing can be verified now."""


@dataclass(frozen=True)
class Expected:
    """What a push request's token must say: the receiver's URL as audience and the push service account."""

    audience: str
    email: str


def verify(authorization: str | None, expected: Expected, certs: GoogleCerts | None = None) -> dict[str, Any]:
    """The token's claims when `Authorization: Bearer TOKEN` is a valid Google OIDC token for `expected`;
    raises Refused otherwise."""
    token = _bearer(authorization)
    kid = _key_id(token)
    keys = (certs or certs_for(get_settings().google_certs_url)).keys(kid)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, certs=keys, audience=expected.audience, clock_skew_in_seconds=CLOCK_SKEW_SECONDS
        )
    except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError) as exc:
        raise Refused(_why(exc)) from None
    if claims.get("iss") not in ISSUERS:
        raise Refused("the token was not issued by Google")
    email = claims.get("email")
    if not isinstance(email, str) or email.lower() != expected.email.lower():
        raise Refused("the token is not the push subscription's service account's")
    if claims.get("email_verified") is not True:
        raise Refused("the token's email is not verified")
    return claims


def _bearer(authorization: str | None) -> str:
    if not authorization or authorization[:7].lower() != "bearer ":
        raise Refused("no bearer token")
    token = authorization[7:].strip()
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise Refused("the bearer token is not a JWT")
    return token


def _key_id(token: str) -> str | None:
    """The `kid` of the token's header (read before anything is verified: it only picks the certificate)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise Refused("the bearer token is not a JWT") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _why(exc: Exception) -> str:
    text = str(exc)
    for fragment, reason in (
        ("expired", "the token has expired"),
        ("too early", "the token is not valid yet"),
        ("audience", "the token's audience is not this receiver's URL"),
        ("signature", "the token's signature does not verify"),
    ):
        if fragment in text.lower():
            return reason
    return "the token is not a valid Google OIDC token"


class GoogleCerts:
    """Google's signing certificates (`{kid: PEM}`), fetched when needed and kept in memory.

    `keys(kid)` answers from memory while the set is fresh. An expired set is still answered from (within
    STALE_GRACE_SECONDS) while one background thread fetches the next; past that, or with no set yet, the
    fetch is made in the caller's thread. A `kid` not in the set fetches it again, at most once per
    MIN_REFETCH_SECONDS, so forged key ids cannot make every request a fetch.
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.clock = clock
        self.fetches = 0
        self._certs: dict[str, str] = {}
        self._expires_at = -float("inf")
        #: the last fetch started, successful or not: the next one waits MIN_REFETCH_SECONDS
        self._attempted_at = -float("inf")
        self._lock = threading.Lock()
        self._refreshing = False
        #: one client for the cache's life: making one loads the CA bundle, which costs more than a fetch
        self._http = httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)

    def keys(self, kid: str | None) -> dict[str, str]:
        now = self.clock()
        with self._lock:
            certs, expires_at = self._certs, self._expires_at
            may_fetch = now - self._attempted_at >= MIN_REFETCH_SECONDS
        if not certs:
            if not may_fetch:
                raise CertsUnavailable("Google's certificates could not be fetched a moment ago")
            return self._fetch_now()
        if now >= expires_at + STALE_GRACE_SECONDS and may_fetch:
            return self._fetch_now()
        if now >= expires_at and may_fetch:
            self._refresh_in_background()
        if kid is not None and kid not in certs and may_fetch:
            return self._fetch_now()
        return certs

    @property
    def refreshing(self) -> bool:
        """Whether a background refresh is still running (until it has stored its set or given up)."""
        with self._lock:
            return self._refreshing

    def _fetch_now(self) -> dict[str, str]:
        with self._lock:
            if self.clock() - self._attempted_at < MIN_REFETCH_SECONDS:
                if not self._certs:
                    raise CertsUnavailable("Google's certificates could not be fetched a moment ago")
                return self._certs  # another thread has just fetched them
            self._attempted_at = self.clock()
            try:
                self._store(*fetch_certs(self.url, self._http))
            except CertsUnavailable as exc:
                if not self._certs:
                    raise
                log.warning("%s; the cached certificates are kept", exc)
            return self._certs

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing or self.clock() - self._attempted_at < MIN_REFETCH_SECONDS:
                return
            self._refreshing = True
            self._attempted_at = self.clock()

        def refresh() -> None:
            try:
                certs, max_age = fetch_certs(self.url, self._http)
                with self._lock:
                    self._store(certs, max_age)
            except CertsUnavailable as exc:
                log.warning("%s; the cached certificates are kept", exc)
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=refresh, name="google-certs", daemon=True).start()

    def _store(self, certs: dict[str, str], max_age: float) -> None:
        self.fetches += 1
        self._certs = certs
        self._expires_at = self.clock() + max_age


def fetch_certs(url: str, client: httpx.Client | None = None) -> tuple[dict[str, str], float]:
    """`{kid: PEM certificate}` and for how many seconds it is fresh; raises CertsUnavailable. The body is
    read raw (no decompression) and at most MAX_CERTS_BYTES of it."""
    own = client is None
    http = client or httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
    try:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        with http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise CertsUnavailable(f"Google's certificates at {url}: HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
                raise CertsUnavailable(f"Google's certificates at {url}: a compressed answer was not asked for")
            body = b""
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > MAX_CERTS_BYTES:
                    raise CertsUnavailable(f"Google's certificates at {url}: the answer exceeds {MAX_CERTS_BYTES}")
            cache_control = response.headers.get("cache-control", "")
    except httpx.HTTPError as exc:
        raise CertsUnavailable(f"Google's certificates at {url}: {type(exc).__name__}") from None
    finally:
        if own:
            http.close()
    return _certs_of(body, url), _max_age(cache_control)


def _certs_of(body: bytes, url: str) -> dict[str, str]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if (
        not isinstance(data, dict)
        or not data
        or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith("-----BEGIN CERTIFICATE-----")
            for k, v in data.items()
        )
    ):
        raise CertsUnavailable(f"Google's certificates at {url}: not a map of key ids to PEM certificates")
    return dict(data)


def _max_age(cache_control: str) -> float:
    found = _MAX_AGE.search(cache_control)
    seconds = float(found.group(1)) if found else DEFAULT_MAX_AGE_SECONDS
    low, high = MAX_AGE_BOUNDS
    return min(max(seconds, low), high)


_CACHES: dict[str, GoogleCerts] = {}
_CACHES_LOCK = threading.Lock()


def certs_for(url: str) -> GoogleCerts:
    """The process's one certificate cache for `url`."""
    with _CACHES_LOCK:
        found = _CACHES.get(url)
        if found is None:
            found = _CACHES[url] = GoogleCerts(url)
        return found
