"""The Celery app: Redis broker, a beat tick that dispatches due registries, and a relay sweep."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from watcher.bus import celery_broker_url
from watcher.settings import get_settings

TICK_SECONDS = 1.0
RELAY_SWEEP_SECONDS = 5.0


def make_app() -> Celery:
    settings = get_settings()
    prefix = f"{settings.events_stream}:celery:"  # test runs and tenants sharing a Redis stay apart
    app = Celery("watcher", include=["watcher.tasks.jobs"])
    app.conf.update(
        broker_url=celery_broker_url(settings),
        broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        timezone="UTC",
        # the schedule is two fixed ticks; the real schedule lives in the database, so beat keeps nothing
        # on disk and any number of `watcher run` processes can share a data dir
        beat_scheduler="celery.beat:Scheduler",
        beat_schedule={
            "dispatch-due-registries": {"task": "watcher.tick", "schedule": TICK_SECONDS},
            "relay-outbox": {"task": "watcher.relay", "schedule": RELAY_SWEEP_SECONDS},
        },
    )
    return app


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked worker must not share its parent's database connections."""
    from watcher.db import get_engine

    get_engine.cache_clear()


app = make_app()
