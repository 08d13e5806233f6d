"""The HTTP layer every registry call goes through: per-host limits, backoff, and error mapping.

Limits live here rather than in each call (the lesson of regclient's reghttp): a bounded number of
requests in flight per host, an optional requests-per-second cap, `Retry-After` honoured on 429/503,
exponential backoff on 5xx and dropped connections for idempotent requests, and a slow-down when a
server announces that its quota is nearly spent (`RateLimit-Remaining: N;w=S` from registries,
`X-RateLimit-Remaining` with `X-RateLimit-Reset` from Docker Hub's API). Waits the server asks for hold
every request to the host, not just the one that was told.

What one registry can make a client do is bounded here too: every connection passes the network policy
at connect time (`watcher.registry.netpolicy`), nothing is sent or followed outside the client's origin
(`watcher.registry.origin`), and every body is read through the cap (`watcher.registry.bodycap`), including the bodies
httpx reads itself inside the auth flow and on redirects.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
from collections import Counter
from functools import lru_cache
from typing import Any

import httpcore
import httpx

from watcher import errors
from watcher.registry.bodycap import ACCEPT_ENCODING, BodyTooLarge, capped_response, size_text
from watcher.registry.hostlimits import LOW_QUOTA, HostLimits, Pacer, quota_left, retry_after_seconds
from watcher.registry.netpolicy import NetworkRefused, PolicedBackend, current_policy
from watcher.registry.origin import OffOrigin, OriginGuard
from watcher.registry.requestcounts import ERROR_CODE
from watcher.registry.sharedlimits import SharedLimits
from watcher.registry.warm import Warm, checkout, key_for
from watcher.settings import get_settings

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD"})
#: how long an idle connection is kept: past a one-minute poll interval, so the next poll finds it open
KEEPALIVE_SECONDS = 90.0


class LimitedTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport with one host's concurrency cap, rate cap, retry policy and body cap."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        limits: HostLimits,
        *,
        max_body_bytes: int,
        warm: Warm | None = None,
    ) -> None:
        """With `warm`, `inner` and the shared limits are a kept origin's (`watcher.registry.warm`): closing this
        transport leaves them open for the next client."""
        self._inner = inner
        self._limits = limits
        self._max_body_bytes = max_body_bytes
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._pacer = Pacer(limits.requests_per_second)

        self._warm = warm
        # the same limits, held by every process of the deployment
        self._shared = warm.shared if warm is not None else SharedLimits(limits)
        self._quota_gap = 0.0  # spacing between starts while the announced quota is low ...
        self._quota_until = 0.0  # ... until its window resets
        self.requests = 0
        #: every request sent, by HTTP status ("error" when no status came back), retries included
        self.codes: Counter[str] = Counter()

    def _quota_spacing(self, start: float) -> float:
        return self._quota_gap if start < self._quota_until else 0.0

    def _pause(self, seconds: float) -> None:
        """No request to this host starts for `seconds` (capped): the server asked the whole client to wait."""
        self._pacer.pause(min(seconds, self._limits.max_wait_seconds))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempts = self._limits.retries + 1 if request.method in IDEMPOTENT else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            async with self._slots:
                await self._pacer.wait(self._quota_spacing)
                self.requests += 1
                try:
                    response = await self._shared.send(self._inner, request)
                except (httpx.TransportError, OSError) as exc:
                    self.codes[ERROR_CODE] += 1
                    if last or _is_tls(exc):
                        raise
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                except BaseException:  # refused by policy, or cancelled: sent (or tried) all the same
                    self.codes[ERROR_CODE] += 1
                    raise
                self.codes[str(response.status_code)] += 1
            if response.status_code in RETRYABLE_STATUS and not last:
                await response.aclose()
                delay = self._wait_for(response, attempt)
                if response.status_code == 429:
                    self._pause(delay)  # the quota is the host's: hold the other requests too
                await asyncio.sleep(delay)
                continue
            self._respect_quota(response)
            try:
                return capped_response(response, self._max_body_bytes)
            except errors.RegistryError:
                await response.aclose()
                raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _backoff(self, attempt: int) -> float:
        base = self._limits.backoff_seconds * (2**attempt)
        return float(min(self._limits.max_wait_seconds, base * (0.5 + random.random())))

    def _wait_for(self, response: httpx.Response, attempt: int) -> float:
        told = retry_after_seconds(response.headers)
        if told is not None:
            return min(self._limits.max_wait_seconds, told)
        return self._backoff(attempt)

    def _respect_quota(self, response: httpx.Response) -> None:
        """Spread the remaining quota over the window instead of running into a 429."""
        quota = quota_left(response.headers)
        if quota is None:
            return
        left, window = quota
        if left <= 0:
            self._pause(max(window, 1.0))
        elif left < LOW_QUOTA and window > 0:
            self._quota_gap = min(self._limits.max_wait_seconds, window / left)
            self._quota_until = time.monotonic() + min(window, self._limits.max_wait_seconds)  # re-armed per answer
            self._pause(self._quota_gap)

    async def aclose(self) -> None:
        if self._warm is not None:
            warm, self._warm = self._warm, None
            warm.done()
            return
        await self._shared.aclose()
        await self._inner.aclose()


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for `verify`, built once per process for each CA setting (loading the CA bundle
    costs tens of milliseconds of CPU, twice per poll otherwise); SSL_CERT_FILE/SSL_CERT_DIR still apply."""
    return _tls_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=16)
def _tls_context(verify: bool | str, _cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    if isinstance(verify, str):  # a CA bundle (file or directory): httpx deprecates being given its path
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify, trust_env=True)


class PolicedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool built on the network policy's backend."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        super().__init__(verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
            retries=0,
            network_backend=PolicedBackend(),
        )


def pooled_transport(base_url: str, verify: bool | str, limits: HostLimits) -> LimitedTransport:
    """A client's transport within `limits`: on a long-lived event loop, over the origin's kept connection
    pool and shared limits (`watcher.registry.warm`); otherwise over its own, closed with it."""

    max_body = get_settings().max_body_bytes
    warm = checkout(
        key_for(base_url, verify, limits),
        lambda: Warm(PolicedTransport(tls_context(verify), limits.max_concurrency), SharedLimits(limits)),
    )
    if warm is None:
        return LimitedTransport(
            PolicedTransport(tls_context(verify), limits.max_concurrency), limits, max_body_bytes=max_body
        )
    return LimitedTransport(warm.transport, limits, max_body_bytes=max_body, warm=warm)


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen) or "SSL" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def translate(exc: httpx.HTTPError, what: str) -> errors.RegistryError:
    """An httpx failure as one of watcher's errors; `what` says which request failed."""
    if _is_tls(exc):
        return errors.TLSError(f"{what}: {_first_line(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        return errors.UnreachableError(f"{what}: timed out")
    if isinstance(exc, httpx.ConnectError):
        return errors.UnreachableError(f"{what}: {_first_line(exc) or 'connection refused'}")
    if isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
        return errors.UnreachableError(f"{what}: connection dropped ({_first_line(exc) or type(exc).__name__})")
    return errors.UnreachableError(f"{what}: {_first_line(exc) or type(exc).__name__}")


def status_error(response: httpx.Response, what: str) -> errors.RegistryError:
    """A non-success response as one of watcher's errors."""
    detail = registry_error_detail(response)
    text = f"{what}: HTTP {response.status_code}" + (f" ({detail})" if detail else "")
    return error_for_status(response.status_code, text, response.headers.get("www-authenticate", ""))


def error_for_status(code: int, text: str, challenge: str = "") -> errors.RegistryError:
    """The error a registry means by an HTTP status (a 401 for a token without the scope is a permission)."""
    if code == 401 and "insufficient_scope" in challenge:
        return errors.PermissionError_(text)
    kinds: dict[int, type[errors.RegistryError]] = {
        401: errors.AuthError,
        403: errors.PermissionError_,
        404: errors.ScopeError,
        429: errors.RateLimitedError,
    }
    return kinds.get(code, errors.BadResponseError)(text)


def json_body(response: httpx.Response, what: str) -> Any:
    """The parsed body; a body that is not JSON is a bad response, named by `what`."""
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise errors.BadResponseError(f"{what}: the body is not JSON") from None


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The body as a JSON object, or a bad response."""
    body = json_body(response, what)
    if not isinstance(body, dict):
        raise errors.BadResponseError(f"{what}: the body is not a JSON object")
    return body


def registry_error_detail(response: httpx.Response) -> str:
    """The first `errors[].code: message` of a Distribution error body, if there is one."""
    try:
        body = response.json()
        first = body["errors"][0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:
        return ""


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


#: failures raised inside httpx's machinery (a connect, a hook, a body read), named by the request in `_send`
IN_FLIGHT_ERRORS = (NetworkRefused, OffOrigin, BodyTooLarge)


class ApiClient:
    """One origin's pooled client within its limits, its transport failures arriving as watcher's errors:
    what the OCI client and every provider's own API wrapper are built on. `guard` keeps every request on
    the origin of `base_url` (and realms it announces); one is made when the caller has none to share."""

    def __init__(
        self,
        base_url: str,
        limits: HostLimits,
        *,
        auth: httpx.Auth | None = None,
        verify: bool | str = True,
        guard: OriginGuard | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.guard = guard or OriginGuard(self.base_url)
        current_policy()  # a bad WATCHER_DENY/ALLOW_NETWORKS is one line now, before any connection
        self._transport = pooled_transport(self.base_url, verify, limits)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=self._transport,
            auth=auth,
            timeout=httpx.Timeout(limits.timeout_seconds),
            follow_redirects=True,
            headers={"User-Agent": "watcher/0.1", "Accept-Encoding": ACCEPT_ENCODING},
            event_hooks={"request": [self.guard.check_request], "response": [self.guard.check_redirect]},
        )

    @property
    def requests(self) -> int:
        """Requests sent so far, retries included."""
        return self._transport.requests

    @property
    def codes(self) -> Counter[str]:
        """Requests sent so far by HTTP status (or `error`), retries included."""
        return self._transport.codes

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request; `what` names it in error messages."""
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise translate(exc, what) from None
        except IN_FLIGHT_ERRORS as exc:
            raise type(exc)(f"{what}: {exc.message}") from None

    async def get_bounded(self, url: str, what: str, limit: int, *, headers: dict[str, str] | None = None) -> bytes:
        """The body of a GET answered 200, read as it streams and stopped past `limit` bytes (a cap below the
        transport's, for bodies known to be small); any other status is the registry's error."""
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()  # the error's detail, under the transport's cap
                    raise status_error(response, what)
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > limit:
                    raise BodyTooLarge(f"{what}: the body is {announced} bytes, more than {size_text(limit)}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge(f"{what}: the body exceeds {size_text(limit)}; not read further")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise translate(exc, what) from None
        except IN_FLIGHT_ERRORS as exc:
            if exc.message.startswith(what):
                raise
            raise type(exc)(f"{what}: {exc.message}") from None
