"""Sending one request to a subscriber's endpoint, which is someone else's server.

Every connection goes through the network policy (`watcher.registry.netpolicy.PolicedBackend`: the host is
resolved at each connect and a refused address is never contacted, so a DNS change after `subscription add`
is caught), no redirect is followed (a 3xx is an answer, not an instruction), connect and read have
deadlines, at most `MAX_RESPONSE_BYTES` of the answer is read, and only a short, escaped excerpt of it is
ever kept or logged. The outcome says what the answer means for the delivery (`Outcome.kind`).
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Literal

import httpx

from watcher import errors
from watcher.delivery.formats import Outgoing
from watcher.registry.http import PolicedTransport, tls_context

MAX_RESPONSE_BYTES = 1024 * 1024
EXCERPT = 200
CONNECT_SECONDS = 5.0
READ_SECONDS = 10.0
#: the longest `Retry-After` honoured (a longer one is cut to it)
MAX_RETRY_AFTER = 3600.0

Kind = Literal["delivered", "retry", "permanent"]


@dataclass(frozen=True)
class Outcome:
    """What one attempt ended with: `delivered` (2xx), `retry` (a network error, a 5xx, 408 or 429: try
    again later, not before `retry_after` seconds when the endpoint said so) or `permanent` (any other answer:
    this event will not be accepted)."""

    kind: Kind
    status: int | None
    error: str
    retry_after: float | None = None
    excerpt: str = ""


def client(*, pool: int = 100, seconds: float = READ_SECONDS) -> httpx.AsyncClient:
    """The client deliveries are sent with: policed connections, no redirects, deadlines (each read and
    write within `seconds`, at most `READ_SECONDS`; the connect within `CONNECT_SECONDS`)."""
    transport = PolicedTransport(tls_context(True), pool)  # the network policy at each connect
    timeout = httpx.Timeout(min(seconds, READ_SECONDS), connect=min(seconds, CONNECT_SECONDS))
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)


async def send(http: httpx.AsyncClient, request: Outgoing) -> Outcome:
    """Send `request` once and say what its answer means."""
    try:
        async with http.stream(request.method, request.url, headers=request.headers, content=request.body) as answer:
            excerpt = await _excerpt(answer)
    except errors.WatcherError as exc:  # the network policy refused the address
        return Outcome("retry", None, str(exc))
    except httpx.HTTPError as exc:
        return Outcome("retry", None, f"{type(exc).__name__}: {_clean(str(exc)) or 'no answer'}")
    status = answer.status_code
    if 200 <= status < 300:
        return Outcome("delivered", status, "", excerpt=excerpt)
    error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if status in (408, 429) or status >= 500:
        return Outcome("retry", status, error, retry_after(answer.headers.get("retry-after")), excerpt)
    return Outcome("permanent", status, error, excerpt=excerpt)


async def _excerpt(answer: httpx.Response) -> str:
    """The first bytes of the answer, escaped to one line; the rest is read (to keep the connection) up to
    the cap, never stored."""
    head = b""
    size = 0
    async for chunk in answer.aiter_raw():
        size += len(chunk)
        if len(head) < EXCERPT:
            head += chunk[: EXCERPT - len(head)]
        if size > MAX_RESPONSE_BYTES:
            break
    return _clean(head.decode("utf-8", "replace"))


def _clean(text: str) -> str:
    """One printable line: control characters (CR/LF too) escaped, so no answer can forge a log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:EXCERPT]


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), at most
    `MAX_RETRY_AFTER`; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
