"""`--provider ecr`: AWS Elastic Container Registry, listed through the ECR API with boto3.

`DescribeRepositories` finds the repositories and `DescribeImages` gives every tagged image's digest, tags
and push time, up to 1000 images per call: a poll makes no manifest requests and needs no registry token,
so there is no 12-hour token to expire. Every call is signed with the current credentials, which boto3
takes from `--access-key`/`--secret-key` or else from its default chain (environment, profile, web
identity, instance role) and refreshes itself when they are temporary.

boto3 is synchronous: each call runs in a worker thread, at most `max_concurrency` at a time and paced to
`rate_limit`; botocore's standard retry mode backs off on throttling and dropped connections. Its errors
become watcher's, one line each. The account (`registryId`) and region come from the registry URL;
boto3's `AWS_ENDPOINT_URL_ECR` still decides where the calls go.

Push times arrive as epoch seconds (with a fraction); the client's parser turns them straight into aware
UTC datetimes (`utc_timestamp`, through botocore's own `timestamp_parser` hook, as the AWS CLI sets it),
not through botocore's default, which goes through dateutil and the local zone: that cost a quarter of a
big poll's CPU. An image's digest and push time are read once, however many tags it has.

`DescribeImages` also says each image's size (`imageSizeInBytes`) and kind (`imageManifestMediaType`, and
`artifactMediaType` for what is not an image): the listing keeps them as sent (`Heard`, bounded) and `said`
checks them when a poll describes its new digests, at no request. It says no build time (`imagePushedAt`
is when it was pushed: the tag's `pushed_at`, never `created`) and no platforms.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import boto3
import botocore.session
from botocore import exceptions as boto
from botocore.config import Config
from botocore.utils import parse_timestamp

from watcher import errors
from watcher.diff import TagState
from watcher.errors import InputError
from watcher.pollers.base import Poller, TagFilter
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.entries import check_entries
from watcher.registry.hostlimits import HostLimits, Pacer
from watcher.registry.requestcounts import RequestCounts
from watcher.registry.said import Heard, SaidImage, said_image, said_kind, said_size
from watcher.registry.sdklimits import BotocoreSlots

URL_SHAPE = "https://ACCOUNT.dkr.ecr.REGION.amazonaws.com"
REGION = r"[a-z]{2,4}(?:-[a-z]+)+-\d+"
_URL = re.compile(
    rf"^https://(?P<account>\d{{12}})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>{REGION})\.amazonaws\.com(?:\.cn)?$"
)
_REGION = re.compile(rf"^{REGION}$")
PAGE_SIZE = 1000  # the most DescribeRepositories and DescribeImages return per call
#: digests one DescribeImages call asks by digest (the API's limit for `imageIds`)
DESCRIBE_BY_DIGEST = 100

AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)
DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
#: the default chain found credentials but could not use them
CREDENTIAL_ERRORS = (
    boto.PartialCredentialsError,
    boto.CredentialRetrievalError,
    boto.TokenRetrievalError,
    boto.SSOError,
    boto.ProfileNotFound,
)
_ACTION = re.compile(r"perform: (\S+)")
_PRINCIPAL_ACCOUNT = re.compile(r"arn:aws[\w-]*:(?:iam|sts)::(\d{12}):")


class RepositoryGone(errors.ScopeError):
    """The repository does not exist (any more): `tags()` reports that as None, not as a failure."""


def parse_url(url: str) -> tuple[str, str, bool] | None:
    """(account, region, fips) of an ECR registry URL, or None if the URL is not one."""
    match = _URL.match(url.lower())
    if match is None:
        return None
    return match["account"], match["region"], bool(match["fips"])


class EcrPoller(Poller):
    provider: ClassVar[str] = "ecr"
    credential_fields: ClassVar[tuple[str, ...]] = ("access_key", "secret_key")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret_key"})
    option_fields: ClassVar[tuple[str, ...]] = ("region",)
    # ECR throttles per account and region, shared with every other tool: stay polite by default.
    default_limits: ClassVar[HostLimits] = HostLimits(max_concurrency=8, requests_per_second=20.0)

    def __init__(self, spec: RegistrySpec) -> None:
        super().__init__(spec)
        parsed = parse_url(spec.url)
        if parsed is None:  # validate() rejects this before a poller is ever made
            raise InputError(bad_url_message(spec))
        self.account, url_region, self.fips = parsed
        self.region: str = spec.options.get("region") or url_region
        self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        self._pacer = Pacer(self.limits.requests_per_second)
        self._client: Any = None
        self._client_lock = threading.Lock()
        #: every HTTP attempt botocore makes (its retries included), by status
        self.counts = RequestCounts()
        #: what the listing's DescribeImages said of each digest: (kind, imageSizeInBytes as sent)
        self.heard: Heard[tuple[str | None, object]] = Heard()

    # -- validation -------------------------------------------------------------------------------
    @classmethod
    def validate(cls, spec: RegistrySpec) -> None:
        super().validate(spec)
        cls.require_pair(spec, "access_key", "secret_key")
        parsed = parse_url(spec.url)
        if parsed is None:
            raise InputError(bad_url_message(spec))
        region = spec.options.get("region")
        if region and not _REGION.match(region):
            raise InputError(f"registry {spec.name!r}: --region {region!r} is not an AWS region (e.g. eu-west-1)")
        if region and region != parsed[1]:
            raise InputError(
                f"registry {spec.name!r}: --region {region} does not match the URL's region {parsed[1]}: "
                "an ECR registry lives in the region its URL names"
            )

    # -- the boto3 client ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The ECR client, made on first use (in a worker thread: loading botocore's models takes a while)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        creds = self.spec.credentials
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=utc_timestamp)
        session = boto3.session.Session(
            aws_access_key_id=creds.get("access_key") or None,
            aws_secret_access_key=creds.get("secret_key") or None,
            region_name=self.region,
            botocore_session=core,
        )
        config = Config(
            retries={"mode": "standard", "total_max_attempts": self.limits.retries + 1},
            connect_timeout=min(10.0, self.limits.timeout_seconds),
            read_timeout=self.limits.timeout_seconds,
            max_pool_connections=self.limits.max_concurrency,
            use_fips_endpoint=self.fips,
            user_agent_appid="watcher",
        )
        client = session.client("ecr", config=config)
        client.meta.events.register("response-received.ecr", self._count_response)
        BotocoreSlots(self.limits, THROTTLE_CODES).register(client)  # the limits, held by the whole deployment
        return client

    def _count_response(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        """botocore's hook after each HTTP attempt: its status, or `error` when none came back."""
        self.counts.add(response_dict.get("status_code") if response_dict else None)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One ECR API call, within this registry's concurrency and rate limits."""
        async with self._slots:
            await self._pacer.wait()
            return await asyncio.to_thread(self._invoke, operation, params)

    def _invoke(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**params)
        except (boto.ClientError, boto.BotoCoreError) as exc:
            raise self.translate(exc, params.get("repositoryName")) from exc
        return result

    # -- listing ------------------------------------------------------------------------------------
    async def verify(self) -> None:
        """One page of repositories (credentials, permission, account), then one image page of the first."""
        scope = Scope.from_options(self.spec.options)
        first = await self._call("describe_repositories", registryId=self.account, maxResults=1)
        literal = scope.literal_repositories()
        if literal is not None:
            repos = literal
        elif not scope.repositories:
            repos = self.valid_repositories(repository_names(first))
        else:
            repos = await self.discover(scope)
        if repos:
            # a named repository that does not exist yet is not an error: it may be created later
            with contextlib.suppress(RepositoryGone):
                await self._call("describe_images", registryId=self.account, repositoryName=repos[0], maxResults=1)

    async def repositories(self) -> list[object]:
        names: list[object] = []
        token: str | None = None
        while True:
            page = await self._call("describe_repositories", **self._page(token))
            names.extend(repository_names(page))
            check_entries(len(names), "repositories")
            token = page.get("nextToken")
            if not token:
                return names

    async def tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        """Every wanted tag with its image's digest and push time; untagged images are skipped.

        The whole repository is read in one worker thread, page after page, holding one of the registry's
        slots: the thread that parses a page also reads it, and the event loop (which every thread needs
        the GIL back for) is woken once per repository instead of once per page."""
        async with self._slots:
            return await asyncio.to_thread(self._tags, repository, wanted)

    def _tags(self, repository: str, wanted: TagFilter) -> dict[str, TagState] | None:
        found: dict[str, TagState] = {}
        heard: list[tuple[str, tuple[str | None, object]]] = []
        count = 0
        token: str | None = None
        while True:
            params = self._page(token) | {"repositoryName": repository, "filter": {"tagStatus": "TAGGED"}}
            delay = self._pacer.reserve()
            if delay > 0:
                time.sleep(delay)
            try:
                page = self._invoke("describe_images", params)
            except RepositoryGone:
                return None
            for image in entries(page, "imageDetails", f"images of {repository}"):
                tags = entries(image, "imageTags", f"images of {repository}")
                count += len(tags)
                check_entries(count, f"tags of {repository}")
                kept = [tag for tag in self.valid_tags(repository, tags) if wanted(tag)]
                if kept:  # one state for all of an image's tags
                    digest = self.valid_digest(repository, kept[0], image.get("imageDigest"))
                    state = TagState(digest, as_utc(image.get("imagePushedAt")))
                    found.update(dict.fromkeys(kept, state))
                    # the kind now (one of three constants, not two media type strings kept per image)
                    kind = said_kind(image.get("imageManifestMediaType"), image.get("artifactMediaType"))
                    heard.append((digest, (kind, image.get("imageSizeInBytes"))))
            token = page.get("nextToken")
            if not token:
                self.heard.add(repository, heard)
                return found

    async def said(self, wanted: Mapping[str, str]) -> list[SaidImage]:
        """Size and kind of the wanted digests, as the listing's DescribeImages said them (no request); the
        others (the background fill's: a fresh poller heard nothing) asked by digest, DESCRIBE_BY_DIGEST a
        call per repository, within the registry's limits. A call ECR refuses (an image gone since) says
        nothing of its digests."""
        found = self.heard.said(wanted, ecr_said)
        known = self.heard.heard_of(wanted)  # what the listing sent and the checks refused is not asked again
        by_repository: dict[str, list[str]] = {}
        for digest, repository in sorted(wanted.items()):
            if digest not in known:
                by_repository.setdefault(repository, []).append(digest)
        for repository, digests in by_repository.items():
            for start in range(0, len(digests), DESCRIBE_BY_DIGEST):
                ids = [{"imageDigest": digest} for digest in digests[start : start + DESCRIBE_BY_DIGEST]]
                try:
                    page = await self._call(
                        "describe_images", registryId=self.account, repositoryName=repository, imageIds=ids
                    )
                except errors.RegistryError:
                    continue
                asked = set(digests[start : start + DESCRIBE_BY_DIGEST])
                for image in entries(page, "imageDetails", f"images of {repository}"):
                    sent = image.get("imageDigest") if isinstance(image, dict) else None
                    if isinstance(sent, str) and sent in asked:
                        kind = said_kind(image.get("imageManifestMediaType"), image.get("artifactMediaType"))
                        one = ecr_said(sent, (kind, image.get("imageSizeInBytes")))
                        if one is not None:
                            found.append(one)
        return found

    def forget(self, repositories: Iterable[str]) -> None:
        self.heard.forget(repositories)

    def _page(self, token: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"registryId": self.account, "maxResults": PAGE_SIZE}
        if token:
            params["nextToken"] = token
        return params

    @property
    def requests(self) -> int:
        return self.counts.total

    @property
    def codes(self) -> Counter[str]:
        return self.counts.codes

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()  # its connection pool

    # -- errors -------------------------------------------------------------------------------------
    def translate(self, exc: Exception, repository: str | None = None) -> errors.RegistryError:
        """A botocore failure as one of watcher's errors, in one line that never carries a secret."""
        if isinstance(exc, boto.ClientError):
            return self._client_error(exc, repository)
        return self._botocore_error(exc)

    def _client_error(self, exc: boto.ClientError, repository: str | None) -> errors.RegistryError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = first_line(str(error.get("Message", "")))
        operation = exc.operation_name
        if code == "RepositoryNotFoundException":
            return RepositoryGone(f"repository {repository!r} does not exist in account {self.account} ({self.region})")
        if code == "InvalidSignatureException" or code == "SignatureDoesNotMatch":
            return errors.AuthError(f"the secret key does not match the access key ({code})")
        if code in AUTH_CODES:
            return errors.AuthError(f"AWS refused the credentials ({code}: {message})")
        if code in DENIED_CODES:
            return self._denied(message, operation)
        if code in THROTTLE_CODES:
            return errors.RateLimitedError(f"AWS throttled {operation} ({code}), still after retrying")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return errors.BadResponseError(f"{operation} failed: {code or f'HTTP {status}'}: {message}".rstrip(": "))

    def _denied(self, message: str, operation: str) -> errors.RegistryError:
        """Missing permission; or, when the credentials belong to another account, probably a wrong account id."""
        action_match = _ACTION.search(message)
        action = action_match[1] if action_match else f"ecr:{operation}"
        principal = _PRINCIPAL_ACCOUNT.search(message)
        if principal and principal[1] != self.account:
            return errors.ScopeError(
                f"account {self.account} (from the URL) does not let these credentials (account {principal[1]}) "
                f"call {action}: check the account id in the URL, or the registry's cross-account policy"
            )
        return errors.PermissionError_(
            f"these credentials may not call {action} in account {self.account} ({self.region}): "
            "grant it in their IAM policy"
        )

    def _botocore_error(self, exc: Exception) -> errors.RegistryError:
        text = first_line(str(exc)) or type(exc).__name__
        if isinstance(exc, boto.SSLError):
            return errors.TLSError(text)
        if isinstance(exc, boto.NoCredentialsError):
            return errors.AuthError(
                "no AWS credentials found: give --access-key and --secret-key, or set up the default "
                "credential chain (environment, profile, web identity, instance role)"
            )
        if isinstance(exc, CREDENTIAL_ERRORS):
            return errors.AuthError(text)
        if isinstance(exc, boto.ReadTimeoutError):
            return errors.UnreachableError(f"{text} (timed out)")
        if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError):
            return self._unreachable(exc, text)
        if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
            return errors.UnreachableError(text)
        return errors.BadResponseError(text)

    def _unreachable(self, exc: Exception, text: str) -> errors.RegistryError:
        """An AWS endpoint that cannot be reached in a region AWS does not know means the region is wrong."""
        endpoint = str(getattr(exc, "kwargs", {}).get("endpoint_url", ""))
        aws_host = re.search(r"\.amazonaws\.com(\.cn)?(:\d+)?/?$", endpoint) is not None
        if aws_host and not known_region(self.region):
            return errors.ScopeError(
                f"region {self.region!r} is probably wrong: AWS has no ECR endpoint there ({text})"
            )
        return errors.UnreachableError(text)


