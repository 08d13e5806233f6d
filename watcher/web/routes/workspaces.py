"""`/api/v1/workspaces`: the deployment's workspaces, their quotas and what each holds — an operator's.

A reader's or an admin's token gets 403 on every one of these routes, whatever workspace it names, before
anything is looked up: the routes are the deployment's, the answer is the same for a workspace that exists
and one that does not, so a 403 confirms nothing about another team (a 404 would suggest the workspace is
missing when it is the role that is). Tokens are not managed over HTTP at all: `watcher token create` is the
deployment's own command, so no workspace's token can make tokens, for its workspace or another.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from watcher.errors import InputError
from watcher.registrations import workspaces
from watcher.web import schemas
from watcher.web.deps import DbSession, Principal, authorize
from watcher.web.errors import ApiError
from watcher.web.routes.registration import json_object


class Quotas(BaseModel):
    max_registries: int | None
    min_interval: str | None
    max_concurrent_polls: int | None


class Usage(BaseModel):
    registries: int
    tokens: int


class Workspace(BaseModel):
    """`workspace show --json`: its quotas (`null`: no limit) and what it holds (active tokens)."""

    name: str
    created_at: str | None
    quotas: Quotas
    usage: Usage


_QUOTAS: dict[str, Any] = {
    "max_registries": {"type": ["integer", "null"], "minimum": 0, "description": "null: no limit"},
    "min_interval": {
        "type": ["string", "integer", "null"],
        "description": "the shortest interval a registration may set, e.g. 5m (seconds as an integer); null: no limit",
    },
    "max_concurrent_polls": {"type": ["integer", "null"], "minimum": 1, "description": "null: no limit"},
}
CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, **_QUOTAS},
                    "required": ["name"],
                    "additionalProperties": False,
                }
            }
        },
    }
}
PATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": _QUOTAS, "additionalProperties": False},
            }
        },
    }
}


def operator(caller: Annotated[Principal, Depends(authorize)]) -> Principal:
    """The caller, if an operator; 403 for anyone else."""
    if not caller.operator:
        raise ApiError(
            403,
            "forbidden",
            f"token {caller.name!r} is a{'n' if caller.role == 'admin' else ''} {caller.role}: workspaces are the "
            "deployment's, managed with an operator token",
        )
    return caller


router = APIRouter(prefix="/workspaces", tags=["workspaces"], dependencies=[Depends(operator)])
Force = Annotated[bool, Query(description="delete it with its registries, their snapshots and events")]


@router.get("", response_model=schemas.Items[Workspace])
def list_workspaces(session: DbSession) -> dict[str, Any]:
    """Every workspace, by name, with its quotas and usage."""
    return {"items": [w.as_json() for w in workspaces.described(session)]}


@router.post("", status_code=201, response_model=Workspace, openapi_extra=CREATE_BODY)
async def create_workspace(request: Request, session: DbSession) -> dict[str, Any]:
    """Create a workspace, with the quotas given: 409 if the name exists."""
    body = await json_object(request, "a workspace: its name and quotas")
    name = workspaces.check_name(body.pop("name", None))
    workspaces.create(session, name, workspaces.parse_quotas(body))
    return workspaces.describe(session, name).as_json()


@router.get("/{workspace}", response_model=Workspace)
def get_workspace(session: DbSession, workspace: str) -> dict[str, Any]:
    return workspaces.describe(session, workspace).as_json()


@router.patch("/{workspace}", response_model=Workspace, openapi_extra=PATCH_BODY)
async def update_workspace(request: Request, session: DbSession, workspace: str) -> dict[str, Any]:
    """Change the quotas given (`null` clears one: no limit); the others stay."""
    body = await json_object(request, "the quotas to change")
    if body.pop("name", workspace) != workspace:
        raise InputError("a workspace's name cannot be changed", field="name")
    workspaces.set_quotas(session, workspace, workspaces.parse_quotas(body))
    return workspaces.describe(session, workspace).as_json()


@router.delete("/{workspace}", status_code=204, response_class=Response)
def delete_workspace(session: DbSession, workspace: str, force: Force = False) -> Response:
    """Delete a workspace and its tokens: 409 while it owns registries (unless `force=true`), 422 for
    `default`."""
    workspaces.delete_workspace(session, workspace, force=force)
    return Response(status_code=204)
