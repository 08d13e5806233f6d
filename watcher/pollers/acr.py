"""`--provider acr`: Azure Container Registry, with a username and password or with Azure AD.

A username and password (a service principal's id and password, the admin user, or a repository-scoped
token) work on ACR's standard OCI token flow, whose `/oauth2/token` accepts Basic credentials: that mode
is the OCI poller as it is. Azure AD (`--tenant-id/--client-id/--client-secret`, or with no credentials at
all the default Azure credential chain) goes through the azure SDK and ACR's own `/acr/v1/` API, which
lists every tag with its digest and last-update time in one paged call; the SDK swaps the AAD token for
ACR tokens (`/oauth2/exchange`, `/oauth2/token`) on each challenge. The SDK is synchronous: each call
runs in a thread, at most `max_concurrency` at once, every HTTP request paced by `rate_limit`, and held
within the same limits across the deployment too: the policies of `watcher.registry.sdklimits` do it.

`AZURE_AUTHORITY_HOST` points Azure AD elsewhere (a national cloud, or a test authority); for a host
Microsoft does not know, instance discovery is turned off so nothing calls login.microsoftonline.com.

With Azure AD there is no OCI client to read manifests with, so a poll's new digests are described by ACR's
own manifest properties (`GET /acr/v1/{name}/_manifests/{digest}`, through the same pipeline as the listing:
its origin check, limits and meter): architecture, os, size and media type, and an index's `references`
for its platforms; one request per new digest, at most `MAX_PER_GROUP` a group (`watcher.polling.images`).
Its `createdTime` is a push time, never kept as the build time. With a username and password the OCI client
reads the manifests themselves, verified against their digests, and ACR's properties are not asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import RetryPolicy, SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport

from watcher import errors
from watcher.diff import TagState
from watcher.errors import InputError
from watcher.pollers.base import Poller, TagFilter, gather_all
from watcher.pollers.oci import OciPoller
from watcher.registrations.spec import RegistrySpec
from watcher.registry.entries import check_entries
from watcher.registry.hostlimits import HostLimits
from watcher.registry.http import error_for_status
from watcher.registry.imagemeta import MAX_MANIFEST_BYTES
from watcher.registry.oci import OciClient
from watcher.registry.origin import OffOrigin, origin_of, shown
from watcher.registry.policedsession import policed_session
from watcher.registry.said import SaidImage, said_image, said_kind, said_platform, said_platforms, said_size
from watcher.registry.sdklimits import AzureMeter, AzureSlots

AUDIENCE = "https://containerregistry.azure.net"
BASIC_FIELDS = ("username", "password")
AAD_FIELDS = ("tenant_id", "client_id", "client_secret")
#: authority hosts msal knows; any other needs instance discovery off
MICROSOFT_AUTHORITIES = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login.microsoftonline.de",
        "login.sovcloud-identity.fr",
        "login.sovcloud-identity.de",
        "login.sovcloud-identity.sg",
    }
)
_OS_ERROR = re.compile(r"\[Errno -?\d+\][^'\"()]*")
_SSL_ERROR = re.compile(r"\[SSL[^\]]*\][^'\"()]*")
T = TypeVar("T")
log = logging.getLogger("watcher")

# azure-identity logs every failed token request as a warning; the error itself reaches the user once.
logging.getLogger("azure").addHandler(logging.NullHandler())


class AcrPoller(OciPoller):
    provider: ClassVar[str] = "acr"
    credential_fields: ClassVar[tuple[str, ...]] = (*BASIC_FIELDS, *AAD_FIELDS)
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password", "client_secret"})
    #: ACR's Basic tier allows 1,000 read operations a minute; raise --rate-limit on Standard/Premium
    default_limits: ClassVar[HostLimits] = HostLimits(max_concurrency=8, requests_per_second=15.0)

    def __init__(self, spec: RegistrySpec) -> None:
        self.api: AcrApi | None = None
        if uses_basic(spec):
            super().__init__(spec)
        else:
            Poller.__init__(self, spec)
            self.api = AcrApi(spec.url, lambda options: aad_credential(spec, options), self.limits)

    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        super(OciPoller, cls).validate(spec)
        creds = spec.credentials
        aad_given = [f for f in AAD_FIELDS if creds.get(f)]
        if aad_given and any(creds.get(f) for f in BASIC_FIELDS):
            raise InputError(
                f"registry {spec.name!r}: use either --username/--password or "
                "--tenant-id/--client-id/--client-secret, not both"
            )
        cls.require_pair(spec, *BASIC_FIELDS)
        if aad_given and len(aad_given) < len(AAD_FIELDS):
            missing = next(f for f in AAD_FIELDS if not creds.get(f)).replace("_", "-")
            raise InputError(
                f"registry {spec.name!r}: --{missing} is missing "
                "(--tenant-id, --client-id and --client-secret go together)"
            )
        if not uses_basic(spec) and urlsplit(spec.url).scheme != "https":
            raise InputError(
                f"registry {spec.name!r}: Azure AD sign-in needs an https:// URL, e.g. https://NAME.azurecr.io"
            )

    async def verify(self) -> None:
        if self.api is None:
            await super().verify()
        else:
            await Poller.verify(self)

    async def repositories(self) -> Sequence[object]:
        if self.api is None:
            return await super().repositories()
        return await self.api.repositories()

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        if self.api is None:
            return await super().tags(repository, wanted)
        found = await self.api.tags(repository)
        if found is None:
            return None
        return {
            tag: TagState(self.valid_digest(repository, tag, digest), updated)
            for name, digest, updated in found
            if self.valid_tag(repository, name) and isinstance(tag := name, str) and wanted(tag)
        }

    def manifest_client(self) -> OciClient | None:
        return super().manifest_client() if self.api is None else None  # Azure AD: the SDK's tokens only

    async def said(self, wanted: Mapping[str, str]) -> list[SaidImage]:
        """With Azure AD, ACR's manifest properties of each wanted digest, one request each (within the
        registry's limits); a digest whose request fails says nothing. With a username and password nothing:
        the OCI client reads the manifests, verified."""
        api = self.api
        if api is None:
            return []
        answers = await gather_all([api.manifest(repository, digest) for digest, repository in wanted.items()])
        found = [acr_said(digest, answer) for digest, answer in zip(wanted, answers, strict=True)]
        return [one for one in found if one is not None]

    @property
    def requests(self) -> int:
        return self.api.meter.counts.total if self.api is not None else super().requests

    @property
    def codes(self) -> Counter[str]:
        return self.api.meter.counts.codes if self.api is not None else super().codes

    async def aclose(self) -> None:
        if self.api is None:
            await super().aclose()
        else:
            self.api.close()


def acr_said(digest: str, answer: object) -> SaidImage | None:
    """ACR's manifest properties of `digest`, checked: its kind from `mediaType` (and `configMediaType`), its
    platforms an index's `references` or an image's own `os`/`architecture`, its size `imageSize`."""
    manifest = answer.get("manifest") if isinstance(answer, dict) else None
    if not isinstance(manifest, dict) or manifest.get("digest") != digest:
        return None
    kind = said_kind(manifest.get("mediaType"), manifest.get("configMediaType"))
    references = manifest.get("references")
    if kind == "index" and isinstance(references, list):
        platforms = said_platforms(
            said_platform(r.get("os"), r.get("architecture"), r.get("variant"))
            for r in references
            if isinstance(r, dict)
        )
    elif kind == "image":
        platforms = said_platforms([said_platform(manifest.get("os"), manifest.get("architecture"))])
    else:
        platforms = None
    return said_image(digest, kind, platforms, size=said_size(manifest.get("imageSize")))


def counted(items: Iterable[T], what: str) -> list[T]:
    """The items of a paged SDK listing, failing as soon as there are more than the entries cap."""
    found: list[T] = []
    for item in items:
        found.append(item)
        check_entries(len(found), what)
    return found


def as_time(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def uses_basic(spec: RegistrySpec) -> bool:
    return all(spec.credentials.get(f) for f in BASIC_FIELDS)


def custom_authority() -> bool:
    """Whether AZURE_AUTHORITY_HOST names a host Microsoft's instance discovery would not know."""
    value = os.environ.get("AZURE_AUTHORITY_HOST", "").strip()
    if not value:
        return False
    host = urlsplit(value if "://" in value else f"https://{value}").hostname or ""
    return host.lower() not in MICROSOFT_AUTHORITIES


