"""`watcher.hooks.googleoidc`: a Pub/Sub push token is accepted only when Google signed it for the expected
account and audience, and Google's certificates are fetched once, not per request (the fake endpoint in
`tests/fakes/google_certs.py` serves them in Google's format)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.fakes.google_certs import FakeGoogleCerts
from tests.fakes.google_token import rsa_key
from tests.support.polls import wait_for
from watcher.hooks import googleoidc
from watcher.hooks.googleoidc import CertsUnavailable, Expected, GoogleCerts, Refused

AUDIENCE = "https://watcher.example.com/hooks/v1/g"
EMAIL = "watcher@proj.iam.gserviceaccount.com"
EXPECTED = Expected(AUDIENCE, EMAIL)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def google() -> Iterator[FakeGoogleCerts]:
    with FakeGoogleCerts(max_age=600) as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def certs(google: FakeGoogleCerts, clock: Clock) -> GoogleCerts:
    return GoogleCerts(google.certs_url, clock=clock)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_token_google_signed_for_the_account_and_audience_is_accepted(
    google: FakeGoogleCerts, certs: GoogleCerts
) -> None:
    claims = googleoidc.verify(bearer(google.token(audience=AUDIENCE, email=EMAIL)), EXPECTED, certs)
    assert claims["email"] == EMAIL and claims["aud"] == AUDIENCE
    other_key = next(kid for kid in google.keys if kid != google.kid)  # Google's second published key
    googleoidc.verify(bearer(google.token(audience=AUDIENCE, email=EMAIL.upper(), kid=other_key)), EXPECTED, certs)
    googleoidc.verify(
        bearer(google.token(audience=AUDIENCE, email=EMAIL, issuer="accounts.google.com")), EXPECTED, certs
    )
    assert google.hits == 1


def forged(google: FakeGoogleCerts, **change: Any) -> str:
    fields: dict[str, Any] = {"audience": AUDIENCE, "email": EMAIL} | change
    return bearer(google.token(**fields))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"key": rsa_key(3)}, "signature"),  # Google's key id, another key
        ({"audience": "https://watcher.example.com/hooks/v1/other"}, "audience"),
        ({"audience": "https://evil.example.com/"}, "audience"),
        ({"email": "someone@gmail.com"}, "service account"),
        ({"email": "other@proj.iam.gserviceaccount.com"}, "service account"),
        ({"email_verified": False}, "not verified"),
        ({"email_verified": "true"}, "not verified"),
        ({"issued_at": -7200}, "expired"),  # seconds from now (when the test runs, not when it was collected)
        ({"issued_at": 600}, "not valid yet"),
        ({"issuer": "https://evil.example.com"}, "not issued by Google"),
        ({"issuer": "https://securetoken.google.com/proj"}, "not issued by Google"),
    ],
)
def test_each_wrong_claim_or_signature_is_refused(
    google: FakeGoogleCerts, certs: GoogleCerts, change: dict[str, Any], reason: str
) -> None:
    if "issued_at" in change:  # a long run under load reached "not valid yet"'s moment: it was collected 10 min before
        change = change | {"issued_at": time.time() + change["issued_at"]}
    with pytest.raises(Refused, match=reason):
        googleoidc.verify(forged(google, **change), EXPECTED, certs)


def test_tokens_that_are_not_google_jwts_are_refused(google: FakeGoogleCerts, certs: GoogleCerts) -> None:
    unsigned = jwt.encode({"aud": AUDIENCE, "email": EMAIL, "email_verified": True}, "", algorithm="none")
    hs256 = jwt.encode({"aud": AUDIENCE, "email": EMAIL}, "k" * 32, algorithm="HS256", headers={"kid": google.kid})
    token = google.token(audience=AUDIENCE, email=EMAIL)
    for header in (None, "", "Bearer", token, f"Basic {token}", "Bearer a.b", "Bearer !!.??.**", bearer(unsigned)):
        with pytest.raises(Refused):
            googleoidc.verify(header, EXPECTED, certs)
    with pytest.raises(Refused):
        googleoidc.verify(bearer(hs256), EXPECTED, certs)
    with pytest.raises(Refused):
        googleoidc.verify(bearer(token + "x" * googleoidc.MAX_TOKEN_CHARS), EXPECTED, certs)


def test_the_certificates_are_fetched_once_and_refreshed_in_the_background(
    google: FakeGoogleCerts, certs: GoogleCerts, clock: Clock
) -> None:
    token = bearer(google.token(audience=AUDIENCE, email=EMAIL))
    for _ in range(20):
        googleoidc.verify(token, EXPECTED, certs)
    assert google.hits == 1
    clock.now += 601  # past max-age: still answered from memory while one refresh runs
    google.fail = True
    googleoidc.verify(token, EXPECTED, certs)
    assert wait_for(lambda: google.hits == 2 and not certs.refreshing, 5)  # the failed refresh has ended
    for _ in range(5):
        googleoidc.verify(token, EXPECTED, certs)  # the failed refresh kept the old set; none is retried yet
    assert google.hits == 2
    google.fail = False
    clock.now += googleoidc.MIN_REFETCH_SECONDS
    googleoidc.verify(token, EXPECTED, certs)
    assert wait_for(lambda: certs.fetches == 2, 5)
    clock.now += 599
    googleoidc.verify(token, EXPECTED, certs)
    assert google.hits == 3


def test_an_unknown_key_id_refetches_at_most_once_a_minute(
    google: FakeGoogleCerts, certs: GoogleCerts, clock: Clock
) -> None:
    googleoidc.verify(forged(google), EXPECTED, certs)
    clock.now += googleoidc.MIN_REFETCH_SECONDS
    for _ in range(10):
        with pytest.raises(Refused, match="not a valid Google OIDC token"):
            googleoidc.verify(forged(google, kid="f" * 40, key=rsa_key(3)), EXPECTED, certs)
    assert google.hits == 2


@pytest.mark.parametrize(
    "body",
    [b"x" * (googleoidc.MAX_CERTS_BYTES + 1), b"not json", b"{}", b'{"kid": "not a certificate"}', b"[]"],
    ids=["too-large", "not-json", "empty", "not-pem", "not-a-map"],
)
def test_an_unusable_answer_verifies_nothing_and_is_not_asked_again_at_once(
    google: FakeGoogleCerts, certs: GoogleCerts, clock: Clock, body: bytes
) -> None:
    google.body = body
    token = forged(google)
    with pytest.raises(CertsUnavailable):
        googleoidc.verify(token, EXPECTED, certs)
    with pytest.raises(CertsUnavailable, match="a moment ago"):
        googleoidc.verify(token, EXPECTED, certs)
    assert google.hits == 1
    google.body = None
    clock.now += googleoidc.MIN_REFETCH_SECONDS
    googleoidc.verify(token, EXPECTED, certs)


def test_a_compressed_answer_is_not_inflated(google: FakeGoogleCerts) -> None:
    google.gzip = True
    with pytest.raises(CertsUnavailable, match="compressed"):
        googleoidc.fetch_certs(google.certs_url)


def test_an_unreachable_endpoint_is_one_line() -> None:
    with pytest.raises(CertsUnavailable, match=r"^Google's certificates at http://127\.0\.0\.1:9/x: ConnectError$"):
        googleoidc.fetch_certs("http://127.0.0.1:9/x")
