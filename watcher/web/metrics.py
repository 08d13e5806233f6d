"""`/metrics`: Prometheus's text format, read from the source of truth at scrape time.

Counters come from the database's deployment-wide counters (`watcher.read.counters`), gauges from the read
model, the outbox and the broker — so whichever process serves the scrape, and wherever the workers run,
the numbers are the deployment's. The text is written directly (`watcher.web.exposition`): a thousand
registries make some 16,000 samples, and a scrape must stay well inside Prometheus's interval.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from watcher.db import session_scope
from watcher.models import Event
from watcher.read import counters, deliveries
from watcher.read import model as readmodel
from watcher.schema import DEFAULT_WORKSPACE
from watcher.settings import get_settings
from watcher.web.deps import CHALLENGE, bearer_token, principal_of
from watcher.web.errors import ApiError
from watcher.web.exposition import CONTENT_TYPE, Family, sample, samples, series

router = APIRouter(tags=["metrics"])

#: `workspace` beside every `registry`: names are unique only within a workspace. A counter stored before
#: workspaces existed has none, and is `default`'s (`watcher.read.counters.labels_key`).
IN_DEFAULT = (("workspace", DEFAULT_WORKSPACE),)
COUNTERS = {
    family.name: family
    for family in (
        Family(
            "watcher_polls_total",
            "counter",
            "Polls finished, by outcome.",
            ("workspace", "registry", "provider", "outcome"),
            IN_DEFAULT,
        ),
        Family(
            "watcher_registry_requests_total",
            "counter",
            "Requests to registries, by HTTP status.",
            ("workspace", "registry", "provider", "code"),
            IN_DEFAULT,
        ),
        Family("watcher_events_total", "counter", "Events detected.", ("workspace", "registry", "change"), IN_DEFAULT),
        Family(
            "watcher_webhooks_total",
            "counter",
            "Webhook notifications received.",
            ("workspace", "registry", "format", "outcome"),
            IN_DEFAULT,
        ),
        Family(
            "watcher_deliveries_total",
            "counter",
            "Delivery attempts to subscriptions, by outcome (delivered, failed: to be retried, dead: dead-lettered).",
            ("workspace", "subscription", "outcome"),
            IN_DEFAULT,
        ),
    )
}
DURATION = Family("watcher_poll_duration_seconds", "histogram", "How long polls take, by provider.", ("provider",))
REGISTRY = ("workspace", "registry")
REGISTRY_GAUGES = (
    Family("watcher_registry_up", "gauge", "1 when the registry's last poll succeeded.", REGISTRY),
    Family("watcher_registry_last_success_timestamp_seconds", "gauge", "When the last poll succeeded.", REGISTRY),
    Family(
        "watcher_registry_last_poll_duration_seconds",
        "gauge",
        "How long the registry's last registry-wide poll took.",
        REGISTRY,
    ),
    Family("watcher_registry_tags", "gauge", "Tags stored now.", REGISTRY),
    Family("watcher_registry_repositories", "gauge", "Repositories stored now.", REGISTRY),
)
OUTBOX = Family("watcher_outbox_pending", "gauge", "Events in the history not yet on the stream.")
LAG = Family(
    "watcher_schedule_lag_seconds", "gauge", "How late the workspace's most overdue registry's poll is.", ("workspace",)
)
DELIVERY_LAG = Family(
    "watcher_delivery_lag_seconds",
    "gauge",
    "Age of the subscription's oldest pending delivery (0 when none waits).",
    ("workspace", "subscription"),
)
QUEUE = Family("watcher_queue_length", "gauge", "Tasks waiting in the Celery broker.", ("queue",))


@dataclass(frozen=True)
class Gathered:
    """What a scrape reads from the database, in one read transaction."""

    counters: list[tuple[str, str, float]]
    statuses: list[readmodel.RegistryStatus]
    durations: dict[tuple[str, str], float]
    pending: int
    #: by workspace
    lags: dict[str, float]
    #: by (workspace, subscription)
    delivery_lags: dict[tuple[str, str], float]


def gather() -> Gathered:
    with session_scope() as session:
        return Gathered(
            counters.read_all_raw(session),
            readmodel.deployment_statuses(session),
            readmodel.last_poll_durations(session),
            session.scalar(select(func.count(Event.id)).where(Event.published_at.is_(None))) or 0,
            readmodel.schedule_lags(session),
            deliveries.delivery_lags(session),
        )


def render(gathered: Gathered) -> str:
    """The text of the scrape; the broker's queue length is asked for here."""
    parts = [*counter_text(gathered.counters), *registry_text(gathered.statuses, gathered.durations)]
    parts += [OUTBOX.header(), sample(OUTBOX.name, gathered.pending), LAG.header()]
    parts += [sample(series(LAG.name, LAG.labels, (name,)), lag) for name, lag in sorted(gathered.lags.items())]
    parts += [DELIVERY_LAG.header()]
    parts += [
        sample(series(DELIVERY_LAG.name, DELIVERY_LAG.labels, key), lag)
        for key, lag in sorted(gathered.delivery_lags.items())
    ]
    parts += queue_text()
    return "".join(parts)


