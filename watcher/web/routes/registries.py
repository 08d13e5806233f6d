"""`/api/v1/registries`: registries with their status, their repositories, tags and poll history — those of
the workspace the request acts in (`watcher.web.deps.authorize`); another workspace's registry is a 404 with
the body of one that does not exist."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query

from watcher.read import model as readmodel
from watcher.web import schemas
from watcher.web.deps import Caller, DbSession
from watcher.web.errors import ApiError

router = APIRouter(prefix="/registries", tags=["registries"])
Limit = Annotated[int, Query(ge=1, le=readmodel.MAX_PAGE, description="rows per page")]
Cursor = Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the previous page")]
Search = Annotated[str | None, Query(max_length=255, description="case-insensitive substring")]
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]|(^|/)\.\.?(/|$)")


def checked_repository(repository: str) -> str:
    """A repository path from a URL: no control characters, no `.`/`..` segments."""
    if not repository or _UNSAFE_PATH.search(repository) or len(repository) > 255:
        raise ApiError(400, "bad_request", f"repository {repository[:80]!r} is not a valid repository path")
    return repository


@router.get("", response_model=schemas.Items[schemas.Registry])
def list_registries(session: DbSession, caller: Caller) -> dict[str, Any]:
    return {"items": readmodel.registry_details(session, workspace_id=caller.workspace_id)}


@router.get("/{name}", response_model=schemas.Registry)
def get_registry(session: DbSession, caller: Caller, name: str) -> dict[str, Any]:
    return readmodel.registry_detail(session, name, workspace_id=caller.workspace_id)


@router.get("/{name}/polls", response_model=schemas.Page[schemas.Poll])
def list_polls(
    session: DbSession, caller: Caller, name: str, cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    page = readmodel.polls_page(session, name, cursor=cursor, limit=limit, workspace_id=caller.workspace_id)
    return {"items": [readmodel.poll_json(run) for run in page.items], "next_cursor": page.next_cursor}


@router.get("/{name}/repositories", response_model=schemas.Page[schemas.Repository])
def list_repositories(
    session: DbSession, caller: Caller, name: str, q: Search = None, cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    page = readmodel.repositories_page(session, name, q=q, cursor=cursor, limit=limit, workspace_id=caller.workspace_id)
    return {"items": [r.as_json() for r in page.items], "next_cursor": page.next_cursor}


@router.get("/{name}/repositories/{repository:path}/tags", response_model=schemas.Page[schemas.Tag])
def list_tags(
    session: DbSession,
    caller: Caller,
    name: str,
    repository: str,
    q: Search = None,
    order: readmodel.ImageOrder = "name",
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """The repository's tags by name, newest push first (`pushed_at`), or newest build first (`created`: the
    creation time, or the push time where the image says none, then the push time)."""
    page = readmodel.images_page(
        session,
        name,
        checked_repository(repository),
        q=q,
        order=order,
        cursor=cursor,
        limit=limit,
        workspace_id=caller.workspace_id,
    )
    fields = ("tag", "digest", "pushed_at", "image", "reference", "created", "platforms", "size", "annotations")
    return {
        "items": [{k: v for k, v in image.as_json().items() if k in fields} for image in page.items],
        "next_cursor": page.next_cursor,
    }
