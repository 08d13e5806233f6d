"""The delivery engine: each subscription's pending deliveries sent in order, many subscriptions at once.

A run (the `watcher.deliver` task: kicked by the relay when it writes deliveries, and swept every second)
claims subscriptions whose first pending delivery is due, each by a lease on its row taken by
compare-and-set (like a registry's: `watcher.polling.leases`), and gives each a *lane*: a coroutine on the
run's one event loop that sends that subscription's deliveries strictly in id order, the next only once
the previous was delivered or dead-lettered. A hanging endpoint holds its own lane and nothing else; no
process or thread is spent per subscription, and each lane has its own client with one kept connection. A
retry releases the lane (its delivery is due again later, when a run claims it). One run claims at a time
in the deployment (`watcher.delivery.kick.Turn`, looking again ten times a second): after its time it
gives the turn to the next run, gives its lanes' attempts in flight `GRACE_SECONDS`, and cuts the rest
(nothing recorded: the next run sends them again), so delivery runs hold one pool process, not every one.

How many lanes the whole deployment runs is `WATCHER_DELIVERY_CONCURRENCY`: a claim takes at most that
many minus the live leases (those of holders known dead not counted). Claims racing in two processes may
overshoot it by what they claim at the same moment; each lane has at most one delivery in flight.

Every outcome is committed before the lane goes on: the delivery's row, its subscription's
`last_delivered_at` / `last_failed_at` / `last_error` and `watcher_deliveries_total`, in one short
transaction shared by the outcomes of all lanes that arrive while the previous one commits (so a hundred
lanes cost a hundred rows per commit, not a hundred commits). A run that dies (SIGKILL) leaves its leases,
taken at once by the next run when their holder is known dead (else after `lease_seconds`), and its
deliveries pending: at least once, in order. A delivery's attempt is bounded by
`WATCHER_DELIVERY_TIMEOUT_SECONDS`; a response body is never kept or logged beyond its escaped excerpt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from watcher import schema
from watcher.db import get_engine, session_scope
from watcher.delivery import backoff, sending
from watcher.delivery.formats import build
from watcher.delivery.kick import Turn
from watcher.delivery.subscriptions import secret_of
from watcher.errors import WatcherError
from watcher.read import counters
from watcher.read.model import EVENT_COLUMNS
from watcher.runtime import holder
from watcher.schema import DEFAULT_WORKSPACE, utcnow
from watcher.settings import Settings, get_settings

log = logging.getLogger("watcher")
SUBSCRIPTIONS = schema.subscriptions
DELIVERIES = schema.deliveries
EVENTS = schema.events
TOTAL = "watcher_deliveries_total"
#: deliveries a lane reads at a time
BATCH = 100
#: how often a run looks for more due subscriptions while its lanes work
CLAIM_EVERY = 0.1
#: when a run stops claiming, its lanes' attempts in flight get this long; those still waiting on their
#: endpoint are then cut (nothing recorded: sent again by the next run, not counted as an attempt)
GRACE_SECONDS = 1.0


@dataclass
class Totals:
    """What one run did: attempts delivered, failed (to be tried again), dead-lettered."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    subscriptions: int = 0


@dataclass(frozen=True)
class Lane:
    """A claimed subscription, as its lane sends to it."""

    id: int
    workspace: str
    name: str
    url: str
    format: str
    secret: str

    @property
    def key(self) -> str:
        return self.name if self.workspace == DEFAULT_WORKSPACE else f"{self.workspace}/{self.name}"


@dataclass(frozen=True)
class Recorded:
    """One attempt's outcome, as it is committed."""

    lane: Lane
    delivery_id: int
    event_id: str
    attempts: int
    next: backoff.Next
    outcome: sending.Outcome
    at: datetime


def lease_seconds(settings: Settings) -> float:
    """A run's claim on a subscription: renewed every third of it, longer than any attempt."""
    return max(60.0, 4.0 * settings.delivery_timeout_seconds)


