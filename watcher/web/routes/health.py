"""`/healthz` (the process answers) and `/readyz` (database, schema and Redis answer): no token needed."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
async def readyz() -> JSONResponse:
    checks = await anyio.to_thread.run_sync(_checks)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


def _checks() -> dict[str, Any]:
    from watcher import bus

    checks: dict[str, Any] = {}
    try:
        checks["database"] = "ok" if schema_is_current() else "schema is not current: run any watcher command"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        bus.connect().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    return checks


def schema_is_current() -> bool:
    """The database answers and its Alembic revision is the newest this code knows."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from watcher.db import MIGRATIONS, alembic_config, get_engine
    from watcher.settings import get_settings

    engine = get_engine()
    head = ScriptDirectory.from_config(alembic_config(get_settings().effective_database_url)).get_current_head()
    with engine.connect() as conn:
        return bool(conn.scalar(text("SELECT version_num FROM alembic_version")) == head) and MIGRATIONS.exists()
