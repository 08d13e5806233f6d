"""Registry authentication as an httpx.Auth flow: Basic, or the OCI bearer-token exchange.

The flow sends a request, reads a 401's `WWW-Authenticate` challenge, fetches a token from the realm and
sends the request again. Tokens are cached per (realm, service, scope) until shortly before they expire,
and once the host's realm is known a token is fetched before the first request of a new scope. A 401 on a
fresh token refreshes the credentials once (cloud providers mint short-lived passwords); a second 401 is
returned to the caller as an authentication failure, never retried in a loop.

Credentials stay with the registry (`watcher.registry.origin`): a challenge is answered only when it came from the
registry's own origin, and a token realm is asked for a token only once the guard admitted it (another
host is fine, plain http for an https registry is not). Bodies read inside the flow (challenges, token
answers) come through the same capped stream as every other body (`watcher.registry.bodycap`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from watcher.registry.origin import Origin, OriginGuard, origin_of

TOKEN_MARGIN_SECONDS = 30
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:tags|manifests|blobs)/")


class CredentialSource(Protocol):
    """Where a registry login comes from; `refresh` lets short-lived passwords be minted anew."""

    def get(self) -> tuple[str, str] | None: ...

    def refresh(self) -> None: ...


@dataclass
class StaticCredentials:
    username: str
    password: str

    def get(self) -> tuple[str, str] | None:
        return (self.username, self.password)

    def refresh(self) -> None:
        return None


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    return Challenge(scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest)))


def scope_for(request: httpx.Request) -> str:
    """The token scope a registry request needs, derived from its path."""
    path = request.url.path
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = _REPO_PATH.match(path)
    return f"repository:{match.group(1)}:pull" if match else ""


@dataclass
class AuthState:
    """What a registry's auth flow learned: its challenge, the token realms it announced, and the tokens."""

    challenge: Challenge | None = None
    realms: set[Origin] = field(default_factory=set)
    tokens: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)


#: a worker's auth states, by registry origin and login (`kept_state`); the oldest go past this many
KEPT_STATES = 256
_KEPT: OrderedDict[tuple[Origin, str], AuthState] = OrderedDict()


def kept_state(credentials: CredentialSource | None, guard: OriginGuard) -> AuthState:
    """In a worker (`watcher.registry.warm`), the state the last poll of this origin with this same static login
    left, so its tokens are used again until they expire; otherwise (or for credentials minted anew, such
    as a cloud's) a fresh one. A realm the origin announced before is admitted again on the new guard."""
    from watcher.registry import warm

    if not warm.enabled() or not isinstance(credentials, StaticCredentials | None):
        return AuthState()
    login = "" if credentials is None else f"{credentials.username}\0{credentials.password}"
    key = (guard.home, hashlib.sha256(login.encode()).hexdigest())
    state = _KEPT.get(key)
    if state is None:
        state = _KEPT[key] = AuthState()
        while len(_KEPT) > KEPT_STATES:
            _KEPT.popitem(last=False)
    _KEPT.move_to_end(key)
    guard.readmit(state.realms)
    return state


class RegistryAuth(httpx.Auth):
    requires_response_body = True  # token answers and error bodies are read inside the flow

    def __init__(self, credentials: CredentialSource | None, guard: OriginGuard) -> None:
        self._credentials = credentials
        self._guard = guard
        self._state = kept_state(credentials, guard)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = scope_for(request)
        if self._state.challenge is not None and self._state.challenge.scheme == "bearer":
            token = self._cached(scope)
            if token is None:
                token_response = yield self._token_request(scope)
                token = self._accept_token(token_response, scope)
                if token is None:
                    return
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._state.challenge is not None and self._state.challenge.scheme == "basic":
            self._set_basic(request)
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("www-authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "bearer":
            realm = self._guard.admit_realm(challenge.params.get("realm", ""), response)
            self._state.realms.add(origin_of(realm))
            challenge = Challenge(challenge.scheme, {**challenge.params, "realm": str(realm)})
        elif not self._guard.at_home(response.url):
            return  # a Basic challenge from elsewhere gets nothing (redirects off the origin already fail)
        retried_with_fresh_credentials = "Authorization" in request.headers
        if retried_with_fresh_credentials and self._credentials is not None:
            self._credentials.refresh()
        self._state.challenge = challenge
        self._forget(scope)
        if challenge.scheme == "basic":
            if not self._set_basic(request):
                return
        elif challenge.scheme == "bearer":
            scope = challenge.params.get("scope", scope)
            token_response = yield self._token_request(scope)
            token = self._accept_token(token_response, scope)
            if token is None:
                return
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            return
        yield request

    def _set_basic(self, request: httpx.Request) -> bool:
        login = self._credentials.get() if self._credentials else None
        if login is None:
            return False
        request.headers["Authorization"] = httpx.BasicAuth(*login)._auth_header
        return True

    def _key(self, scope: str) -> tuple[str, str, str]:
        params = self._state.challenge.params if self._state.challenge else {}
        return (params.get("realm", ""), params.get("service", ""), scope)

    def _cached(self, scope: str) -> str | None:
        hit = self._state.tokens.get(self._key(scope))
        if hit is None or hit[1] <= time.monotonic():
            return None
        return hit[0]

    def _forget(self, scope: str) -> None:
        self._state.tokens.pop(self._key(scope), None)

    def _token_request(self, scope: str) -> httpx.Request:
        params = self._state.challenge.params if self._state.challenge else {}
        query = {"service": params["service"]} if params.get("service") else {}
        if scope:
            query["scope"] = scope
        request = httpx.Request("GET", params.get("realm", ""), params=query)
        self._set_basic(request)
        return request

    def _accept_token(self, response: httpx.Response, scope: str) -> str | None:
        """The token from a realm's answer, cached; None when the realm refused (caller sees its response)."""
        if response.status_code != 200:
            return None
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError):
            return None
        if not token:
            return None
        lifetime = max(expires_in - TOKEN_MARGIN_SECONDS, expires_in / 2)
        self._state.tokens[self._key(scope)] = (token, time.monotonic() + lifetime)
        return str(token)
