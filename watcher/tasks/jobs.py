"""Celery tasks: thin wrappers over plain functions that the tests call directly.

Each task ends in one log line whatever happens: a registry's failure, bad row or bad option is logged
naming the registry and never escapes as a traceback, a retry storm or a stopped tick.

A task names its registry by key (`watcher.registrations.keys`: `WORKSPACE/NAME`, or the bare `NAME` in the
workspace `default`), so a task queued by an older version (a bare name) polls the registry it always did.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

import redis
from celery import Task
from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from watcher import bus
from watcher.db import get_engine
from watcher.delivery import kick
from watcher.errors import BadResponseError, RateLimitedError, StateError, UnreachableError, WatcherError
from watcher.models import utcnow
from watcher.outbox.relay import relay
from watcher.polling import fanout, pool, queue, scheduler
from watcher.polling.poll import Busy, PartialPoll, PollResult, poll
from watcher.polling.repository import poll_repository
from watcher.polling.runs import Trigger
from watcher.registry.deadline import Interrupted
from watcher.tasks.app import CHUNK_TASK, DELIVER_TASK, POLL_TASK, REPOSITORY_POLL_TASK, app

log = logging.getLogger("watcher")
TRANSIENT = (UnreachableError, BadResponseError, RateLimitedError)
MAX_RETRIES = 3
RETRY_BACKOFF_SECONDS = 5
RETRY_BACKOFF_MAX_SECONDS = 300
#: a registry-wide webhook poll that finds another poll of the registry running waits for it, this often
BUSY_RETRIES = 60
BUSY_RETRY_SECONDS = 5


@app.task(name="watcher.tick", ignore_result=True)
def tick() -> list[str]:
    """Dispatch a poll for every registry that is due, as many as the pool can start soon (`watcher.polling.pool`),
    the most overdue first."""
    client = bus.connect()
    try:
        room = pool.room(client)
        keys = scheduler.claim_due(get_engine(), utcnow(), room, lost=lambda waiting: pool.lost(client, waiting))
        pool.mark_queued(client, keys)
    except (redis.RedisError, OSError) as exc:
        log.warning("tick skipped: the broker cannot be read: %s", first_line(exc))
        return []
    except (WatcherError, SQLAlchemyError) as exc:
        log.warning("tick skipped: the state database cannot be read: %s", first_line(exc))
        return []
    for key in keys:
        try:
            poll_registry.delay(key)
        except Exception as exc:
            log.error("registry %r: poll not dispatched: %s", key, first_line(exc))
            not_waiting(key, due_at=utcnow())  # due again at the next tick
    return keys


def not_waiting(key: str, due_at: datetime | None = None) -> None:
    """A scheduled poll of `key` is not waiting in the queue any more, without having claimed it."""
    try:
        scheduler.unqueue(get_engine(), key, due_at=due_at)
    except (WatcherError, SQLAlchemyError) as exc:  # taken for lost after pool.LOST_AFTER_SECONDS
        log.warning("registry %r: not marked as no longer queued: %s", key, first_line(exc))


@app.task(name=POLL_TASK, bind=True, ignore_result=True)
def poll_registry(self: Task, key: str, trigger: Trigger = "schedule") -> int:
    """Poll one registry and publish its events at once; the relay sweep catches up if Redis was down.
    Beat's tick dispatches it as `schedule`; "Poll now" queues it as `manual`; a notification naming too many
    repositories queues it as `webhook` (`watcher.polling.queue.MAX_REPOSITORIES`), which, if another poll of the
    registry is running, waits for it rather than lose the notification.

    A transient failure is retried with backoff, up to MAX_RETRIES; after that, and for any other failure,
    the poll's run says why and the log has one line."""
    if trigger == "webhook":
        queue.whole_started(key)  # a notification from now on may queue another
    try:
        result = poll(key, dispatch=dispatch_chunks(key), trigger=trigger)
    except Busy as exc:
        # a webhook's hints came after that poll began: wait for it, unless another such poll waits already
        if trigger == "webhook" and self.request.retries < BUSY_RETRIES and queue.whole_waits(key):
            log.info("%s (a webhook's poll of it waits %ds)", exc, BUSY_RETRY_SECONDS)
            raise self.retry(countdown=BUSY_RETRY_SECONDS, max_retries=BUSY_RETRIES) from None
        log.info("%s", exc)
        if trigger == "schedule":
            not_waiting(key)
        return 0
    except PartialPoll as exc:  # the failed repositories are listed again by the next scheduled poll
        log_result(exc.result, exc)
        if exc.result.event_count:
            publish()
        return exc.result.event_count
    except TRANSIENT as exc:
        return retry_or_give_up(self, key, exc)
    except WatcherError as exc:  # the registry's failure, bad option or credentials, or a stop request
        log.warning("%s", exc, extra=failed(key, exc))
        return 0
    except Exception as exc:
        log.error("registry %r: poll failed: %s: %s", key, type(exc).__name__, first_line(exc), extra=failed(key, exc))
        log.debug("registry %r: poll failed", key, exc_info=True)
        if trigger == "schedule":  # maybe before it claimed the registry: not left marked as waiting
            not_waiting(key)
        return 0
    log_result(result)
    if result.event_count:
        publish()
    return result.event_count


