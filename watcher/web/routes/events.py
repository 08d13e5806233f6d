"""`/api/v1/events`: the history, filtered and keyset-paged, and the same events live as Server-Sent Events:
the events of the workspace the request acts in, never another's (history, replay and live feed alike)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from watcher.db import session_scope
from watcher.read import model as readmodel
from watcher.web import schemas
from watcher.web.deps import DbSession, still_authorized
from watcher.web.feed import EventFeed, event_json
from watcher.web.routes.registries import Caller, Cursor, Limit

router = APIRouter(prefix="/events", tags=["events"])
Change = Literal["added", "updated", "removed", "selected"]
Text = Annotated[str | None, Query(max_length=255)]
KEEPALIVE_SECONDS = 15.0
#: how often a stream checks that its caller may still read: a revoked token, or a console session logged
#: out, idle or expired, ends its streams within this (plus a keep-alive) too, not only its next requests
RECHECK_SECONDS = 15.0


def filters_of(
    registry: Text = None,
    repository: Text = None,
    tag: Text = None,
    change: Change | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> readmodel.EventFilters:
    return readmodel.EventFilters(registry, repository, tag, change, _utc(since, "since"), _utc(until, "until"))


def _utc(moment: datetime | None, field: str) -> datetime | None:
    return None if moment is None else readmodel.in_utc(moment, field)


Filters = Annotated[readmodel.EventFilters, Depends(filters_of)]


@router.get("", response_model=schemas.Page[schemas.Event])
def list_events(
    session: DbSession,
    caller: Caller,
    filters: Filters,
    order: Literal["desc", "asc"] = "desc",
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    page = readmodel.events_page(
        session, filters, order=order, cursor=cursor, limit=limit, workspace_id=caller.workspace_id
    )
    return {"items": [event_json(e) for e in page.items], "next_cursor": page.next_cursor}


def _matches(event: dict[str, Any], filters: readmodel.EventFilters) -> bool:
    return all(
        wanted is None or event[field] == wanted
        for field, wanted in (
            ("registry", filters.registry),
            ("repository", filters.repository),
            ("tag", filters.tag),
            ("change", filters.change),
        )
    )


def _message(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(
    request: Request,
    caller: Caller,
    filters: Filters,
    last_event_id: Annotated[int | None, Header(ge=0, le=readmodel.MAX_ID)] = None,
) -> StreamingResponse:
    """The workspace's new events as they are committed; with `Last-Event-ID`, every later event is replayed
    first."""
    feed: EventFeed = request.app.state.feed
    workspace_id = caller.workspace_id
    queue = feed.subscribe(workspace_id)
    horizon = feed.horizon()  # the feed hands this client only events above it

    async def messages() -> AsyncIterator[str]:
        replayed: set[int] = set()  # replayed ids the feed may still hand out: skip them there
        after = last_event_id if last_event_id is not None else -1
        try:
            yield ": connected\n\n"
            if last_event_id is not None:
                async for event in _replay(filters, last_event_id, workspace_id):
                    if event["id"] > horizon:
                        replayed.add(event["id"])
                    yield _message(event)
            checked = time.monotonic()
            while True:
                try:
                    live, quiet = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS), False
                except TimeoutError:
                    live, quiet = None, True
                if time.monotonic() - checked > RECHECK_SECONDS:
                    if not await anyio.to_thread.run_sync(still_authorized, request):
                        return
                    checked = time.monotonic()
                if quiet:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if live is None:  # too slow: the client reconnects with Last-Event-ID
                    return
                if live["id"] > after and live["id"] not in replayed and _matches(live, filters):
                    yield _message(live)
        finally:
            feed.unsubscribe(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)


async def _replay(filters: readmodel.EventFilters, after: int, workspace_id: int) -> AsyncIterator[dict[str, Any]]:
    """Every matching event of the workspace after `after`, oldest first, page by page."""
    cursor: str | None = readmodel.encode_cursor([after])
    while cursor is not None:
        page = await anyio.to_thread.run_sync(_page, filters, cursor, workspace_id)
        for event in page.items:
            yield event
        cursor = page.next_cursor


def _page(filters: readmodel.EventFilters, cursor: str, workspace_id: int) -> readmodel.Page:
    with session_scope() as session:
        page = readmodel.events_page(
            session, filters, order="asc", cursor=cursor, limit=readmodel.MAX_PAGE, workspace_id=workspace_id
        )
        return readmodel.Page([event_json(e) for e in page.items], page.next_cursor)
