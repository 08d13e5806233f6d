"""The Celery app: Redis broker, a beat tick that dispatches due registries, a relay sweep, a delivery
sweep, and the background fill of image metadata."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    beat_embedded_init,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from watcher.bus import celery_broker_url
from watcher.settings import get_settings

POLL_TASK = "watcher.poll"
REPOSITORY_POLL_TASK = "watcher.poll_repository"
CHUNK_TASK = "watcher.poll_chunk"
DELIVER_TASK = "watcher.deliver"
TICK_SECONDS = 1.0
TICK_EXPIRES_SECONDS = 30.0
RELAY_SWEEP_SECONDS = 5.0
#: how often the baseline's digests are described in the background (`watcher.polling.imagefill`)
IMAGE_FILL_SECONDS = 5.0
#: deliveries due again (retries) are picked up this often; a new delivery's run is kicked at once
DELIVER_SWEEP_SECONDS = 1.0


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
            # a tick waiting behind a busy queue is dropped once the next one is due anyway
            "dispatch-due-registries": {
                "task": "watcher.tick",
                "schedule": TICK_SECONDS,
                "options": {"expires": TICK_EXPIRES_SECONDS},
            },
            "relay-outbox": {"task": "watcher.relay", "schedule": RELAY_SWEEP_SECONDS},
            "fill-images": {
                "task": "watcher.fill_images",
                "schedule": IMAGE_FILL_SECONDS,
                "options": {"expires": IMAGE_FILL_SECONDS},
            },
            "deliver-due": {
                "task": DELIVER_TASK,
                "schedule": DELIVER_SWEEP_SECONDS,
                "options": {"expires": 2 * DELIVER_SWEEP_SECONDS},
            },
        },
    )
    app.steps["worker"].add(PoolSize)
    return app


class PoolSize(bootsteps.StartStopStep):
    """The worker says how many pool processes it runs, now and every `pool.HEARTBEAT_SECONDS` (so that
    the tick queues what the deployment's pool can start: `watcher.polling.pool`), and unsays it at shutdown."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.tref: Any = None
        self.name = f"{worker.hostname}:{os.getpid()}"

    def start(self, worker: Any) -> None:
        from watcher.polling import pool

        self.name = f"{worker.hostname}:{os.getpid()}"
        self.announce(worker)
        self.tref = worker.timer.call_repeatedly(pool.HEARTBEAT_SECONDS, self.announce, (worker,), priority=10)

    def announce(self, worker: Any) -> None:
        from watcher import bus
        from watcher.polling import pool

        with suppress(Exception):  # Redis away: the tick falls back to this host's CPUs, and says nothing new
            pool.announce(bus.connect(), self.name, int(worker.concurrency or 1))

    def stop(self, worker: Any) -> None:
        from watcher import bus
        from watcher.polling import pool

        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        with suppress(Exception):
            pool.forget(bus.connect(), self.name)


@celeryd_init.connect
def _watcher_logging_from_the_start(instance: Any = None, options: Any = None, **_: Any) -> None:
    """Logging set up before the worker says anything (its privilege warning comes next); with
    WATCHER_LOG_FORMAT=json, the start-up banner (not a log line) is left out and Celery's own notices
    ("worker: Warm shutdown") are written as JSON lines."""
    from watcher import logs

    logs.setup((options or {}).get("loglevel") or "INFO")
    if logs.format_of() == "json":
        if instance is not None:
            instance.quiet = True
        logs.celery_notices_as_json()


@setup_logging.connect
def _watcher_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery leaves logging to us (`watcher.logs`), whether started by `watcher run` or by `celery worker`."""
    from watcher import logs

    logs.setup(loglevel or "INFO")


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked worker must not share its parent's database connections."""
    from watcher.db import get_engine

    get_engine.cache_clear()


@worker_init.connect
def _warm_clients(**_: Any) -> None:
    """A worker polls the same registries again and again: it keeps their connections open between polls
    (`watcher.registry.warm`); its forked children inherit the choice, not the connections."""
    global _worker_pid
    from watcher.registry import warm

    warm.enable()
    _worker_pid = os.getpid()  # the embedded beat, forked after this, ends with this process


@worker_ready.connect
def _honour_an_early_sigterm(**_: Any) -> None:
    """A SIGTERM that `watcher run` heard before Celery's handler was in place, and whose exit was lost, is
    sent again now that Celery's handler will do the warm shutdown (`watcher.runtime.early_stop`)."""
    from watcher.runtime import early_stop

    early_stop.resend_if_requested()


#: the pid of this process's worker, in the worker and in the beat it forks (None: no worker started here)
_worker_pid: int | None = None


@beat_embedded_init.connect
def _beat_ends_with_its_worker(**_: Any) -> None:
    """A worker killed outright would leave its embedded beat ticking with nobody to stop it
    (`watcher.runtime.parent`)."""
    from watcher.runtime import parent

    if _worker_pid is not None:
        parent.end_with_parent(_worker_pid)


#: when each poll task running in this process started (by task id), for its pace
_poll_started: dict[str, float] = {}


@task_prerun.connect
def _time_poll(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is not None and getattr(task, "name", None) in (POLL_TASK, REPOSITORY_POLL_TASK, CHUNK_TASK):
        _poll_started[task_id] = time.monotonic()


@task_postrun.connect
def _poll_took(task_id: str | None = None, **_: Any) -> None:
    """A poll task ended (whatever its outcome): its time goes into this process's pace, which bounds how
    much the tick queues (`watcher.polling.pool`)."""
    started = _poll_started.pop(task_id or "", None)
    if started is None:
        return
    from watcher import bus
    from watcher.polling import pool

    with suppress(Exception):  # Redis away: the tick goes by the paces it has
        pool.took(bus.connect(), time.monotonic() - started)


@worker_shutting_down.connect
def _interrupt_polls_in_flight(**_: Any) -> None:
    """A warm shutdown waits for the tasks running in the pool; a poll stuck on a slow registry would hold
    it up until its deadline. So the main process asks each child running a poll to stop (SIGTERM): the
    poll ends within a moment, records its run as abandoned and releases its lease (`watcher.runtime.shutdown`), a
    chunk of a split poll goes back to its queue for another worker, and the shutdown completes. Other
    tasks are short and finish as usual."""
    from celery.worker import state

    for request in list(state.active_requests):
        if request.task_name in (POLL_TASK, REPOSITORY_POLL_TASK, CHUNK_TASK) and request.worker_pid:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(request.worker_pid, signal.SIGTERM)


app = make_app()