def dispatch_chunks(key: str) -> fanout.Dispatch:
    """How a worker's poll of a big registry hands its further chunks to the pool."""

    def dispatch(run_id: int, count: int) -> None:
        for _ in range(count):
            poll_chunk.delay(key, run_id)

    return dispatch


@app.task(name=CHUNK_TASK, ignore_result=True)
def poll_chunk(key: str, run_id: int) -> int:
    """List chunks of a split poll of `key` (run `run_id`) while any is left, and publish their events.
    Never retried as a task: a chunk that fails goes back to its poll's queue, whose process lists it."""
    try:
        helped = fanout.help_poll(key, run_id)
    except WatcherError as exc:
        log.warning("registry %r: chunks of poll run %d: %s", key, run_id, first_line(exc), extra=failed(key, exc))
        return 0
    except Exception as exc:
        return unexpected(key, f"chunks of poll run {run_id}", exc)
    if helped.chunks:
        fields = {"registry": key, "run": run_id, "chunks": helped.chunks, "repositories": helped.repositories}
        fields |= {"events": helped.events, "failed_repositories": helped.failed, "requests": helped.requests}
        log.info(
            "registry %r: %d chunk%s of poll run %d listed here: %d repositories, %d events, %d failed, %d requests",
            key,
            helped.chunks,
            "" if helped.chunks == 1 else "s",
            run_id,
            helped.repositories,
            helped.events,
            helped.failed,
            helped.requests,
            extra={"fields": fields},
        )
    if helped.events:
        publish()
    return helped.events


def log_result(result: PollResult, partial: PartialPoll | None = None) -> None:
    """The one line a poll leaves at INFO (WARNING naming the repositories that failed, if some did); its
    numbers are also the line's fields (keys in JSON logs)."""
    fields: dict[str, object] = {
        "registry": result.registry,
        "outcome": "failed" if partial is not None else "ok",
        "repositories": result.repositories,
        "tags": result.tags,
        "events": result.event_count,
        "requests": result.requests,
        "seconds": round(result.seconds, 3),
        "baseline": result.baseline,
    }
    if result.ignored:
        fields["ignored"] = result.ignored
    if result.chunks:
        fields |= {"chunks": result.chunks, "chunks_here": result.chunks_here}
    if partial is not None:
        fields["failed_repositories"] = len(result.failures)
        fields["error"] = first_line(partial)
        log.warning("%s (events saved: %d)", first_line(partial), result.event_count, extra={"fields": fields})
        return
    log.info(
        "registry %r: polled in %.2fs: %d repositories, %d tags, %d events, %d requests%s%s%s",
        result.registry,
        result.seconds,
        result.repositories,
        result.tags,
        result.event_count,
        result.requests,
        f", {result.ignored} ignored" if result.ignored else "",
        f", {result.chunks} chunks ({result.chunks_here} listed here)" if result.chunks else "",
        " (baseline)" if result.baseline else "",
        extra={"fields": fields},
    )


def failed(key: str, exc: BaseException) -> dict[str, object]:
    """The fields of the line of a poll that failed (or was interrupted: `abandoned`)."""
    outcome = "abandoned" if isinstance(exc, Interrupted) else "failed"
    return {"fields": {"registry": key, "outcome": outcome, "error": first_line(exc)}}


@app.task(name=REPOSITORY_POLL_TASK, bind=True, ignore_result=True)
def poll_repository_task(self: Task, key: str, repository: str, expect: list[str] | None = None) -> int:
    """Poll one repository of one registry (a webhook's hint) and publish its events at once. Its queued
    mark is cleared first, so a notification arriving while it lists queues one more poll; a follow-up whose
    repository's notifications have not settled yet is sent again for later instead (`queue.begin`). A pushed
    tag (`expect`) the listing does not show yet is looked for once more a moment later
    (`queue.CONFIRM_SECONDS`)."""
    try:
        wait = queue.begin(key, repository)
        if wait > 0:
            queue.defer(key, repository, expect, wait)
            return 0
    except (redis.RedisError, OSError, OperationalError) as exc:  # listed now
        log.warning("registry %r: %s: queued mark not cleared: %s", key, repository, first_line(exc))
        with contextlib.suppress(redis.RedisError, OSError):  # else it lapses on its own
            queue.started(key, repository)  # so that later notifications are not coalesced into nothing
    fields: dict[str, object] = {"registry": key, "repository": repository}
    try:
        result = poll_repository(key, repository)
    except TRANSIENT as exc:
        return retry_or_give_up(self, key, exc)
    except WatcherError as exc:
        log.warning("registry %r: %s: %s", key, repository, first_line(exc), extra=failed(key, exc))
        return 0
    except Exception as exc:
        return unexpected(key, f"{repository}: poll", exc)
    finally:
        queue.finished(key, repository)
    if not result.in_scope:
        log.info("registry %r: %s is not watched: ignored", key, repository, extra={"fields": fields})
        return 0
    if expect and not set(expect) <= result.listed:
        confirm(key, repository)
    fields |= {"tags": result.tags, "events": len(result.events), "requests": result.requests}
    log.info(
        "registry %r: %s polled: %d tags, %d events, %d requests%s",
        key,
        repository,
        result.tags,
        len(result.events),
        result.requests,
        f" ({result.conflict})" if result.conflict else "",
        extra={"fields": fields},
    )
    if result.events:
        publish()
    return len(result.events)


