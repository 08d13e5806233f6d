"""`POST /hooks/v1/{registry}` (workspace `default`) and `POST /hooks/v1/workspaces/{workspace}/{registry}`:
a registry's notification, authenticated by its webhook secret (not by the API's tokens), answered at once;
the repositories it names are listed by a Celery task.

No one can probe which receivers exist. An unknown workspace or registry, a receiver turned off, and a
missing or wrong secret all get the one 401 (`UNAUTHORIZED`: the same status, body and headers), at about
the same cost: a URL with no receiver is checked against a stand-in of the format the request looks like
(`_stand_in`: its secret is random and never issued) by the same constant-time comparison; that a URL has no
receiver is kept for RECEIVER_SECONDS like a receiver is, so neither costs a database read per
notification; and a refused notification carrying a body signature always has its body read and the
signature computed before the 401 (one without is refused before its body is read), whatever the format.

The secret is checked, in constant time, before the body is read (a body signature right after it is
read; a `gcr-pubsub` push's Google OIDC token, `watcher.hooks.googleoidc`, before it, in a worker thread); the
body is at most 1 MB (the app's `BodyLimit`). Every well-formed, authenticated notification gets 202, even
one that changes nothing: Distribution retries a refused notification forever and holds every later one
behind it. Each outcome is counted in `watcher_webhooks_total`; neither the secret nor the Authorization
header is ever logged.

What a notification queues is decided in one Redis round trip (`watcher.polling.queue.ahint`, on the event loop's
asyncio client): a repository already queued is not queued again, a burst's polls are coalesced per
repository, and a notification naming more than `queue.MAX_REPOSITORIES` repositories (or the registry's
repositories hinted within a second passing that) queues one registry-wide poll instead. Counts are kept in
memory and written about once a second (`watcher.hooks.stats`).

A burst's notifications cost no database read and no worker thread: a registry's receiver, once read, is
used for RECEIVER_SECONDS. So a secret rotated, a receiver turned off or a registry removed by another
process (the CLI) is refused at most RECEIVER_SECONDS after its commit; a change committed in this process
(the API, the console) applies to the next notification.
"""

from __future__ import annotations

import enum
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NoReturn

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from watcher.db import get_engine, session_scope
from watcher.errors import InputError, NotFoundError
from watcher.hooks import googleoidc
from watcher.hooks import receivers as webhooks
from watcher.hooks import stats as hookstats
from watcher.hooks.format import Auth, Malformed, Notification
from watcher.hooks.formats import FORMATS
from watcher.hooks.gcr_pubsub import push_account
from watcher.models import Registry
from watcher.polling import queue
from watcher.registrations.keys import registry_key
from watcher.registrations.scope import Scope
from watcher.registrations.store import find, spec_of
from watcher.web.errors import ApiError

router = APIRouter(tags=["webhooks"])
METRIC = hookstats.METRIC
log = logging.getLogger("watcher")


@dataclass(frozen=True, repr=False)
class Receiver:
    registry_id: int
    #: the registry's key (`watcher.registrations.keys`), which its polls are queued and counted by
    key: str
    name: str
    format: str
    url: str
    secret: str
    scope: Scope
    options: dict[str, Any] = field(default_factory=dict)
    #: what a `gcr-pubsub` push's Google token must say (None for other formats)
    expected: googleoidc.Expected | None = None


@router.post("/hooks/v1/{registry}", status_code=202, responses={401: {}, 400: {}, 413: {}})
async def receive(registry: str, request: Request) -> JSONResponse:
    """A registry of workspace `default`, whose format sends its secret in a header (or signs its body, or a
    Google token)."""
    return await _receive(registry, None, request)


@router.post("/hooks/v1/{registry}/{secret}", status_code=202, responses={401: {}, 400: {}, 413: {}})
async def receive_with_path_secret(registry: str, secret: str, request: Request) -> JSONResponse:
    """A registry of workspace `default` whose sender cannot send a header (Docker Hub, Quay): the secret is
    the path's last segment. (Two segments: a registry of `default` named `workspaces` keeps this URL.)"""
    return await _receive(registry, secret, request)


@router.post("/hooks/v1/workspaces/{workspace}/{registry}", status_code=202, responses={401: {}, 400: {}, 413: {}})
async def receive_in_workspace(workspace: str, registry: str, request: Request) -> JSONResponse:
    """A registry of `workspace` (`default` too), whose format sends its secret in a header (or signs, or a
    Google token)."""
    return await _receive(registry_key(workspace, registry), None, request)


@router.post(
    "/hooks/v1/workspaces/{workspace}/{registry}/{secret}", status_code=202, responses={401: {}, 400: {}, 413: {}}
)
async def receive_in_workspace_with_path_secret(
    workspace: str, registry: str, secret: str, request: Request
) -> JSONResponse:
    """A registry of `workspace` whose sender cannot send a header: the secret is the path's last segment."""
    return await _receive(registry_key(workspace, registry), secret, request)


