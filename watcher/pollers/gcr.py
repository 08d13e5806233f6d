"""`--provider gcr`: Google Container Registry (`gcr.io`, `eu.gcr.io`, …) and Artifact Registry
(`REGION-docker.pkg.dev`).

Credentials: a service-account JSON key. google-auth signs a JWT with it and trades it at the key's
`token_uri` for an OAuth access token, which is the password of user `oauth2accesstoken` at the registry's
token realm (the ordinary OCI token flow). The access token is minted again shortly before it expires, and
once more when the registry answers 401; a failure after that is an AuthError, never a loop.

Repositories belong to a project: `PROJECT/IMAGE` on GCR, `PROJECT/REPO/IMAGE` on Artifact Registry. GCR's
catalog lists every project the key can see, so discovery keeps only `PROJECT/…`; `--repository` globs are
matched against that same full path, project included, exactly as it appears in events. GCR's tag list
carries a `manifest` map (digest → tags, upload time): one request per repository gives digests and push
times; tags the map does not cover are resolved by HEAD, as on any OCI registry. Each entry of the map also
says its image's build time (`timeCreatedMs`; "0" is unknown), size (`imageSizeBytes`) and kind
(`mediaType`): the listing keeps them as sent (`Heard`, bounded) and `said` checks them, at no request.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeGuard
from urllib.parse import urlsplit

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from watcher import errors
from watcher.diff import TagState
from watcher.errors import InputError
from watcher.pollers.base import TagFilter, gather_all
from watcher.pollers.oci import OciPoller
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.auth import CredentialSource
from watcher.registry.entries import check_entries
from watcher.registry.oci import entry_list
from watcher.registry.policedsession import policed_session
from watcher.registry.reference import is_tag, shown
from watcher.registry.said import Heard, SaidImage, said_image, said_kind, said_millis, said_size

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REGISTRY_USER = "oauth2accesstoken"
#: mint a new access token this long before the current one expires (or at half its life, if shorter)
REFRESH_MARGIN_SECONDS = 300.0
#: a token younger than this is as fresh as a new one: a 401 does not mint another (bounds a burst of 401s)
FORCED_REFRESH_MIN_AGE_SECONDS = 5.0
REQUIRED_KEY_FIELDS = ("client_email", "private_key", "token_uri")
# project ids: lowercase letters, digits, hyphens; legacy domain-scoped ones look like `example.com:proj`
_PROJECT_ID = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z0-9][a-z0-9-]*[a-z0-9]$")
_GLOB_CHARS = "*?["
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class GcrPoller(OciPoller):
    provider: ClassVar[str] = "gcr"
    credential_fields: ClassVar[tuple[str, ...]] = ("json_key",)
    secret_fields: ClassVar[frozenset[str]] = frozenset({"json_key"})
    option_fields: ClassVar[tuple[str, ...]] = ("project_id",)
    default_url: ClassVar[str] = "https://gcr.io"
    google: GoogleToken

    def __init__(self, spec: RegistrySpec) -> None:
        self.prefix = project_prefix(str(spec.options.get("project_id", "")))
        self._foreign_repositories: list[str] = []
        #: what the listing's `manifest` maps said of each digest, as sent: (mediaType, imageSizeBytes,
        #: timeCreatedMs)
        self.heard: Heard[tuple[object, object, object]] = Heard()
        super().__init__(spec)

    # -- validation -------------------------------------------------------------------------------
    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        super().validate(spec)
        project = str(spec.options.get("project_id") or "")
        if not project or not spec.credentials.get("json_key"):
            missing = "--project-id" if not project else "--json-key"
            raise InputError(
                f"registry {spec.name!r}: {missing} is missing (provider gcr needs --project-id and --json-key)"
            )
        if not _PROJECT_ID.match(project):
            raise InputError(
                f"registry {spec.name!r}: --project-id {project!r} is not a Google Cloud project id "
                "(e.g. my-project-123)"
            )
        load_credentials(spec.name, service_account_info(spec.name, spec.credentials["json_key"]))
        for pattern in spec.options.get("repositories") or ():
            check_in_project(spec.name, str(pattern), project)

    # -- credentials ------------------------------------------------------------------------------
    def credential_source(self) -> CredentialSource:
        """One GoogleToken per poller, however often this is asked (its token is shared by every request)."""
        if getattr(self, "google", None) is None:
            info = service_account_info(self.spec.name, self.spec.credentials.get("json_key", ""))
            credentials = load_credentials(self.spec.name, info)
            self.google = GoogleToken(credentials, info["token_uri"], timeout=self.limits.timeout_seconds)
        return self.google

    # -- listing ----------------------------------------------------------------------------------
    async def verify(self) -> None:
        await self.google.ensure_fresh()
        await self.client.ping()
        repos = await self.discover(Scope.from_options(self.spec.options))
        if not repos and self._foreign_repositories:
            raise errors.ScopeError(self._wrong_project_message())
        if repos:
            await self.tags(repos[0], lambda _tag: False)

    async def prepare(self) -> None:
        await self.google.ensure_fresh()

    async def repositories(self) -> list[str]:
        """The project's repositories: GCR's catalog also lists every other project the key can see."""
        everything = self.valid_repositories(await self.client.catalog())
        self._foreign_repositories = [r for r in everything if not r.startswith(self.prefix)]
        return [r for r in everything if r.startswith(self.prefix)]

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        pages = await self.client.tag_pages(repository)
        if pages is None:
            return None
        names, known = read_tag_pages(pages, repository, lambda tag: self.valid_tag(repository, tag))
        kept = [t for t in names if wanted(t)]
        result = {
            t: TagState(self.valid_digest(repository, t, known[t].digest), known[t].pushed_at)
            for t in kept
            if t in known
        }
        self.heard.add(repository, heard_in(pages, {state.digest for state in result.values()}))
        missing = [t for t in kept if t not in known]  # not in the `manifest` map (or no map at all): HEAD
        digests = await gather_all([self.client.manifest_digest(repository, t) for t in missing])
        result.update(
            {
                t: TagState(self.valid_digest(repository, t, d))
                for t, d in zip(missing, digests, strict=True)
                if d is not None
            }
        )
        return result

    async def said(self, wanted: Mapping[str, str]) -> list[SaidImage]:
        """Kind, size and build time of the wanted digests, as the listing's `manifest` maps said them."""
        return self.heard.said(wanted, google_said)

    def forget(self, repositories: Iterable[str]) -> None:
        self.heard.forget(repositories)

    def _wrong_project_message(self) -> str:
        projects = sorted({r.split("/", 1)[0] for r in self._foreign_repositories})
        shown = ", ".join(projects[:3]) + (", …" if len(projects) > 3 else "")
        project = self.spec.options.get("project_id")
        return (
            f"project {project!r} has no repositories at {self.spec.url}; the key sees only other projects' "
            f"({shown}): check --project-id"
        )

    async def aclose(self) -> None:
        self.google.close()
        await super().aclose()