def ecr_said(digest: str, sent: tuple[str | None, object]) -> SaidImage | None:
    """DescribeImages' kind (from `imageManifestMediaType` and `artifactMediaType`) and `imageSizeInBytes`
    of `digest`, checked."""
    kind, size = sent
    return said_image(digest, kind, size=said_size(size))


def entries(answer: object, key: str, what: str) -> list[Any]:
    """A list in an ECR answer (absent is empty); botocore does not check what an endpoint sends."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise errors.BadResponseError(f"{what}: {key!r} is not a list")
    return value


def repository_names(page: dict[str, Any]) -> list[object]:
    """The repository names of a DescribeRepositories page, as sent: the poller checks them."""
    return [
        r.get("repositoryName") if isinstance(r, dict) else r for r in entries(page, "repositories", "repositories")
    ]


def known_region(region: str) -> bool:
    """Whether this botocore knows ECR in `region` (a newer region than botocore is still possible)."""
    session = boto3.session.Session()
    return any(
        region in session.get_available_regions("ecr", partition_name=partition)
        for partition in session.get_available_partitions()
    )


def utc_timestamp(value: object) -> datetime:
    """The client's timestamp parser: epoch seconds, as ECR's JSON sends them, straight to an aware UTC
    datetime; a string (another service's format) through botocore's own parser, then to UTC. A time no
    datetime can hold is a bad response, in one line."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        parsed: datetime = parse_timestamp(value)
    except (ValueError, OverflowError, OSError, RuntimeError):
        raise errors.BadResponseError(f"ECR sent a time that is not one: {str(value)[:40]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def as_utc(value: Any) -> datetime | None:
    """ECR's push time as an aware UTC datetime (the client's parser already gives one)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bad_url_message(spec: RegistrySpec) -> str:
    return f"registry {spec.name!r}: URL {spec.url!r} is not an ECR registry: use {URL_SHAPE}"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
