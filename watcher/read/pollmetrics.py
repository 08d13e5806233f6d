"""What one poll adds to the deployment's counters (`watcher.read.counters`), written in the poll's own transaction.

Events are counted in the commit that saves them, one repository group at a time; the poll's outcome, its
duration and its requests where its run is closed: `ok`, or `failed` (the poll failed, or some of its
repositories did). An `abandoned` poll (its process was asked to stop) is no outcome of
the registry's: it is not counted in `watcher_polls_total` or the duration (a deploy would read as failures),
but the requests it sent were sent, and count.

The duration histogram is per provider only: eleven buckets per registry made most of a big fleet's series.
Each registry's last duration is a gauge read from the poll history (`readmodel.last_poll_durations`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from watcher.read.counters import Increment, observation

POLLS = "watcher_polls_total"
DURATION = "watcher_poll_duration_seconds"
REQUESTS = "watcher_registry_requests_total"
EVENTS = "watcher_events_total"


def finished(
    registry: str, provider: str, outcome: str, seconds: float, codes: Counter[str], changes: Iterable[str] = ()
) -> list[Increment]:
    """A poll that ended `ok`, `failed` or `abandoned`: its outcome and duration (not for `abandoned`), the
    requests it made by code, and one event per change given (a poll's commits count their own)."""
    labels = {"registry": registry, "provider": provider}
    increments = requests(registry, provider, codes)
    if outcome != "abandoned":
        increments += [
            Increment(POLLS, {**labels, "outcome": outcome}),
            *observation(DURATION, {"provider": provider}, seconds),
        ]
    return increments + committed(registry, changes)


def requests(registry: str, provider: str, codes: Counter[str]) -> list[Increment]:
    """The requests a poll sent, by code: a registry-wide poll's, and a webhook's poll of one repository's."""
    labels = {"registry": registry, "provider": provider}
    return [Increment(REQUESTS, {**labels, "code": code}, count) for code, count in codes.items() if count]


def committed(registry: str, changes: Iterable[str]) -> list[Increment]:
    """One event per change a commit saved."""
    return [Increment(EVENTS, {"registry": registry, "change": change}) for change in changes]
