"""Deployment-wide counters for Prometheus, kept in the state database.

Workers run in many processes on many hosts, and `/metrics` may be served by any of them, so a counter
cannot live in one process's memory. Each increment is an upsert in the same transaction as the work it
counts (a poll's commit adds its events and its requests), so the counts agree with the history exactly.
Histograms are counters too: one per bucket, plus `_sum` and `_count`.

A counter's labels are stored as a JSON object (`labels_key`). A registry's counters name its `workspace`
only where that is not `default`, as its key does: the counters stored before workspaces existed have no
`workspace`, and a registry of `default` keeps counting in its old row (one series, continued) instead of
starting a second one that every scrape would have to add into the first. `/metrics` shows a missing
`workspace` as `default`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from watcher.models import Counter
from watcher.schema import DEFAULT_WORKSPACE

#: poll durations worth telling apart, in seconds
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, float("inf"))


@dataclass(frozen=True)
class Increment:
    metric: str
    labels: Mapping[str, str]
    amount: float = 1.0


def labels_key(labels: Mapping[str, str]) -> str:
    """The stored form of `labels`: sorted JSON, without `workspace` when that is `default`."""
    stored = {k: v for k, v in labels.items() if k != "workspace" or v != DEFAULT_WORKSPACE}
    return json.dumps(stored, sort_keys=True, separators=(",", ":"))


def add(session: Session, increments: Iterable[Increment]) -> None:
    """Add to counters (creating them at zero), summed per counter first: one upsert each."""
    totals: dict[tuple[str, str], float] = {}
    for inc in increments:
        key = (inc.metric, labels_key(inc.labels))
        totals[key] = totals.get(key, 0.0) + inc.amount
    if not totals:
        return
    ordered = sorted(totals.items())  # every writer locks the rows in one order: no deadlock between polls
    if session.get_bind().dialect.name == "postgresql":
        # one statement of three arrays, not one upsert per row as executemany sends (a poll adds ~16)
        metrics, labels = zip(*(key for key, _ in ordered), strict=True)
        arrays = (list(metrics), list(labels), [value for _, value in ordered])
        session.connection().exec_driver_sql(UPSERT_ARRAYS, arrays)
        return
    # the dialect's own INSERT … ON CONFLICT, imported here: a process on SQLite never loads PostgreSQL's
    from sqlalchemy.dialects.sqlite import insert

    rows = [{"metric": metric, "labels": labels, "value": value} for (metric, labels), value in ordered]
    statement = insert(Counter)
    statement = statement.on_conflict_do_update(
        index_elements=[Counter.metric, Counter.labels], set_={"value": Counter.value + statement.excluded.value}
    )
    session.execute(statement, rows)


#: `add` on PostgreSQL: the counters' rows as three arrays, each added to its row (created at zero)
UPSERT_ARRAYS = (
    "INSERT INTO counters (metric, labels, value) SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::float8[]) "
    "ON CONFLICT (metric, labels) DO UPDATE SET value = counters.value + excluded.value"
)


def observation(metric: str, labels: Mapping[str, str], value: float) -> list[Increment]:
    """A histogram observation as counter increments: every bucket it falls in, the sum and the count."""
    increments = [
        Increment(f"{metric}_bucket", {**labels, "le": _le(bound)}) for bound in DURATION_BUCKETS if value <= bound
    ]
    return [*increments, Increment(f"{metric}_sum", labels, value), Increment(f"{metric}_count", labels)]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def read_all(session: Session) -> list[tuple[str, dict[str, str], float]]:
    """Every counter: (metric, labels, value)."""
    return [(metric, json.loads(labels), value) for metric, labels, value in read_all_raw(session)]


def read_all_raw(session: Session) -> list[tuple[str, str, float]]:
    """Every counter with its labels as stored (`labels_key`): (metric, labels, value). A plain Core query:
    the ORM's row handling would be a fifth of a big scrape."""
    query = select(Counter.metric, Counter.labels, Counter.value)
    return [(metric, labels, value) for metric, labels, value in session.connection().execute(query).all()]