class GoogleToken:
    """CredentialSource: the service account's OAuth access token as the password of `oauth2accesstoken`.

    google-auth's HTTP is synchronous: `ensure_fresh` mints in a worker thread before a listing starts, so
    the event loop only blocks when a token runs out mid-listing or a 401 forces a new one.
    """

    def __init__(
        self,
        credentials: service_account.Credentials,
        token_uri: str,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self.token_uri = token_uri
        self.clock = clock
        self._session = policed_session()  # the key's token_uri is the registrant's to choose
        self._request = _TimedRequest(self._session, timeout)
        self._lock = threading.Lock()
        self._minted_at = -math.inf
        self._refresh_at = -math.inf

    def get(self) -> tuple[str, str] | None:
        with self._lock:
            if self.clock() >= self._refresh_at:
                self._mint()
            return (REGISTRY_USER, str(self.credentials.token))

    def refresh(self) -> None:
        """Called on a 401: mint anew, unless the token is only seconds old (then a new one changes nothing)."""
        with self._lock:
            if self.clock() - self._minted_at >= FORCED_REFRESH_MIN_AGE_SECONDS:
                self._mint()

    async def ensure_fresh(self) -> None:
        if self.clock() >= self._refresh_at:
            await asyncio.to_thread(self.get)

    def close(self) -> None:
        self._session.close()

    def _mint(self) -> None:
        try:
            self.credentials.refresh(self._request)
        except google.auth.exceptions.RefreshError as exc:
            raise refresh_error(exc, self.token_uri) from None
        except google.auth.exceptions.TransportError as exc:
            raise transport_error(exc, self.token_uri) from None
        except errors.RegistryError as exc:  # the network policy or the body cap stopped the request
            raise type(exc)(f"Google token endpoint {self.token_uri}: {exc.message}") from None
        now = self.clock()
        lifetime = _seconds_left(self.credentials.expiry)
        self._minted_at = now
        self._refresh_at = now + max(lifetime - REFRESH_MARGIN_SECONDS, lifetime / 2)


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout instead of its 120 s default."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__(session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(url, method, body, headers, timeout=timeout or self._timeout, **kwargs)


def _seconds_left(expiry: datetime | None) -> float:
    """Seconds until google-auth's (naive UTC) expiry; a token without one is treated as an hour's."""
    if expiry is None:
        return 3600.0
    return max(0.0, (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds())


# -- the key --------------------------------------------------------------------------------------
def service_account_info(name: str, text: str) -> dict[str, Any]:
    """The parsed key, checked field by field; errors name what is wrong and never echo the key."""
    where = f"registry {name!r}: --json-key"
    try:
        info = json.loads(text)
    except ValueError as exc:
        position = f"line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{where} is not JSON ({position}): pass the key file as --json-key @KEY.json") from None
    if not isinstance(info, dict):
        raise InputError(f"{where} is not a JSON object: pass the service-account key file as --json-key @KEY.json")
    kind = info.get("type")
    if kind != "service_account":
        what = f"a credential of type {kind!r}" if isinstance(kind, str) and kind else "a JSON file without a 'type'"
        raise InputError(f"{where} is {what}, not a service-account key (create one in IAM → Service accounts → Keys)")
    missing = [f for f in REQUIRED_KEY_FIELDS if not isinstance(info.get(f), str) or not info[f].strip()]
    if missing:
        raise InputError(f"{where}: the service-account key lacks {', '.join(missing)}")
    if urlsplit(info["token_uri"]).scheme not in ("http", "https"):
        raise InputError(f"{where}: the key's token_uri is not an http(s) URL")
    return info


def load_credentials(name: str, info: dict[str, Any]) -> service_account.Credentials:
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
    except Exception:  # the key's bytes must never reach a message, so no detail is passed on
        raise InputError(
            f"registry {name!r}: --json-key: the key's private_key is not a valid PEM RSA private key"
        ) from None


def refresh_error(exc: google.auth.exceptions.RefreshError, token_uri: str) -> errors.RegistryError:
    """The token endpoint answered but minted nothing: refused key, or the endpoint failing."""
    detail = _one_line(exc.args[0] if exc.args else "")
    if exc.retryable:
        return errors.BadResponseError(f"Google token endpoint {token_uri} failed ({detail})")
    if detail.startswith("No access token"):
        return errors.BadResponseError(f"Google token endpoint {token_uri} answered without an access token")
    return errors.AuthError(f"Google token endpoint refused the service-account key ({detail})")


def transport_error(exc: google.auth.exceptions.TransportError, token_uri: str) -> errors.RegistryError:
    cause: BaseException | None = exc.__cause__ or exc
    if isinstance(cause, requests.exceptions.SSLError):
        return errors.TLSError(f"Google token endpoint {token_uri}: certificate or handshake failed")
    if isinstance(cause, requests.exceptions.Timeout):
        return errors.UnreachableError(f"Google token endpoint {token_uri}: timed out")
    found = _ERRNO.search(str(cause))
    reason = found.group(1).strip() if found else type(cause).__name__
    return errors.UnreachableError(f"Google token endpoint {token_uri}: {reason}")


def _one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- the project ----------------------------------------------------------------------------------
def project_prefix(project_id: str) -> str:
    """`PROJECT/`: the path prefix of the project's repositories (`example.com:proj` → `example.com/proj/`)."""
    return project_id.replace(":", "/") + "/"


def check_in_project(name: str, pattern: str, project_id: str) -> None:
    """A `--repository` pattern that can never match a repository of the project is a mistake: say so."""
    prefix = project_prefix(project_id)
    cut = min((i for i, c in enumerate(pattern) if c in _GLOB_CHARS), default=len(pattern))
    literal = pattern[:cut]
    possible = literal.startswith(prefix) or (cut < len(pattern) and prefix.startswith(literal))
    if not possible:
        raise InputError(
            f"registry {name!r}: --repository {pattern!r} is outside project {project_id!r}: repository paths "
            f"include the project, e.g. {prefix + pattern.rsplit('/', 1)[-1]!r}"
        )


# -- GCR's tag list extension ---------------------------------------------------------------------
def read_tag_pages(
    pages: list[dict[str, Any]], repository: str, keep: Callable[[object], bool] = is_tag
) -> tuple[list[str], dict[str, TagState]]:
    """The tag names `keep` accepts (valid ones), and the states the `manifest` maps give (digest, as sent,
    and upload time) for those they cover."""
    names: dict[str, None] = {}
    known: dict[str, TagState] = {}
    for page in pages:
        names.update(dict.fromkeys(t for t in entry_list(page, "tags", f"tags of {repository}") if _kept(t, keep)))
        for tag, state in manifest_map(page.get("manifest"), repository, keep).items():
            names.setdefault(tag)
            previous = known.get(tag)
            if previous is None or _later(state, previous):
                known[tag] = state
        check_entries(len(names), f"tags of {repository}")
    return list(names), known


def manifest_map(raw: Any, repository: str, keep: Callable[[object], bool] = is_tag) -> dict[str, TagState]:
    """`{"sha256:…": {"tag": [...], "timeUploadedMs": "…"}}` as tag → TagState for the tags `keep` accepts
    (untagged digests drop out)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise errors.BadResponseError(f"tags of {repository}: 'manifest' is not an object")
    states: dict[str, TagState] = {}
    for digest, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("tag") or [], list):
            raise errors.BadResponseError(f"tags of {repository}: 'manifest' entry {shown(digest)} is malformed")
        state = TagState(digest, uploaded_at(entry.get("timeUploadedMs")))
        for tag in entry.get("tag") or []:
            if not _kept(tag, keep):
                continue
            previous = states.get(tag)
            if previous is None or _later(state, previous):
                states[tag] = state
    return states


def google_said(digest: str, sent: tuple[object, object, object]) -> SaidImage | None:
    """A `manifest` map entry's (mediaType, imageSizeBytes, timeCreatedMs) of `digest`, checked: sizes and
    times are decimal strings on GCR, integers on Artifact Registry; a `timeCreatedMs` of "0" is unknown."""
    kind, size, created = said_kind(sent[0]), said_size(sent[1], text=True), said_millis(sent[2])
    return said_image(digest, kind, created=created, size=size)


def heard_in(pages: list[dict[str, Any]], digests: set[str]) -> list[tuple[str, tuple[object, object, object]]]:
    """(digest, (mediaType, imageSizeBytes, timeCreatedMs)) as the `manifest` maps sent them, for `digests`
    (the listing's checked ones) only; `said` checks the values."""
    found = []
    for page in pages:
        raw = page.get("manifest")
        if not isinstance(raw, dict):
            continue
        for digest in digests & raw.keys():
            entry = raw[digest]
            if isinstance(entry, dict):
                found.append(
                    (digest, (entry.get("mediaType"), entry.get("imageSizeBytes"), entry.get("timeCreatedMs")))
                )
    return found


def _kept(tag: object, keep: Callable[[object], bool]) -> TypeGuard[str]:
    return keep(tag) and isinstance(tag, str)


def uploaded_at(value: Any) -> datetime | None:
    """`timeUploadedMs`: decimal milliseconds, a string on GCR and an integer on Artifact Registry."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        millis = int(value)
        if millis <= 0:
            return None
        return datetime.fromtimestamp(millis // 1000, UTC) + timedelta(milliseconds=millis % 1000)
    except (ValueError, OverflowError, OSError):
        return None


def _later(state: TagState, than: TagState) -> bool:
    """A tag listed under two digests (a map caught mid-push) points at the more recent upload."""
    floor = datetime.min.replace(tzinfo=UTC)
    return (state.pushed_at or floor) > (than.pushed_at or floor)