def aad_credential(spec: RegistrySpec, options: dict[str, Any]) -> TokenCredential:
    """The service principal's secret credential, or the default Azure credential chain without one."""
    kwargs = dict(options)
    if custom_authority():
        kwargs["disable_instance_discovery"] = True
    creds = spec.credentials
    try:
        if creds.get("tenant_id"):
            from azure.identity import ClientSecretCredential

            return ClientSecretCredential(
                creds["tenant_id"], creds["client_id"], creds["client_secret"], retry_policy_class=TlsFailFast, **kwargs
            )
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(**kwargs)
    except ValueError as exc:  # e.g. an http:// AZURE_AUTHORITY_HOST, or a malformed tenant id
        raise InputError(f"registry {spec.name!r}: Azure AD: {first_line(str(exc))}") from None


class Meter(AzureMeter, SansIOHTTPPolicy):
    """The registry's rate limit and request counts (`watcher.registry.sdklimits.AzureMeter`), as a policy."""


class SharedSlots(AzureSlots, SansIOHTTPPolicy):
    """The deployment-wide limits (`watcher.registry.sdklimits.AzureSlots`), as a policy."""


class StayOnOrigin(SansIOHTTPPolicy):
    """Every request of the pipeline (paging links and redirects included) goes to the registry's own
    origin, checked before the ACR token is added: nothing of ours reaches another host."""

    def __init__(self, endpoint: str) -> None:
        self._home = origin_of(endpoint)

    def on_request(self, request: PipelineRequest) -> None:
        url = request.http_request.url
        if origin_of(url) != self._home:
            raise OffOrigin(f"refused to send a request to {shown(url)}: not the registry's origin")