async def _receive(key: str, path_secret: str | None, request: Request) -> JSONResponse:
    receiver = _recent_receiver(key)
    if receiver is _UNREAD:
        receiver = await anyio.to_thread.run_sync(_receiver, key)
    if receiver is None:
        receiver = _stand_in(path_secret, request)
    hook_format = FORMATS[receiver.format]
    signature = request.headers.get("x-hub-signature-256")
    if hook_format.auth is Auth.OIDC:
        authorization = request.headers.get("authorization")
        if path_secret is not None or not await anyio.to_thread.run_sync(_google_signed, receiver, authorization):
            await _refuse(receiver, request)
    elif hook_format.auth is Auth.HMAC:
        if path_secret is not None or signature is None:
            await _refuse(receiver, request)
    elif not _authentic(hook_format.auth, receiver, path_secret, request):
        await _refuse(receiver, request)
    body = await request.body()
    if hook_format.auth is Auth.HMAC and not webhooks.signed(signature, body, receiver.secret):
        await _refuse(receiver, request, signature_checked=True)
    if receiver.registry_id == STAND_IN_ID:  # its secret was never issued: never reached, never accepted
        await _refuse(receiver, request, signature_checked=True)
    try:
        notification = Notification(body, request.headers.get("content-type"), receiver.url, receiver.options)
        repositories = hook_format.repositories(notification)
        pushed = hook_format.pushed(notification) if hook_format.pushed else {}
    except Malformed as exc:
        _record(receiver, "malformed")
        raise ApiError(400, "malformed", f"registry {receiver.name!r}: {exc}") from None
    wanted = [name for name in repositories if receiver.scope.wants_repository(name)]
    outcome = "accepted" if wanted else "ignored"
    expected = {name: pushed[name] for name in wanted if name in pushed}
    hinted = await queue.ahint(receiver.key, wanted, expected)
    _record(receiver, outcome)
    return respond_accepted(outcome, wanted, hinted.queued)


def _authentic(auth: Auth, receiver: Receiver, path_secret: str | None, request: Request) -> bool:
    """Whether the request carries the secret the way its format sends it (checked before the body is read)."""
    if auth is Auth.PATH:
        return path_secret is not None and hmac.compare_digest(path_secret.encode(), receiver.secret.encode())
    if path_secret is not None:  # a secret in the path of a format that sends it otherwise: not this format
        return False
    if auth is Auth.HEADER:
        return webhooks.authorized(request.headers.get("authorization"), receiver.secret)
    return False  # HMAC is checked once the body is read, OIDC by `_google_signed`


def _google_signed(receiver: Receiver, authorization: str | None) -> bool:
    """Whether the Pub/Sub push carries a Google-signed token for the registry's push account and URL (in a
    worker thread: the first request of a process fetches Google's certificates)."""
    if receiver.expected is None:
        return False
    try:
        googleoidc.verify(authorization, receiver.expected)
    except googleoidc.CertsUnavailable as exc:
        log.warning("registry %r: a Pub/Sub push could not be verified: %s", receiver.key, exc)
        return False
    except googleoidc.Refused as exc:
        log.info("registry %r: a Pub/Sub push was refused: %s", receiver.key, exc)
        return False
    return True


async def _refuse(receiver: Receiver, request: Request, signature_checked: bool = False) -> NoReturn:
    """The one 401 of every refusal. A notification carrying a body signature is refused only once its
    body is read and the signature computed, as a signing format's receiver refuses it: an unknown
    receiver and one of another format cost the same as a github or cloudevents one."""
    signature = request.headers.get("x-hub-signature-256")
    if signature is not None and not signature_checked:
        webhooks.signed(signature, await request.body(), receiver.secret)
    _record(receiver, "unauthorized")
    raise ApiError(401, "unauthorized", UNAUTHORIZED)


def respond_accepted(outcome: str, repositories: list[str], queued: int) -> JSONResponse:
    return JSONResponse({"outcome": outcome, "repositories": repositories, "queued": queued}, status_code=202)


def _recent_receiver(key: str) -> Receiver | _Unread | None:
    """The receiver of the registry `key` (None: there is none, or it is off) if it was read from this
    installation's database less than RECEIVER_SECONDS ago and nothing changed a registry in this process
    since; else `_UNREAD`."""
    entry = _recent.get(key)
    if entry is None or entry[0] <= time.monotonic() or entry[1] is not get_engine():
        return _UNREAD
    return entry[2]


