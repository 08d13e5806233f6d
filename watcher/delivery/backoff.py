"""What a failed delivery attempt means for the next one: when to try again, or to give up.

A retry waits an exponential backoff with full jitter (a random time between 0 and `base * 2^(n-1)`,
capped at `MAX_BACKOFF_SECONDS`), so endpoints that fail together are not retried together; never sooner
than the endpoint's `Retry-After`. After `MAX_ATTEMPTS` attempts, or `MAX_AGE` after the delivery was
written, a delivery is dead-lettered; an answer that says the event will never be accepted (a 4xx other
than 408 and 429) dead-letters it at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.delivery.sending import Outcome

MAX_ATTEMPTS = 20
MAX_AGE = timedelta(hours=24)
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class Next:
    """A delivery's state after an attempt: `delivered`, `pending` (tried again at `at`) or `dead`."""

    state: str
    at: datetime | None = None


def backoff(attempts: int, base_seconds: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: full jitter over the exponential bound."""
    bound = min(MAX_BACKOFF_SECONDS, base_seconds * 2 ** min(max(attempts - 1, 0), 40))
    return (rng or random).uniform(0.0, bound)


def after(outcome: Outcome, attempts: int, created_at: datetime, now: datetime, base_seconds: float) -> Next:
    """What happens to a delivery whose `attempts`-th attempt ended with `outcome`."""
    if outcome.kind == "delivered":
        return Next("delivered")
    if outcome.kind == "permanent" or attempts >= MAX_ATTEMPTS:
        return Next("dead")
    wait = max(backoff(attempts, base_seconds), outcome.retry_after or 0.0)
    at = now + timedelta(seconds=wait)
    if at - created_at > MAX_AGE:
        return Next("dead")
    return Next("pending", at)
