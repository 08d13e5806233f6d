"""The FastAPI app: routers, the one error shape, the body limit and the live feed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
from fastapi import APIRouter, Depends, FastAPI

from watcher import bus
from watcher.hooks import stats as hookstats
from watcher.runtime import heap
from watcher.web import errors, metrics
from watcher.web.console import policies as console_policies
from watcher.web.console import routes as console
from watcher.web.deps import authorize
from watcher.web.feed import EventFeed
from watcher.web.hosts import AllowedHosts, HostCheck
from watcher.web.limits import BodyLimit
from watcher.web.plaintext import RefuseNul
from watcher.web.routes import events, health, hooks, policies, registration, registries, subscriptions, workspaces
from watcher.web.schemas import ERRORS

API_PREFIX = "/api/v1"


def create_app(listen: str | None = None) -> FastAPI:
    """The app; `listen` is where it is served when that is not `WATCHER_LISTEN` (its host is allowed)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.feed = EventFeed()
        # what the server imported is never scanned by the collector again: a scrape of a big fleet allocates
        # enough to set off full collections, which walked the whole app (a third of its CPU; `watcher.runtime.heap`)
        heap.settle()
        try:
            yield
        finally:
            await app.state.feed.aclose()
            await bus.aclose()
            await anyio.to_thread.run_sync(_flush_webhook_counts)

    app = FastAPI(
        title="watcher",
        version=version("watcher"),
        description="Container images the watcher knows, its registries' health, and their change history.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize)], responses=ERRORS)
    api.include_router(registries.router)
    api.include_router(registration.router)
    api.include_router(events.router)
    api.include_router(policies.router)
    api.include_router(workspaces.router)  # an operator's
    api.include_router(subscriptions.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(policies.public)  # the `selected` event's schema, at its `schemaUri`: no token
    app.include_router(hooks.router)  # authenticated by each registry's webhook secret, not by API tokens
    app.include_router(metrics.router)
    console.install(app)
    app.include_router(console_policies.router)
    app.add_middleware(BodyLimit)
    app.add_middleware(RefuseNul)
    app.add_middleware(HostCheck, allowed=AllowedHosts.from_settings(listen=listen))  # outermost: first
    return app


def _flush_webhook_counts() -> None:
    """The webhook counts still in memory are written before the server stops (`watcher.hooks.stats`)."""
    try:
        hookstats.flush()
    except Exception as exc:
        logging.getLogger("watcher").warning(
            "webhook counts lost at shutdown: %s", (str(exc) or type(exc).__name__).splitlines()[0]
        )