def unexpected(key: str, what: str, exc: Exception) -> int:
    """The one line of a task that failed in a way nobody planned for: `registry 'r': WHAT failed: ...`."""
    log.error("registry %r: %s failed: %s: %s", key, what, type(exc).__name__, first_line(exc), extra=failed(key, exc))
    return 0


def confirm(key: str, repository: str) -> None:
    """List the repository once more a moment later (without `expect`: never a third time for one hint)."""
    try:
        queue.queue_repository_poll(key, repository, delay=queue.CONFIRM_SECONDS)
    except WatcherError as exc:  # the next scheduled poll sees the tag
        log.warning("%s", exc)


def retry_or_give_up(task: Task, key: str, exc: WatcherError) -> int:
    """A transient failure: retried with exponential backoff, then given up on with one line (the next
    scheduled poll tries again)."""
    if task.request.retries < MAX_RETRIES:
        countdown = min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS * 2**task.request.retries)
        log.warning("%s (retrying in %ds)", exc, countdown, extra=failed(key, exc))
        raise task.retry(countdown=countdown) from None
    log.warning("%s", exc, extra=failed(key, exc))
    return 0


@app.task(name="watcher.fill_images", ignore_result=True)
def fill_images() -> int:
    """Describe a bounded number of the baseline's digests (`watcher.polling.imagefill`); one line when it
    stored or failed some, none when nothing was missing."""
    from watcher.polling import imagefill

    try:
        filled = imagefill.fill(get_engine(), bus.connect())
    except (redis.RedisError, OSError, WatcherError, SQLAlchemyError) as exc:
        log.warning("image metadata fill skipped: %s", first_line(exc))
        return 0
    if filled.stored or filled.failed:
        fields = {"registries": filled.registries, "stored": filled.stored, "failed": filled.failed}
        log.info(
            "image metadata filled: %d digests stored, %d failed, %d requests, %d selections changed",
            filled.stored,
            filled.failed,
            filled.requests,
            filled.selected,
            extra={"fields": fields | {"requests": filled.requests, "selected": filled.selected}},
        )
    if filled.selected:
        publish()  # a changed selection's event goes out now, as a poll's does, not at the next sweep
    return filled.stored


@app.task(name="watcher.relay", ignore_result=True)
def relay_events() -> int:
    return publish()


def publish() -> int:
    """Relay committed events; a delivery run is kicked when they were owed to subscriptions."""
    try:
        return relay(bus.connect(), wait_seconds=5, on_deliveries=kick.kick)
    except StateError as exc:
        log.warning("%s", exc)
        return 0


#: a delivery run claims subscriptions this long (while it holds the deployment's one turn to claim), then
#: gives the turn to the next run (the sweep's or a kick's) and ends once its lanes have (at most
#: `worker.GRACE_SECONDS` later): deliveries hold one pool process, and never long past this
DELIVER_SECONDS = 30.0


@app.task(name=DELIVER_TASK, ignore_result=True)
def deliver() -> int:
    """Deliver what is due (`watcher.delivery.worker`); one line when anything failed or was dead-lettered."""
    from watcher.delivery import worker

    try:
        kick.started()
    except (redis.RedisError, OSError) as exc:  # the mark lapses on its own
        log.debug("delivery kick mark not cleared: %s", first_line(exc))
    try:
        turn = kick.Turn()
        if not turn.take():
            return 0  # a run is claiming: it sees what this one would have
        totals = worker.deliver(DELIVER_SECONDS, turn=turn)
    except (redis.RedisError, OSError) as exc:
        log.warning("deliveries not run: the broker cannot be read: %s", first_line(exc))
        return 0
    except (WatcherError, SQLAlchemyError) as exc:
        log.warning("deliveries not run: %s", first_line(exc))
        return 0
    if totals.failed or totals.dead:
        log.info(
            "deliveries: %d delivered, %d failed (to be retried), %d dead-lettered, to %d subscriptions",
            totals.delivered,
            totals.failed,
            totals.dead,
            totals.subscriptions,
            extra={"fields": {"delivered": totals.delivered, "failed": totals.failed, "dead": totals.dead}},
        )
    return totals.delivered


def first_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]