def _receiver(key: str) -> Receiver | None:
    """The receiver of the registry `key`, read now; None when there is no such workspace or registry, or
    its receiver is off.

    One query; what is costly to build from the row (the decrypted secret, the compiled scope, the push
    account) is kept while the row's receiver columns stay the same. The answer, a receiver or none, is
    then used for RECEIVER_SECONDS without reading it again (`_recent_receiver`)."""
    engine, generation, read_at = get_engine(), _generation, time.monotonic()
    receiver: Receiver | None = None
    with session_scope(engine) as session:
        try:
            row: Registry | None = find(session, key)
        except NotFoundError:
            row = None
        if row is not None and row.webhook_enabled and row.webhook_secret:
            columns = tuple(getattr(row, column.key) for column in RECEIVER_COLUMNS)
            cached = _built.get(key)
            if cached is not None and cached[0] == columns:
                receiver = cached[1]
            else:
                receiver = _build(row)
                if len(_built) >= MAX_BUILT:
                    _built.clear()
                _built[key] = (columns, receiver)
    if generation == _generation:  # else a registry changed while this was read: read it again next time
        if len(_recent) >= MAX_BUILT:
            _recent.clear()
        _recent[key] = (read_at + RECEIVER_SECONDS, engine, receiver)
    return receiver


def _stand_in(path_secret: str | None, request: Request) -> Receiver:
    """What a notification for no receiver is checked against: a receiver of the format its request looks
    like (a secret in the path, a body signature, else a header), with a secret never issued."""
    if path_secret is not None:
        return _STAND_INS[Auth.PATH]
    if "x-hub-signature-256" in request.headers:
        return _STAND_INS[Auth.HMAC]
    return _STAND_INS[Auth.HEADER]


def forget_receivers() -> None:
    """Read every receiver again from its next notification on (a registry changed in this process)."""
    global _generation
    _generation += 1
    _recent.clear()


@event.listens_for(Session, "after_flush")
def _note_registry_change(session: Session, _context: object) -> None:
    if any(isinstance(row, Registry) for row in chain(session.new, session.dirty, session.deleted)):
        session.info[_REGISTRY_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_on_commit(session: Session) -> None:
    if session.info.pop(_REGISTRY_CHANGED, False):
        forget_receivers()


#: the columns a receiver is built from; it is built again when any of them changed
RECEIVER_COLUMNS = (
    Registry.id,
    Registry.workspace_id,
    Registry.webhook_secret,
    Registry.webhook_format,
    Registry.url,
    Registry.options,
    Registry.credentials,
)
#: receivers built, by registry key (only registries that exist with their receiver on)
_built: dict[str, tuple[tuple[Any, ...], Receiver]] = {}
MAX_BUILT = 10_000
#: how long a receiver read from the database is used without reading it again: the longest a change
#: committed by another process (a rotated secret, a receiver turned off, a registry removed) takes to apply
RECEIVER_SECONDS = 1.0
#: receivers read lately, by registry key: (monotonic time they lapse, the database's engine, the receiver
#: or None when there is none)
_recent: dict[str, tuple[float, Engine, Receiver | None]] = {}
#: moves on whenever a registry changes in this process (a read that began before is not kept)
_generation = 0
_REGISTRY_CHANGED = "watcher.registry_changed"


def _build(row: Registry) -> Receiver:
    hook_format = row.webhook_format or "distribution"
    return Receiver(
        row.id,
        row.key,
        row.name,
        hook_format,
        row.url,
        webhooks.secret_of(row),
        Scope.from_options(row.options or {}),
        dict(row.options or {}),
        _expected(row) if FORMATS[hook_format].auth is Auth.OIDC else None,
    )


def _expected(row: Registry) -> googleoidc.Expected | None:
    """The audience (the receiver's URL) and push account (the registry key's `client_email`) a Google token
    must name; None when the registry has no such account (every push is then refused)."""
    try:
        return googleoidc.Expected(webhooks.url_of(row.key), push_account(spec_of(row)))
    except InputError:
        return None


def _record(receiver: Receiver, outcome: str) -> None:
    """Count the outcome by the registry's key; an authenticated notification also sets the registry's
    `last_webhook_at` (both written about once a second: `watcher.hooks.stats`). A stand-in counts nothing."""
    if receiver.registry_id == STAND_IN_ID:
        return
    seen = outcome != "unauthorized"
    hookstats.record(hookstats.Outcome(receiver.registry_id, receiver.key, receiver.format, outcome, seen))


class _Unread(enum.Enum):
    UNREAD = enum.auto()


#: `_recent_receiver`'s answer when the receiver must be read
_UNREAD = _Unread.UNREAD
#: the one refusal (unknown workspace, registry or receiver, or a missing or wrong secret alike)
UNAUTHORIZED = "the notification's secret is missing or wrong, or this URL has no webhook receiver"
STAND_IN_ID = 0  # no registry's id
_STAND_IN_SECRET = secrets.token_urlsafe(webhooks.SECRET_BYTES)  # never issued, never shown
_STAND_INS = {
    auth: Receiver(STAND_IN_ID, "", "", format, "", _STAND_IN_SECRET, Scope.from_options({}))
    for auth, format in ((Auth.HEADER, "distribution"), (Auth.PATH, "dockerhub"), (Auth.HMAC, "github"))
}