class TlsFailFast(RetryPolicy):
    """Retries as usual, except a certificate problem: trying again cannot fix it."""

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        if error is not None and _SSL_ERROR.search(str(error)):
            return False
        return bool(super().increment(settings, response=response, error=error))


class AcrApi:
    """ACR's `/acr/v1/` listing through the synchronous azure SDK, called from async code in threads.

    A poll builds one of these, so tokens never outlive a poll; within it the SDK fetches an ACR access
    token on every challenge and msal renews the AAD token before it expires. If ACR still refuses a
    token, the credential and client are rebuilt once (fresh AAD and ACR tokens); a second refusal is
    an authentication error.
    """

    def __init__(
        self, endpoint: str, make_credential: Callable[[dict[str, Any]], TokenCredential], limits: HostLimits
    ) -> None:
        self.endpoint = endpoint
        self.meter = Meter(limits.requests_per_second)
        self._shared = SharedSlots(limits)
        self._make_credential = make_credential
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._options: dict[str, Any] = {
            "retry_total": limits.retries,
            "retry_backoff_factor": limits.backoff_seconds,
            "retry_backoff_max": limits.max_wait_seconds,
            "connection_timeout": limits.timeout_seconds,
            "read_timeout": limits.timeout_seconds,
        }
        self._renewal = threading.Lock()
        self._generation = 0
        self._retired: list[tuple[Any, TokenCredential]] = []
        self._credential, self._client = self._connect()

    def _connect(self) -> tuple[TokenCredential, Any]:
        from azure.containerregistry import ContainerRegistryClient

        credential = self._make_credential(dict(self._options))  # Azure AD: the SDK's own connections
        client = ContainerRegistryClient(
            self.endpoint,
            credential,
            audience=AUDIENCE,
            retry_policy=TlsFailFast(**self._options),
            per_retry_policies=[StayOnOrigin(self.endpoint), self.meter, self._shared],
            # the registry (its listing and token exchange share this transport): the network policy and body cap
            transport=RequestsTransport(session=policed_session(), **self._options),
            **self._options,
        )
        return credential, client

    async def repositories(self) -> list[object]:
        """Every repository name, as sent: the poller checks them."""
        return await self._call("catalog", lambda client: counted(client.list_repository_names(), "catalog"))

    async def tags(self, repository: str) -> list[tuple[object, object, datetime | None]] | None:
        """Every tag of the repository as (name, digest, last update), the first two as sent for the poller
        to check; None if the repository is gone."""

        def listed(client: Any) -> list[tuple[object, object, datetime | None]]:
            tags = counted(client.list_tag_properties(repository), f"tags of {repository}")
            return [(t.name, t.digest, as_time(t.last_updated_on)) for t in tags]

        try:
            return await self._call(f"tags of {repository}", listed)
        except errors.ScopeError:
            return None

    async def manifest(self, repository: str, digest: str) -> object:
        """ACR's properties of one manifest (`/acr/v1/{name}/_manifests/{digest}`, the JSON as sent), or None
        when it fails: they are a poll's extra, never its failure."""
        url = f"{self.endpoint.rstrip('/')}/acr/v1/{quote(repository, safe='')}/_manifests/{quote(digest, safe=':')}"
        what = f"manifest properties of {repository}@{digest}"

        def read(client: Any) -> object:
            from azure.core.rest import HttpRequest

            # the SDK's public model leaves out `mediaType` and `references`: the same request, read whole,
            # through its generated client's pipeline (auth challenges, origin check, limits, meter)
            response = client._client.send_request(HttpRequest("GET", url, headers={"Accept": "application/json"}))
            if response.status_code != 200 or len(response.content) > MAX_MANIFEST_BYTES:
                return None
            return json.loads(response.content)

        try:
            return await self._call(what, read)
        except errors.RegistryError as exc:
            log.info("%s: %s", what, exc)
            return None

    async def _call(self, what: str, call: Callable[[Any], T]) -> T:
        async with self._slots:
            return await asyncio.to_thread(self._call_once_more_on_401, what, call)

    def _call_once_more_on_401(self, what: str, call: Callable[[Any], T]) -> T:
        generation, client = self._generation, self._client
        try:
            return call(client)
        except ClientAuthenticationError as exc:
            if exc.response is None:  # Azure AD itself refused: new tokens cannot help
                raise translate(exc, what) from None
        except Exception as exc:
            raise translate(exc, what) from None
        self._renew(generation)
        try:
            return call(self._client)
        except Exception as exc:
            raise translate(exc, what) from None

    def _renew(self, seen_generation: int) -> None:
        """Fresh credential and client, once per refusal however many threads saw it."""
        with self._renewal:
            if self._generation != seen_generation:
                return
            # the old pair may still be mid-listing in another thread: it is closed with the rest
            self._retired.append((self._client, self._credential))
            self._credential, self._client = self._connect()
            self._generation += 1

    def close(self) -> None:
        for client, credential in [*self._retired, (self._client, self._credential)]:
            _close(client, credential)
        self._shared.close()


