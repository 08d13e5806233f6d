"""Every failure the API answers is one object, `{"error": {"code", "message", "field"}}`, with the status
the contract gives it: never a stack trace, never a secret."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from watcher import errors

log = logging.getLogger("watcher.web")


class ApiError(Exception):
    """An answer other than success, raised anywhere below a route."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def respond(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(body(code, message, field), status_code=status)


async def send_error(send: Send, status: int, code: str, message: str, field: str | None = None) -> None:
    """The error shape from an ASGI middleware, which answers before any route (or handler) is reached."""
    content = json.dumps(body(code, message, field)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def status_of(exc: errors.WatcherError) -> tuple[int, str]:
    """The HTTP status and error code for one of watcher's own errors."""
    if isinstance(exc, errors.NotFoundError):
        return 404, "not_found"
    if isinstance(exc, errors.QuotaError):
        return 422, "quota_exceeded"
    if isinstance(exc, errors.ConflictError):
        return 409, "conflict"
    if isinstance(exc, errors.InputError):
        return 422, "invalid"
    if isinstance(exc, errors.RegistryError):
        return 502, exc.cause.replace(" ", "_").lower()
    if isinstance(exc, errors.StateError):
        return 503, "unavailable"
    return 400, "bad_request"


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(where) or None
    message = str(error.get("msg", "is not valid"))
    if error.get("type") == "json_invalid":
        return "the body is not valid JSON", None
    if error.get("type") == "extra_forbidden":
        return f"unknown field {field!r}", field
    return (f"{field}: {message}" if field else message), field


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        response = respond(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(errors.WatcherError)
    async def _watcher_error(_: Request, exc: errors.WatcherError) -> JSONResponse:
        status, code = status_of(exc)
        return respond(status, code, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        message, field = _validation_message(dict(first))
        status = 400 if first.get("type") == "json_invalid" else 422
        return respond(status, "malformed" if status == 400 else "invalid", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no route {request.method} {request.url.path}: see /docs"
        response = respond(exc.status_code, codes.get(exc.status_code, "error"), message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return respond(500, "internal", "internal error: see the server's log")