# ---- claims (each a short transaction, run in a thread) -------------------------------------------------
def claim(engine: Engine, owner: str, cap: int, held: set[int], lease: float) -> list[Lane]:
    """Take the subscriptions whose first pending delivery is due (most overdue first), as many as the
    deployment's cap leaves room for: free ones, lapsed ones, and those whose holder is known dead."""
    now = utcnow()
    s = SUBSCRIPTIONS.c
    head = (
        select(DELIVERIES.c.next_attempt_at)
        .where(DELIVERIES.c.subscription_id == s.id, DELIVERIES.c.state == "pending")
        .order_by(DELIVERIES.c.id)
        .limit(1)
        .correlate(SUBSCRIPTIONS)
        .scalar_subquery()
    )
    heads = select(s.id, s.lease_owner, s.lease_until, head.label("head")).subquery()
    with engine.begin() as connection:
        live = connection.execute(
            select(s.lease_owner, func.count()).where(s.lease_until > now).group_by(s.lease_owner)
        ).all()
        room = cap - sum(count for who, count in live if who is None or not holder.known_dead(who))
        if room <= 0:
            return []
        due = connection.execute(
            select(heads.c.id, heads.c.lease_owner, heads.c.lease_until)
            .where(heads.c.head <= now)
            .order_by(heads.c.head, heads.c.id)
        ).all()
        taken: list[int] = []
        until = now + timedelta(seconds=lease)
        for sid, who, lease_until in due:
            if len(taken) >= room:
                break
            if sid in held or who == owner:
                continue
            if lease_until is None or lease_until < now:
                free = (s.lease_until.is_(None)) | (s.lease_until < now)
            elif who is not None and holder.known_dead(who):
                free = s.lease_owner == who
            else:
                continue
            done = connection.execute(
                update(SUBSCRIPTIONS).where(s.id == sid, free).values(lease_owner=owner, lease_until=until)
            )
            if done.rowcount:
                taken.append(sid)
        if not taken:
            return []
        rows = connection.execute(
            select(s.id, s.name, s.url, s.format, s.secret, schema.workspaces.c.name.label("workspace"))
            .select_from(SUBSCRIPTIONS.join(schema.workspaces))
            .where(s.id.in_(taken))
        ).all()
    return [Lane(r.id, r.workspace, r.name, r.url, r.format, secret_of(r)) for r in rows]


def renew(engine: Engine, owner: str, lease: float) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(SUBSCRIPTIONS)
            .where(SUBSCRIPTIONS.c.lease_owner == owner)
            .values(lease_until=utcnow() + timedelta(seconds=lease))
        )


def release(engine: Engine, owner: str, subscription_id: int | None = None) -> None:
    """Give back one lane's subscription, or (None) every one this run holds."""
    query = update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.lease_owner == owner)
    if subscription_id is not None:
        query = query.where(SUBSCRIPTIONS.c.id == subscription_id)
    with engine.begin() as connection:
        connection.execute(query.values(lease_owner=None, lease_until=None))


def pending(engine: Engine, subscription_id: int) -> list[Any]:
    """The subscription's next pending deliveries, in id order, each with its event's columns."""
    d = DELIVERIES.c
    query = (
        select(
            d.id.label("delivery_id"),
            d.attempts,
            d.created_at.label("delivery_created_at"),
            d.next_attempt_at,
            *EVENT_COLUMNS,
        )
        .select_from(DELIVERIES.join(EVENTS, EVENTS.c.id == d.event_id))
        .where(d.subscription_id == subscription_id, d.state == "pending")
        .order_by(d.id)
        .limit(BATCH)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).all())


_DELIVERY = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        finished_at=bindparam("b_finished"),
        last_status=bindparam("b_status"),
        last_error=bindparam("b_error"),
    )
)
_DELIVERED = (
    update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == bindparam("b_id")).values(last_delivered_at=bindparam("b_at"))
)
_FAILED = (
    update(SUBSCRIPTIONS)
    .where(SUBSCRIPTIONS.c.id == bindparam("b_id"))
    .values(last_failed_at=bindparam("b_at"), last_error=bindparam("b_error"))
)


