"""The live event feed behind `/api/v1/events/stream`: one reader of the history per process, fanned out to
every connected client.

It reads the events table after the last id it saw, a few times a second, and hands each new event to
every subscriber's queue. Ids are not always committed in order (two polls committing at once can make id
11 visible before id 10), so an id that is missing between two seen ones is a *hole*: the reader keeps
looking below it for `HOLE_SECONDS` before giving up on it (a rolled-back transaction leaves a hole for good).
A client too slow to keep up is disconnected rather than buffered without bound; it reconnects with
`Last-Event-ID` and replays what it missed from the history.

The reader reads every workspace's events (one reader, whatever the number of workspaces), and hands each
only to the subscribers of the event's workspace: a client never receives another workspace's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import anyio
from sqlalchemy import func, select

from watcher.db import session_scope
from watcher.models import Event
from watcher.outbox.events import stream_entry

POLL_SECONDS = 0.2
HOLE_SECONDS = 10.0
BATCH = 500
QUEUE_SIZE = 10_000


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API shows it: the stream entry's fields plus its history id."""
    return {"id": event.id, **stream_entry(event)}


class Overflow(Exception):
    """This subscriber fell too far behind."""


class EventFeed:
    def __init__(self) -> None:
        #: each subscriber's queue, and the workspace whose events it is handed
        self._subscribers: dict[asyncio.Queue[dict[str, Any] | None], int] = {}
        self._task: asyncio.Task[None] | None = None
        self.position = 0  # every id at or below this (except holes) has been handed out
        self._holes: dict[int, float] = {}  # missing id -> when it was first missed
        self._recent: set[int] = set()  # ids handed out above the lowest open hole

    def subscribe(self, workspace_id: int) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of the workspace's new events (None at the end: the client fell too far behind)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[queue] = workspace_id
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.pop(queue, None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Runs while anyone listens; (re)starts at the newest event: a feed tells what happens from now on."""
        try:
            self.position = await anyio.to_thread.run_sync(_newest_id)
        except Exception:
            self.position = 0 if not self.position else self.position
        self._holes.clear()
        self._recent.clear()
        while self._subscribers:
            try:
                events = await anyio.to_thread.run_sync(self._read)
            except Exception:  # the database is away for a moment: keep the clients, try again
                events = []
            for workspace_id, event in events:
                self._broadcast(workspace_id, event)
            await asyncio.sleep(POLL_SECONDS)
        self._task = None

    def horizon(self) -> int:
        """No event at or below this id will be handed out any more (it never decreases)."""
        return min(self._holes, default=self.position + 1) - 1

    def _floor(self) -> int:
        """Read from just below the oldest hole still worth waiting for."""
        now = time.monotonic()
        for hole, since in list(self._holes.items()):
            if now - since > HOLE_SECONDS:
                del self._holes[hole]
        floor = min(self._holes, default=self.position + 1) - 1
        self._recent = {i for i in self._recent if i > floor}
        return floor

    def _read(self) -> list[tuple[int, dict[str, Any]]]:
        """The new events of every workspace, each with its workspace's id."""
        floor = self._floor()
        with session_scope() as session:
            rows = list(session.scalars(select(Event).where(Event.id > floor).order_by(Event.id).limit(BATCH)))
            fresh = [(e.workspace_id, event_json(e)) for e in rows if e.id not in self._recent]
        for _, event in fresh:
            event_id = event["id"]
            self._holes.pop(event_id, None)
            for missing in range(self.position + 1, event_id):
                self._holes.setdefault(missing, time.monotonic())
            self.position = max(self.position, event_id)
            self._recent.add(event_id)
        return fresh

    def _broadcast(self, workspace_id: int, event: dict[str, Any]) -> None:
        """`event` to the subscribers of its workspace only."""
        for queue, subscribed in list(self._subscribers.items()):
            if subscribed != workspace_id:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.pop(queue, None)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # tells the client's stream to end


def _newest_id() -> int:
    """The newest event's id of every workspace: where the one reader of them all starts."""
    with session_scope() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0)
