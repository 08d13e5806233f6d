"""The HTTP layer every registry call goes through: per-host limits, backoff, and error mapping.

Limits live here rather than in each call (the lesson of regclient's reghttp): a bounded number of
requests in flight per host, an optional requests-per-second cap, `Retry-After` honoured on 429/503,
exponential backoff on 5xx and dropped connections for idempotent requests, and a slow-down when a
registry announces (`RateLimit-Remaining`) that its quota is nearly spent.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from watcher import errors

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class HostLimits:
    """How hard watcher may press one registry host."""

    max_concurrency: int = 8
    requests_per_second: float = 0.0  # 0 = no cap
    retries: int = 3
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 60.0
    timeout_seconds: float = 30.0


class LimitedTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport with one host's concurrency cap, rate cap and retry policy."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: HostLimits) -> None:
        self._inner = inner
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._next_start = 0.0
        self._pace = asyncio.Lock()
        self.requests = 0

    async def _wait_turn(self) -> None:
        if self._limits.requests_per_second <= 0:
            return
        async with self._pace:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self._limits.requests_per_second
        if start > now:
            await asyncio.sleep(start - now)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempts = self._limits.retries + 1 if request.method in IDEMPOTENT else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            async with self._slots:
                await self._wait_turn()
                self.requests += 1
                try:
                    response = await self._inner.handle_async_request(request)
                except (httpx.TransportError, OSError) as exc:
                    if last or _is_tls(exc):
                        raise
                    await asyncio.sleep(self._backoff(attempt))
                    continue
            if response.status_code in RETRYABLE_STATUS and not last:
                await response.aclose()
                await asyncio.sleep(self._wait_for(response, attempt))
                continue
            await self._respect_quota(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _backoff(self, attempt: int) -> float:
        base = self._limits.backoff_seconds * (2**attempt)
        return float(min(self._limits.max_wait_seconds, base * (0.5 + random.random())))

    def _wait_for(self, response: httpx.Response, attempt: int) -> float:
        told = retry_after_seconds(response.headers)
        if told is not None:
            return min(self._limits.max_wait_seconds, told)
        return self._backoff(attempt)

    async def _respect_quota(self, response: httpx.Response) -> None:
        """Spread the remaining quota over the window instead of running into a 429."""
        remaining = response.headers.get("ratelimit-remaining")
        if remaining is None:
            return
        try:
            left, _, window = remaining.partition(";w=")
            left_n = int(left)
            window_s = int(window) if window else 0
        except ValueError:
            return
        if left_n <= 0:
            await asyncio.sleep(min(self._limits.max_wait_seconds, max(window_s, 1)))
        elif left_n < 10 and window_s:
            await asyncio.sleep(min(self._limits.max_wait_seconds, window_s / left_n))

    async def aclose(self) -> None:
        await self._inner.aclose()


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def make_client(
    base_url: str, limits: HostLimits, *, auth: httpx.Auth | None = None, verify: bool | str = True
) -> httpx.AsyncClient:
    """One pooled async client per registry host, wrapped in that host's limits."""
    pool = httpx.Limits(max_connections=limits.max_concurrency, max_keepalive_connections=limits.max_concurrency)
    inner = httpx.AsyncHTTPTransport(verify=verify, limits=pool, retries=0)
    return httpx.AsyncClient(
        base_url=base_url,
        transport=LimitedTransport(inner, limits),
        auth=auth,
        timeout=httpx.Timeout(limits.timeout_seconds),
        follow_redirects=True,
        headers={"User-Agent": "watcher/0.1"},
    )


def requests_made(client: httpx.AsyncClient) -> int:
    transport = client._transport
    return transport.requests if isinstance(transport, LimitedTransport) else 0


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
    code = response.status_code
    detail = registry_error_detail(response)
    text = f"{what}: HTTP {code}" + (f" ({detail})" if detail else "")
    challenge = response.headers.get("www-authenticate", "")
    if code == 401 and "insufficient_scope" in challenge:
        return errors.PermissionError_(text)
    if code == 401:
        return errors.AuthError(text)
    if code == 403:
        return errors.PermissionError_(text)
    if code == 404:
        return errors.ScopeError(text)
    if code == 429:
        return errors.RateLimitedError(text)
    return errors.BadResponseError(text)


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
