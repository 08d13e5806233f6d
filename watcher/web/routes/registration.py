"""Registering and changing registries over HTTP: the body is one entry of the `registry apply` YAML as JSON,
checked by the same code with the same one-line errors; nothing is saved before the registry answered.

Every route acts in the workspace of the request (`watcher.web.deps.authorize`: its token's, or the one an
operator names): a registry of another workspace is a 404 exactly like one that does not exist, and what is
registered belongs to that workspace, within its quotas.

A remote request only gives literal values: no `${VAR}` is expanded and no `@PATH` is read, so a
registration can never make the watcher read its own environment or files into a credential.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response

from watcher.db import session_scope
from watcher.errors import InputError
from watcher.polling.queue import queue_poll
from watcher.read import model as readmodel
from watcher.registrations import store as registries
from watcher.registrations import vault, workspaces
from watcher.registrations.applyfile import RegistryEntry, typed_entry
from watcher.registrations.forms import build_spec, values_of
from watcher.registrations.keys import registry_key
from watcher.registrations.registration import admissible, register, verify
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE
from watcher.web import schemas
from watcher.web.deps import Caller, Principal
from watcher.web.errors import ApiError

router = APIRouter(prefix="/registries", tags=["registries"])

TestFirst = Annotated[bool, Query(alias="verify", description="test the connection before saving (default true)")]
ENTRY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": RegistryEntry.model_json_schema()}},
    }
}
PATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {**RegistryEntry.model_json_schema(), "required": []},
            }
        },
    }
}


async def json_object(request: Request, what: str = "one entry of `registry apply`") -> dict[str, Any]:
    """The request's body as a JSON object, or the one error that says what is wrong with it."""
    try:
        body = json.loads(await request.body(), parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid", f"the body must be a JSON object: {what}")
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # Python's parser accepts NaN and Infinity; JSON does not


def spec_from(values: dict[str, Any], workspace: str = DEFAULT_WORKSPACE) -> RegistrySpec:
    """Values from a request as a validated spec of `workspace`: typed as `registry apply` types them,
    literal values only."""
    return build_spec(typed_entry(values, expand=False), source="remote", workspace=workspace)


def _workspace(caller: Principal) -> str:
    with session_scope() as session:
        return workspaces.name_of(session, caller.workspace_id)


def _key(caller: Principal, name: str) -> str:
    """The key of the registry `name` in the caller's workspace (`watcher.registrations.keys`)."""
    return registry_key(_workspace(caller), name)


def _described(name: str, workspace_id: int) -> dict[str, Any]:
    with session_scope() as session:
        return readmodel.registry_detail(session, name, workspace_id=workspace_id)


@router.post("", status_code=201, response_model=schemas.Registry, openapi_extra=ENTRY_BODY)
async def create_registry(request: Request, caller: Caller, test_first: TestFirst = True) -> dict[str, Any]:
    """Register a registry in the workspace: tested first (unless `verify=false`); 409 if the name exists
    there, 422 `quota_exceeded` when the workspace's quota refuses it."""
    values = await json_object(request)
    spec = spec_from(values, await anyio.to_thread.run_sync(_workspace, caller))
    await anyio.to_thread.run_sync(lambda: register(spec, verify_first=test_first))
    return await anyio.to_thread.run_sync(_described, spec.name, caller.workspace_id)


@router.post("/validate", response_model=schemas.Ok, openapi_extra=ENTRY_BODY)
async def validate_registry(request: Request) -> dict[str, bool]:
    """Check the body and test the connection; nothing is saved."""
    spec = spec_from(await json_object(request))
    await anyio.to_thread.run_sync(verify, spec)
    return {"ok": True}


@router.patch("/{name}", response_model=schemas.Registry, openapi_extra=PATCH_BODY)
async def update_registry(request: Request, caller: Caller, name: str, test_first: TestFirst = True) -> dict[str, Any]:
    """Change the fields given; a secret left out stays as it is (`null` removes a setting). A changed
    interval under the workspace's `min_interval` is 422 `quota_exceeded`."""
    changes = await json_object(request)
    if changes.get("name", name) != name:
        raise InputError("a registry's name cannot be changed: register it anew under the new name", field="name")
    spec = await anyio.to_thread.run_sync(_patched, caller, name, changes)
    await anyio.to_thread.run_sync(admissible, [spec])  # before the registry is contacted
    if test_first:
        await anyio.to_thread.run_sync(verify, spec)
    await anyio.to_thread.run_sync(_save, spec)
    return await anyio.to_thread.run_sync(_described, name, caller.workspace_id)


def _patched(caller: Principal, name: str, changes: dict[str, Any]) -> RegistrySpec:
    workspace = _workspace(caller)
    with session_scope() as session:
        row = registries.find(session, registry_key(workspace, name))
        try:
            current = registries.spec_of(row)
        except vault.Undecryptable:  # its credentials must come with the change
            current = RegistrySpec(row.name, row.provider, row.url, {}, dict(row.options or {}), row.interval_seconds)
    given = {str(key).replace("-", "_"): value for key, value in changes.items()}
    merged = {**values_of(current), **given}
    return spec_from({key: value for key, value in merged.items() if value is not None}, workspace)


def _save(spec: RegistrySpec) -> None:
    with session_scope() as session:
        registries.save(session, spec)


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_registry(caller: Caller, name: str) -> Response:
    """Forget a registry and its snapshot; its event history stays."""
    key = _key(caller, name)
    with session_scope() as session:
        registries.remove(session, key)
    return Response(status_code=204)


@router.post("/{name}/test", response_model=schemas.Ok)
def test_registry(caller: Caller, name: str) -> dict[str, bool]:
    """Test the stored registry now: 200, or 502 with the registry's one-line refusal."""
    key = _key(caller, name)
    with session_scope() as session:
        spec = registries.spec_of(registries.find(session, key))
    verify(spec)
    return {"ok": True}


@router.post("/{name}/poll", status_code=202, response_model=schemas.Queued)
def poll_registry(caller: Caller, name: str) -> dict[str, str]:
    """Queue a poll now, as beat's tick does."""
    return {"poll_id": queue_poll(_key(caller, name))}
