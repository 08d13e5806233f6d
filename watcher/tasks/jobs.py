"""Celery tasks: thin wrappers over plain functions that the tests call directly."""

from __future__ import annotations

import logging

from celery import Task

from watcher import bus, scheduler
from watcher.db import get_engine
from watcher.errors import BadResponseError, RateLimitedError, StateError, UnreachableError
from watcher.models import utcnow
from watcher.polling import Busy, poll
from watcher.relay import relay
from watcher.tasks.app import app

log = logging.getLogger("watcher")
TRANSIENT = (UnreachableError, BadResponseError, RateLimitedError)


@app.task(name="watcher.tick", ignore_result=True)
def tick() -> list[str]:
    """Dispatch a poll for every registry that is due."""
    names = scheduler.claim_due(get_engine(), utcnow())
    for name in names:
        poll_registry.delay(name)
    return names


@app.task(
    name="watcher.poll",
    bind=True,
    ignore_result=True,
    autoretry_for=TRANSIENT,
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=3,
)
def poll_registry(self: Task, name: str) -> int:
    """Poll one registry and publish its events at once; the relay sweep catches up if Redis was down."""
    try:
        result = poll(name)
    except Busy as exc:
        log.info("%s", exc)
        return 0
    log.info(
        "registry %r: %d repositories, %d tags, %d events%s",
        name,
        result.repositories,
        result.tags,
        len(result.events),
        " (baseline)" if result.baseline else "",
    )
    if result.events:
        publish()
    return len(result.events)


@app.task(name="watcher.relay", ignore_result=True)
def relay_events() -> int:
    return publish()


def publish() -> int:
    try:
        return relay(bus.connect(), wait_seconds=5)
    except StateError as exc:
        log.warning("%s", exc)
        return 0
