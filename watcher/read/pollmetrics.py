"""What one poll adds to the deployment's counters (`watcher.read.counters`), written in the poll's own transaction.

Events are counted in the commit that saves them, one repository group at a time; the poll's outcome, its
duration and its requests where its run is closed: `ok`, or `failed` (the poll failed, or some of its
repositories did). An `abandoned` poll (its process was asked to stop) is no outcome of
the registry's: it is not counted in `watcher_polls_total` or the duration (a deploy would read as failures),
but the requests it sent were sent, and count.

The duration histogram is per provider only: eleven buckets per registry made most of a big fleet's series.
Each registry's last duration is a gauge read from the poll history (`readmodel.last_poll_durations`).

A registry is named by its key (`watcher.registrations.keys`), as everywhere inside: its counters are
labelled with its `workspace` and its `registry` name apart (`registry_labels`), so two workspaces'
registries named alike are two series. The schedule's lag, per workspace (`schedule_lags`), is here too:
`/metrics` shows it, and status and the console may.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from watcher.read.counters import Increment, observation
from watcher.registrations.keys import split_key

if TYPE_CHECKING:
    pass

POLLS = "watcher_polls_total"
DURATION = "watcher_poll_duration_seconds"
REQUESTS = "watcher_registry_requests_total"
EVENTS = "watcher_events_total"


def registry_labels(key: str) -> dict[str, str]:
    """The labels naming the registry `key`: its workspace and its name. (Stored without the workspace
    `default`, as a key is: `watcher.read.counters.labels_key`.)"""
    workspace, name = split_key(key)
    return {"workspace": workspace, "registry": name}


def finished(
    key: str, provider: str, outcome: str, seconds: float, codes: Counter[str], changes: Iterable[str] = ()
) -> list[Increment]:
    """A poll of the registry `key` that ended `ok`, `failed` or `abandoned`: its outcome and duration (not
    for `abandoned`), the requests it made by code, and one event per change given (a poll's commits count
    their own)."""
    labels = {**registry_labels(key), "provider": provider}
    increments = requests(key, provider, codes)
    if outcome != "abandoned":
        increments += [
            Increment(POLLS, {**labels, "outcome": outcome}),
            *observation(DURATION, {"provider": provider}, seconds),
        ]
    return increments + committed(key, changes)


def requests(key: str, provider: str, codes: Counter[str]) -> list[Increment]:
    """The requests a poll of the registry `key` sent, by code: a registry-wide poll's, and a webhook's poll
    of one repository's."""
    labels = {**registry_labels(key), "provider": provider}
    return [Increment(REQUESTS, {**labels, "code": code}, count) for code, count in codes.items() if count]


def committed(key: str, changes: Iterable[str]) -> list[Increment]:
    """One event per change a commit of the registry `key` saved."""
    labels = registry_labels(key)
    return [Increment(EVENTS, {**labels, "change": change}) for change in changes]