def _close(client: Any, credential: Any) -> None:
    client.close()
    close = getattr(credential, "close", None)
    if close is not None:
        close()


def translate(exc: BaseException, what: str) -> errors.RegistryError:
    """An azure SDK failure as one of watcher's errors, in one line without secrets."""
    if isinstance(exc, errors.RegistryError):  # the network policy, the body cap, the origin check
        return type(exc)(f"{what}: {exc.message}")
    text = str(exc)
    ssl_reason, os_reason = _SSL_ERROR.search(text), _OS_ERROR.search(text)
    if isinstance(exc, (ServiceRequestError, ClientAuthenticationError)) and ssl_reason:
        return errors.TLSError(f"{what}: {_where(exc)}{ssl_reason.group(0).strip()}")
    if isinstance(exc, ClientAuthenticationError) and exc.response is None:
        if os_reason or "Failed to resolve" in text or "Failed to establish" in text:
            return errors.UnreachableError(f"Azure AD: {os_reason.group(0).strip() if os_reason else first_line(text)}")
        return errors.AuthError(_aad_refusal(text))
    if isinstance(exc, ServiceRequestError):
        return errors.UnreachableError(f"{what}: {os_reason.group(0).strip() if os_reason else first_line(text)}")
    if isinstance(exc, ServiceResponseError):
        return errors.UnreachableError(f"{what}: connection dropped ({first_line(text)})")
    if isinstance(exc, DecodeError):
        return errors.BadResponseError(f"{what}: the body is not what ACR sends ({first_line(text)})")
    if isinstance(exc, HttpResponseError):
        return _status_error(exc, what)
    if isinstance(exc, AzureError):
        return errors.BadResponseError(f"{what}: {first_line(text)}")
    return errors.BadResponseError(f"{what}: unexpected answer ({type(exc).__name__}: {first_line(text)})")


def _status_error(exc: HttpResponseError, what: str) -> errors.RegistryError:
    code = exc.status_code or 0
    request = getattr(exc.response, "request", None)
    path = urlsplit(str(getattr(request, "url", ""))).path
    if path == "/oauth2/exchange":
        what = f"{what}: ACR refused the Azure AD token (/oauth2/exchange)"
    elif path == "/oauth2/token":
        what = f"{what}: ACR refused to issue an access token (/oauth2/token)"
    detail = _acr_error_detail(exc)
    text = f"{what}: HTTP {code}" + (f" ({detail})" if detail else "")
    if isinstance(exc, ResourceNotFoundError):
        code = 404
    challenge = str(getattr(exc.response, "headers", {}).get("WWW-Authenticate", ""))
    return error_for_status(code or 0, text, challenge)


def _acr_error_detail(exc: HttpResponseError) -> str:
    """The first `code: message` of ACR's `{"errors": [...]}` body, if there is one."""
    try:
        first = json.loads(exc.response.text())["errors"][0]  # type: ignore[union-attr]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:
        return ""


def _aad_refusal(text: str) -> str:
    """Azure AD's reason, or what the default credential chain found (nothing, or the one that failed)."""
    if text.startswith("DefaultAzureCredential failed"):
        failed = [line.strip() for line in text.splitlines() if "Authentication failed" in line]
        if failed:
            return f"Azure AD: {failed[0]}"
        return (
            "Azure AD: no credential found: give --tenant-id/--client-id/--client-secret or --username/--password, "
            "or set up the default Azure credential chain (AZURE_* variables, managed identity, az login)"
        )
    reason = first_line(text.removeprefix("Authentication failed: "))
    if reason.startswith("Unable to get authority configuration"):
        reason = reason.split(". ")[0] + " (is the tenant id right?)"
    return f"Azure AD: {reason}"


def _where(exc: BaseException) -> str:
    return "Azure AD: " if isinstance(exc, ClientAuthenticationError) else ""


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