def scrape() -> str:
    """Everything `/metrics` shows, gathered now."""
    return render(gather())


def counter_text(rows: Iterable[tuple[str, str, float]]) -> Iterator[str]:
    """The counters' families, then the duration histogram. A histogram row with labels the family no
    longer has (a per-registry bucket from before 0009, or from a worker not yet upgraded) is added into
    the series it now belongs to."""
    by_metric: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for metric, labels, value in rows:
        by_metric[metric].append((labels, value))
    for name, family in COUNTERS.items():
        yield family.header()
        yield from samples(family, by_metric.get(name, ()))
    yield from histogram_text(DURATION, by_metric)


def histogram_text(family: Family, by_metric: dict[str, list[tuple[str, float]]]) -> Iterator[str]:
    buckets: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in by_metric.get(f"{family.name}_bucket", ()):
        parsed = json.loads(labels)
        buckets[tuple(parsed.get(k, "") for k in family.labels)][parsed["le"]] += value
    for labels, value in by_metric.get(f"{family.name}_sum", ()):
        parsed = json.loads(labels)
        sums[tuple(parsed.get(k, "") for k in family.labels)] += value
    yield family.header()
    for key in sorted(buckets):
        ordered = sorted(buckets[key].items(), key=lambda item: float(item[0]))
        for le, value in ordered:
            yield sample(series(f"{family.name}_bucket", (*family.labels, "le"), (*key, le)), value)
        yield sample(series(f"{family.name}_count", family.labels, key), ordered[-1][1])
        yield sample(series(f"{family.name}_sum", family.labels, key), sums[key])


def registry_text(statuses: list[readmodel.RegistryStatus], durations: dict[tuple[str, str], float]) -> Iterator[str]:
    """The per-registry gauges, a family at a time."""
    up, success, duration, tags, repositories = REGISTRY_GAUGES
    names = [(status, series("", REGISTRY, (status.workspace, status.name))) for status in statuses]
    yield up.header()
    yield from (sample(up.name + labels, 1.0 if s.state == "ok" else 0.0) for s, labels in names)
    yield success.header()
    yield from (
        sample(success.name + labels, s.last_success_at.timestamp())
        for s, labels in names
        if s.last_success_at is not None
    )
    yield duration.header()
    yield from (
        sample(duration.name + labels, durations[s.workspace, s.name])
        for s, labels in names
        if (s.workspace, s.name) in durations
    )
    yield tags.header()
    yield from (sample(tags.name + labels, s.tags) for s, labels in names)
    yield repositories.header()
    yield from (sample(repositories.name + labels, s.repositories) for s, labels in names)


def queue_text() -> list[str]:
    """The broker's queue length, in one round trip; no sample when the broker is away (rather than a
    wrong number)."""
    from watcher import bus
    from watcher.polling import pool

    try:
        waiting = float(pool.queued(bus.connect()))
    except Exception:
        return [QUEUE.header()]
    return [QUEUE.header(), sample(series(QUEUE.name, QUEUE.labels, ("celery",)), waiting)]


#: the deployment's most overdue poll, whichever its workspace (the scheduler's tests and benchmarks ask)
schedule_lag = readmodel.deployment_lag


def allowed(request: Request) -> bool:
    """Whether the scrape may be answered: `/metrics` names every workspace's registries, so it takes the
    metrics token or a live operator token, and anyone only where WATCHER_METRICS_OPEN says so. An
    operator's token is checked on every scrape, so a revoked one is refused at once."""
    settings = get_settings()
    if settings.metrics_open:
        return True
    given = bearer_token(request)
    if given is None:
        return False
    expected = settings.metrics_token
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        return True
    principal = principal_of(given)
    return principal is not None and principal.role == "operator"


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(request: Request) -> Response:
    if not allowed(request):
        raise ApiError(
            401,
            "unauthorized",
            "/metrics needs Authorization: Bearer $WATCHER_METRICS_TOKEN or an operator's token",
            headers=CHALLENGE,
        )
    return Response(scrape().encode(), media_type=CONTENT_TYPE)