def outcome_label(record: Recorded) -> str:
    """`delivered`, `failed` (to be tried again) or `dead` (dead-lettered)."""
    return {"delivered": "delivered", "pending": "failed"}.get(record.next.state, "dead")


def commit(engine: Engine, records: list[Recorded]) -> None:
    """The outcomes of several lanes' attempts, in one transaction."""
    rows = [
        {
            "b_id": r.delivery_id,
            "b_state": r.next.state,
            "b_attempts": r.attempts,
            "b_next": r.next.at or r.at,
            "b_finished": None if r.next.state == "pending" else r.at,
            "b_status": r.outcome.status,
            "b_error": r.outcome.error,
        }
        for r in records
    ]
    delivered = [{"b_id": r.lane.id, "b_at": r.at} for r in records if r.next.state == "delivered"]
    failed = [
        {"b_id": r.lane.id, "b_at": r.at, "b_error": r.outcome.error} for r in records if r.next.state != "delivered"
    ]
    increments = [
        counters.Increment(TOTAL, {"workspace": r.lane.workspace, "subscription": r.lane.name, "outcome": label})
        for r in records
        for label in (outcome_label(r),)
    ]
    with session_scope(engine) as session:
        connection = session.connection()
        connection.execute(_DELIVERY, rows)
        if delivered:
            connection.execute(_DELIVERED, delivered)
        if failed:
            connection.execute(_FAILED, failed)
        counters.add(session, increments)


