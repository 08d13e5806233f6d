"""Requests by HTTP status, counted as they are answered: what `watcher_registry_requests_total` reports.

The httpx transport counts in its own event loop (`watcher.registry.http.LimitedTransport.codes`); the SDK providers
(ECR through botocore, ACR with Azure AD through azure-core) answer on worker threads, so they count here.
"""

from __future__ import annotations

import threading
from collections import Counter

#: the `code` of a request that got no HTTP status back (refused, dropped, timed out, cancelled)
ERROR_CODE = "error"


class RequestCounts:
    """Requests by HTTP status (or `error`), counted from any thread."""

    def __init__(self) -> None:
        self._codes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, status: int | None) -> None:
        """One request answered with `status`, or with none (`error`)."""
        with self._lock:
            self._codes[ERROR_CODE if status is None else str(status)] += 1

    @property
    def codes(self) -> Counter[str]:
        with self._lock:
            return Counter(self._codes)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._codes.values())
