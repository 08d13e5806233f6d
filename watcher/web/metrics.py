"""`/metrics`: Prometheus's text format, read from the source of truth at scrape time.

Counters come from the database's deployment-wide counters (`watcher.counters`), gauges from the read
model, the outbox and the broker — so whichever process serves the scrape, and wherever the workers run,
the numbers are the deployment's.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select

from watcher import counters, readmodel
from watcher.db import session_scope
from watcher.models import Event, Registry, utcnow
from watcher.settings import get_settings
from watcher.web.errors import ApiError

router = APIRouter(tags=["metrics"])

COUNTERS = {
    "watcher_polls_total": ("Polls finished, by outcome.", ("registry", "provider", "outcome")),
    "watcher_registry_requests_total": ("Requests to registries, by HTTP status.", ("registry", "provider", "code")),
    "watcher_events_total": ("Events detected.", ("registry", "change")),
    "watcher_webhooks_total": ("Webhook notifications received.", ("registry", "format", "outcome")),
}
HISTOGRAMS = {"watcher_poll_duration_seconds": ("How long polls take.", ("registry", "provider"))}


class DeploymentCollector:
    """Everything `/metrics` shows, gathered at each scrape."""

    def collect(self) -> Iterator[Metric]:
        with session_scope() as session:
            rows = counters.read_all(session)
            statuses = readmodel.registry_statuses(session)
            pending = session.scalar(select(func.count(Event.id)).where(Event.published_at.is_(None))) or 0
            lag = schedule_lag(session)
        yield from counter_families(rows)
        yield from registry_gauges(statuses)
        yield _gauge("watcher_outbox_pending", "Events in the history not yet on the stream.", pending)
        yield _gauge("watcher_schedule_lag_seconds", "How late the most overdue registry's poll is.", lag)
        yield queue_lengths()


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def counter_families(rows: list[tuple[str, dict[str, str], float]]) -> Iterator[Metric]:
    by_metric: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for metric, labels, value in rows:
        by_metric[metric].append((labels, value))
    for name, (text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(name.removesuffix("_total"), text, labels=label_names)
        for labels, value in by_metric.get(name, []):
            family.add_metric([labels.get(k, "") for k in label_names], value)
        yield family
    for name, (text, label_names) in HISTOGRAMS.items():
        histogram = HistogramMetricFamily(name, text, labels=label_names)
        series: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: {"buckets": {}, "sum": 0.0})
        for labels, value in by_metric.get(f"{name}_bucket", []):
            series[tuple(labels.get(k, "") for k in label_names)]["buckets"][labels["le"]] = value
        for labels, value in by_metric.get(f"{name}_sum", []):
            series[tuple(labels.get(k, "") for k in label_names)]["sum"] = value
        for key, data in sorted(series.items()):
            buckets = sorted(data["buckets"].items(), key=lambda item: float(item[0]))
            histogram.add_metric(list(key), buckets, data["sum"])
        yield histogram


def registry_gauges(statuses: list[readmodel.RegistryStatus]) -> Iterator[Metric]:
    up = GaugeMetricFamily("watcher_registry_up", "1 when the registry's last poll succeeded.", labels=["registry"])
    success = GaugeMetricFamily(
        "watcher_registry_last_success_timestamp_seconds", "When the last poll succeeded.", labels=["registry"]
    )
    tags = GaugeMetricFamily("watcher_registry_tags", "Tags stored now.", labels=["registry"])
    repositories = GaugeMetricFamily("watcher_registry_repositories", "Repositories stored now.", labels=["registry"])
    for status in statuses:
        up.add_metric([status.name], 1.0 if status.state == "ok" else 0.0)
        if status.last_success_at is not None:
            success.add_metric([status.name], status.last_success_at.timestamp())
        tags.add_metric([status.name], status.tags)
        repositories.add_metric([status.name], status.repositories)
    yield from (up, success, tags, repositories)


def schedule_lag(session: Any) -> float:
    """Seconds since the oldest poll that is due (dispatched or not) should have started; 0 when none is."""
    oldest = session.execute(select(func.min(Registry.due_since), func.min(Registry.next_poll_at))).one()
    now = utcnow()
    moments = [readmodel.aware_utc(m) for m in oldest if m is not None]
    return max([0.0, *((now - m).total_seconds() for m in moments if m is not None)])


def queue_lengths() -> GaugeMetricFamily:
    from watcher import bus, pool

    family = GaugeMetricFamily("watcher_queue_length", "Tasks waiting in the Celery broker.", labels=["queue"])
    with suppress(Exception):  # the broker is away: report no number rather than a wrong one
        family.add_metric(["celery"], float(pool.queued(bus.connect())))
    return family


def make_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector())
    return registry


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    expected = get_settings().metrics_token
    if expected:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "unauthorized", "/metrics needs Authorization: Bearer $WATCHER_METRICS_TOKEN")
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