class Recorder:
    """Commits outcomes as they come: those that arrive while one commit runs go in the next, together."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._waiting: list[tuple[Recorded, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, record: Recorded) -> None:
        """Return once `record` is committed (or raise what the commit raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, done))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await asyncio.to_thread(commit, self.engine, [record for record, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        done.set_exception(exc)
                else:
                    for _, done in batch:
                        done.set_result(None)
        finally:
            self._flushing = None


# ---- a run ---------------------------------------------------------------------------------------------
class Run:
    """One run of the engine: claims, lanes, and the heartbeat of its leases."""

    def __init__(self, engine: Engine, settings: Settings, seconds: float, turn: Turn | None = None) -> None:
        self.engine = engine
        self.turn = turn
        self.settings = settings
        self.seconds = seconds
        self.owner = holder.token()
        self.cap = max(1, settings.delivery_concurrency)
        self.timeout = float(max(1, settings.delivery_timeout_seconds))
        self.base = max(0, settings.delivery_backoff_ms) / 1000
        self.lease = lease_seconds(settings)
        self.totals = Totals()
        self.recorder = Recorder(engine)
        self.stop_at = 0.0

    def stopping(self) -> bool:
        return asyncio.get_running_loop().time() >= self.stop_at

    async def __call__(self) -> Totals:
        loop = asyncio.get_running_loop()
        self.stop_at = loop.time() + self.seconds
        lanes: dict[int, asyncio.Task[None]] = {}
        renewed = loop.time()
        try:
            while True:
                if not self.stopping() and (self.turn is None or self.turn.keep()):
                    for lane in await asyncio.to_thread(
                        claim, self.engine, self.owner, self.cap, set(lanes), self.lease
                    ):
                        lanes[lane.id] = asyncio.create_task(self.lane(lane))
                        self.totals.subscriptions += 1
                else:
                    self.stop_at = min(self.stop_at, loop.time())
                    if self.turn is not None:
                        self.turn.give()  # the next run claims while these lanes end
                    if lanes:
                        await asyncio.wait(lanes.values(), timeout=GRACE_SECONDS)
                    return self.totals
                if not lanes:
                    return self.totals
                await asyncio.wait(lanes.values(), timeout=CLAIM_EVERY, return_when=asyncio.FIRST_COMPLETED)
                for sid in [sid for sid, task in lanes.items() if task.done()]:
                    lanes.pop(sid)
                if loop.time() - renewed > self.lease / 3:
                    renewed = loop.time()
                    await asyncio.to_thread(renew, self.engine, self.owner, self.lease)
        finally:
            if self.turn is not None:
                self.turn.give()
            for task in lanes.values():
                task.cancel()
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(release, self.engine, self.owner)

    async def lane(self, lane: Lane) -> None:
        """Send the subscription's deliveries in order until none is due, a retry waits, or the run ends.
        The lane has a client of its own, one kept connection: a pool shared by a hundred lanes that wait on
        their commits between requests costs httpcore's pool O(connections²) work per request."""
        try:
            async with sending.client(pool=1, seconds=self.timeout) as http:
                await self._send_all(http, lane)
        except (SQLAlchemyError, WatcherError) as exc:
            log.warning("subscription %r: deliveries paused: %s", lane.key, str(exc).splitlines()[0])
        finally:
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(release, self.engine, self.owner, lane.id)

    async def _send_all(self, http: Any, lane: Lane) -> None:
        while not self.stopping():
            batch = await asyncio.to_thread(pending, self.engine, lane.id)
            if not batch:
                return
            for row in batch:
                if self.stopping() or row.next_attempt_at > utcnow():
                    return  # the first pending one waits for its retry: so do the rest
                record = await self.attempt(http, lane, row)
                await self.recorder.record(record)
                self.counted(record)
                if record.next.state == "pending":
                    return

    async def attempt(self, http: Any, lane: Lane, row: Any) -> Recorded:
        attempts = row.attempts + 1
        try:
            request = build(lane.format, lane.url, lane.secret, row)
        except Exception as exc:  # an event this format cannot carry: it never will
            outcome = sending.Outcome("permanent", None, f"not built: {type(exc).__name__}: {exc}"[:200])
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    outcome = await sending.send(http, request)
            except TimeoutError:
                outcome = sending.Outcome("retry", None, f"no answer within {self.timeout:g}s")
        now = utcnow()
        after = backoff.after(outcome, attempts, row.delivery_created_at, now, self.base)
        return Recorded(lane, row.delivery_id, row.event_id, attempts, after, outcome, now)

    def counted(self, record: Recorded) -> None:
        """The totals, and the one line of an outcome worth one: a failure, a dead letter, a recovery."""
        lane, outcome = record.lane, record.outcome
        if record.next.state == "delivered" and record.attempts == 1:
            self.totals.delivered += 1  # the common case: no line, nothing more to do
            return
        fields = {
            "subscription": lane.key,
            "event": record.event_id,
            "attempts": record.attempts,
            "outcome": outcome_label(record),
            "status": outcome.status,
        }
        if record.next.state == "delivered":
            self.totals.delivered += 1
            if record.attempts > 1:
                log.info(
                    "subscription %r: event %s delivered after %d attempts",
                    lane.key,
                    record.event_id,
                    record.attempts,
                    extra={"fields": fields},
                )
            return
        fields["error"] = outcome.error
        if record.next.state == "pending":
            self.totals.failed += 1
            wait = (record.next.at - record.at).total_seconds() if record.next.at else 0.0
            log.warning(
                "subscription %r: event %s not delivered (attempt %d): %s; next attempt in %.1fs",
                lane.key,
                record.event_id,
                record.attempts,
                outcome.error,
                wait,
                extra={"fields": fields},
            )
            return
        self.totals.dead += 1
        log.warning(
            "subscription %r: event %s dead-lettered after %d attempt%s: %s",
            lane.key,
            record.event_id,
            record.attempts,
            "" if record.attempts == 1 else "s",
            outcome.error,
            extra={"fields": fields},
        )


def deliver(
    seconds: float, *, engine: Engine | None = None, settings: Settings | None = None, turn: Turn | None = None
) -> Totals:
    """Run the engine for about `seconds` (then `GRACE_SECONDS` for its lanes' attempts) on an event loop of
    its own; with `turn`, only while it is this run's turn to claim."""
    return asyncio.run(Run(engine or get_engine(), settings or get_settings(), seconds, turn)())
