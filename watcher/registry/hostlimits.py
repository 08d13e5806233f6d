"""How hard watcher may press one registry host, and what a host's answers say about it: the limits a
registration sets, the pacing of request starts, and the quota and `Retry-After` headers a host sends.

Plain data and arithmetic, shared by the HTTP transport (`watcher.registry.http`), the deployment-wide
limits (`watcher.registry.sharedlimits`) and the SDK-based providers, none of which it imports.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOW_QUOTA = 10  # below this many requests left in the window, spread the rest over it


@dataclass(frozen=True)
class HostLimits:
    """How hard watcher may press one registry host."""

    max_concurrency: int = 8
    requests_per_second: float = 0.0  # 0 = no cap
    retries: int = 3
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 60.0
    timeout_seconds: float = 30.0


class Pacer:
    """Spaces the starts of one host's requests at least 1/requests-per-second apart, and past any pause the
    host asked for. Thread-safe, so async transports and SDKs calling from threads share the one mechanism."""

    def __init__(self, requests_per_second: float) -> None:
        self.interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self._next_start = 0.0  # monotonic time the next request may start
        self._lock = threading.Lock()

    def reserve(self, extra_gap: Callable[[float], float] | None = None) -> float:
        """Take the next start slot; returns how long to wait for it. `extra_gap(start)` may widen the
        spacing after this start (a server's low quota)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + max(self.interval, extra_gap(start) if extra_gap else 0.0)
        return start - now

    def pause(self, seconds: float) -> None:
        """No request starts for `seconds`."""
        with self._lock:
            self._next_start = max(self._next_start, time.monotonic() + seconds)

    async def wait(self, extra_gap: Callable[[float], float] | None = None) -> None:
        delay = self.reserve(extra_gap)
        if delay > 0:
            await asyncio.sleep(delay)

    def wait_blocking(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)


def quota_left(headers: Mapping[str, str]) -> tuple[int, float] | None:
    """(requests left, seconds until the window resets) as the server announced them, if it did."""
    try:
        remaining = headers.get("ratelimit-remaining")
        if remaining is not None:  # registries: `76;w=21600`
            left, _, window = remaining.partition(";w=")
            return int(left), float(window) if window else 0.0
        remaining = headers.get("x-ratelimit-remaining")
        if remaining is not None:  # Docker Hub's API: a count, and the reset as a unix time
            return int(remaining), _seconds_until(headers.get("x-ratelimit-reset")) or 0.0
    except ValueError:
        return None
    return None


def _seconds_until(value: str | None) -> float | None:
    """Seconds from now to a unix time (or a plain number of seconds, if the value is that small)."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None:
        return None
    return max(0.0, number - time.time()) if number > 1e9 else max(0.0, number)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return _seconds_until(headers.get("x-retry-after"))  # Docker Hub before 2025: a unix time
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
