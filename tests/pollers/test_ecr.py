"""`--provider ecr` against a real moto_server (ECR's JSON wire protocol over HTTP), plus botocore's Stubber.

moto runs the whole lifecycle: add, baseline, push, retag, move, delete, poll. Two things moto cannot show
are stubbed with botocore's Stubber, using the codes and messages AWS really sends: pagination (moto
ignores `maxResults`) and refused credentials or permissions (moto checks neither).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from botocore.stub import Stubber

from tests.conftest import Watcher
from tests.fakes.ecr_api import FakeEcrApi
from tests.support.images import said_rows, shown_images
from tests.support.moto_server import ACCOUNT, REGISTRY_URL, EcrSeed, MotoServer
from tests.support.registry import free_port
from watcher import errors
from watcher.pollers import poller_for
from watcher.pollers.ecr import EcrPoller, parse_url
from watcher.polling import imagefill
from watcher.registrations.forms import build_spec
from watcher.registrations.scope import Scope

ACCESS_KEY = "AKIAWATCHERTEST00001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/never-shown-secret"
T = TypeVar("T")


# ---- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Nothing of this machine's AWS setup leaks in: no keys, profiles, endpoints or instance metadata."""
    for var in list(os.environ):
        if var.startswith("AWS_") and var != "AWS_CA_BUNDLE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def ecr(moto: MotoServer, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> EcrSeed:
    """An empty moto ECR that watcher's boto3 reaches through AWS_ENDPOINT_URL_ECR."""
    moto.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto.url)
    return EcrSeed(moto.url)


# ---- helpers ---------------------------------------------------------------------------------------
def add(watcher: Watcher, name: str, *extra: str, keys: bool = True, url: str = REGISTRY_URL) -> Any:
    creds = ["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY] if keys else []
    return watcher.add_registry(name, url, *creds, *extra, provider="ecr")


def poll(watcher: Watcher, name: str) -> dict[str, Any]:
    result = watcher.cli("poll", name, "--json")
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def changes(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(e["change"], e["tag"], e["digest"], e["previous_digest"]) for e in summary["events"]]


def one_line_error(result: Any, *fragments: str) -> str:
    """The failure is exit 1 and exactly one stderr line naming the registry, with no traceback or secret."""
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert SECRET_KEY not in result.stderr + result.stdout
    return str(lines[0])


def saved(watcher: Watcher) -> list[str]:
    return [r["name"] for r in json.loads(watcher.cli("registry", "list", "--json").stdout)]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def stubbed(**options: Any) -> tuple[EcrPoller, Stubber]:
    poller = ecr_poller(**options)
    stub = Stubber(poller.client)
    stub.activate()
    return poller, stub


def ecr_poller(**options: Any) -> EcrPoller:
    spec = build_spec(
        {
            "name": "stubbed",
            "provider": "ecr",
            "url": REGISTRY_URL,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            **options,
        }
    )
    poller = poller_for(spec)
    assert isinstance(poller, EcrPoller)
    return poller


def image(digest: str, *tags: str, pushed: datetime | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"registryId": ACCOUNT, "repositoryName": "team/app", "imageDigest": digest}
    if tags:
        detail["imageTags"] = list(tags)
    if pushed:
        detail["imagePushedAt"] = pushed
    return detail


def sha(char: str) -> str:
    return "sha256:" + char * 64


# ---- the lifecycle on moto --------------------------------------------------------------------------
def test_baseline_push_retag_move_delete(watcher: Watcher, ecr: EcrSeed, unique_repo: str) -> None:
    ecr.create(unique_repo)
    v1 = ecr.push(unique_repo, "v1")
    ecr.push_untagged(unique_repo)  # an untagged image is no tag: ignored

    added = add(watcher, "aws")
    assert added.exit_code == 0, added.stderr
    baseline = poll(watcher, "aws")
    assert (baseline["baseline"], baseline["repositories"], baseline["tags"]) == (True, 1, 1)
    # one DescribeRepositories page + one DescribeImages page: no manifest requests
    assert baseline["requests"] == 2

    v2 = ecr.push(unique_repo, "v2")
    pushed = poll(watcher, "aws")
    assert changes(pushed) == [("added", "v2", v2, "")]
    assert datetime.fromisoformat(pushed["events"][0]["pushed_at"]) == ecr.pushed_at(unique_repo, "v2")
    assert pushed["requests"] == baseline["requests"]  # what DescribeImages said of v2 cost no request
    # its size and kind (moto's `imageSizeInBytes` is the config's size); ECR says no build time
    # (`imagePushedAt` is a push time), no platforms. The baseline's v1: not described
    assert said_rows(watcher.engine) == {("aws", v2): ("image", None, None, 2)}
    assert [shown_images(watcher, "aws")[tag]["size"] for tag in ("v1", "v2")] == [None, 2]
    # the background fill asks DescribeImages for the baseline's digests by digest, once
    filled = imagefill.fill(watcher.engine, watcher.redis)
    assert (filled.stored, filled.failed, filled.requests) == (1, 0, 1)
    assert said_rows(watcher.engine)[("aws", v1)] == ("image", None, None, 2)
    assert [shown_images(watcher, "aws")[tag]["size"] for tag in ("v1", "v2")] == [2, 2]
    again = imagefill.fill(watcher.engine, watcher.redis)
    assert (again.stored, again.requests) == (0, 0)

    assert ecr.retag(unique_repo, "v2", "stable") == v2
    assert changes(poll(watcher, "aws")) == [("added", "stable", v2, "")]

    v1_new = ecr.push(unique_repo, "v1")
    assert changes(poll(watcher, "aws")) == [("updated", "v1", v1_new, v1)]

    ecr.delete_tag(unique_repo, "stable")
    assert changes(poll(watcher, "aws")) == [("removed", "stable", v2, "")]

    entries = watcher.stream_entries()
    assert [(e["change"], e["tag"]) for e in entries] == [
        ("added", "v2"),
        ("added", "stable"),
        ("updated", "v1"),
        ("removed", "stable"),
    ]
    for entry in entries:
        assert entry["registry"] == "aws" and entry["repository"] == unique_repo
        assert datetime.fromisoformat(entry["pushed_at"]).tzinfo == UTC


def test_repository_deleted_means_its_tags_are_removed(watcher: Watcher, ecr: EcrSeed, unique_repo: str) -> None:
    ecr.create(unique_repo)
    digest = ecr.push(unique_repo, "v1")
    assert add(watcher, "aws").exit_code == 0
    poll(watcher, "aws")
    ecr.delete_repository(unique_repo)
    assert changes(poll(watcher, "aws")) == [("removed", "v1", digest, "")]


def test_tags_of_a_missing_repository_is_none(ecr: EcrSeed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    poller = poller_for(build_spec({"name": "aws", "provider": "ecr", "url": REGISTRY_URL}))

    async def go() -> Any:
        try:
            return await poller.tags("never/created", lambda _t: True)
        finally:
            await poller.aclose()

    assert run(go()) is None
    assert poller.requests == 1
    assert poller.codes == {"400": 1}  # counted per HTTP attempt by botocore's response hook


def test_default_credential_chain(
    watcher: Watcher, ecr: EcrSeed, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    ecr.create(unique_repo)
    ecr.push(unique_repo, "v1")
    result = add(watcher, "aws", "--region", "us-east-1", keys=False)
    assert result.exit_code == 0, result.stderr
    assert poll(watcher, "aws")["tags"] == 1


def test_no_credentials_anywhere(watcher: Watcher, ecr: EcrSeed) -> None:
    line = one_line_error(add(watcher, "aws", keys=False), "registry 'aws'", "credentials refused")
    assert "--access-key" in line
    assert saved(watcher) == []


def test_show_never_prints_the_secret_key(watcher: Watcher, ecr: EcrSeed) -> None:
    assert add(watcher, "aws").exit_code == 0
    for command in (["registry", "show", "aws"], ["registry", "show", "aws", "--json"], ["registry", "list", "--json"]):
        result = watcher.cli(*command)
        assert result.exit_code == 0
        assert SECRET_KEY not in result.stdout + result.stderr
    shown = json.loads(watcher.cli("registry", "show", "aws", "--json").stdout)
    assert shown["credentials"] == {"access_key": ACCESS_KEY, "secret_key": "set"}


def test_scope_limits_the_listing(watcher: Watcher, ecr: EcrSeed) -> None:
    for repo in ("team/app", "team/api", "other/tool"):
        ecr.create(repo)
        ecr.push(repo, "v1")
    ecr.push("team/app", "dev-1")
    result = add(watcher, "aws", "--repository", "team/*", "--exclude-tags", "^dev-")
    assert result.exit_code == 0, result.stderr
    summary = poll(watcher, "aws")
    assert (summary["repositories"], summary["tags"]) == (2, 2)


def test_calls_stay_within_max_concurrency(ecr: EcrSeed, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(6):
        ecr.create(f"load/r{n}")
        ecr.push(f"load/r{n}", "v1")
    spec = build_spec(
        {
            "name": "aws",
            "provider": "ecr",
            "url": REGISTRY_URL,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "max_concurrency": 2,
            "rate_limit": 1000,
        }
    )
    poller = poller_for(spec)
    assert isinstance(poller, EcrPoller)
    in_flight, peak, lock = [0], [0], threading.Lock()
    real_invoke = poller._invoke

    def counting(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            time.sleep(0.02)  # widen the window so that unbounded calls would overlap
            return real_invoke(operation, params)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(poller, "_invoke", counting)
    listing = run(poller.listing(Scope()))
    assert sorted(listing) == [f"load/r{n}" for n in range(6)]
    assert peak[0] == 2
    assert poller.requests == 7
    assert poller.codes == {"200": 7}
    assert all(
        state.pushed_at and state.pushed_at.tzinfo is UTC for tags in listing.values() for state in tags.values()
    )


def test_calls_are_paced_to_the_rate_limit(aws_env: None) -> None:
    poller, stub = stubbed(rate_limit=20)
    for _ in range(5):
        stub.add_response("describe_images", {"imageDetails": []})

    async def five_repositories() -> None:
        await asyncio.gather(*(poller.tags(f"team/r{n}", lambda _t: True) for n in range(5)))

    started = time.monotonic()
    run(five_repositories())
    assert time.monotonic() - started >= 4 / 20  # five calls, 1/20 s apart at the least
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", ("123456789012", "eu-west-1", False)),
        ("https://123456789012.dkr.ecr.us-gov-west-1.amazonaws.com", ("123456789012", "us-gov-west-1", False)),
        ("https://123456789012.dkr.ecr-fips.us-east-2.amazonaws.com", ("123456789012", "us-east-2", True)),
        ("https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", ("123456789012", "cn-north-1", False)),
        ("http://123456789012.dkr.ecr.eu-west-1.amazonaws.com", None),
        ("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com:8443", None),
        ("https://public.ecr.aws", None),
    ],
)
def test_registry_url_gives_account_and_region(url: str, parsed: tuple[str, str, bool] | None) -> None:
    assert parse_url(url) == parsed


# ---- failures, end to end -----------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_unknown_region_fails_fast_in_one_line(watcher: Watcher, aws_env: None) -> None:
    """No endpoint override: boto3 goes to api.ecr.xx-fake-1.amazonaws.com, which does not resolve."""
    url = f"https://{ACCOUNT}.dkr.ecr.xx-fake-1.amazonaws.com"
    line = one_line_error(add(watcher, "aws", url=url), "registry 'aws'", "region 'xx-fake-1' is probably wrong")
    assert "not found" in line
    assert saved(watcher) == []


def test_tls_failure(watcher: Watcher, moto: MotoServer, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto.url.replace("http://", "https://"))  # it speaks plain HTTP
    one_line_error(add(watcher, "aws"), "registry 'aws'", "TLS error")
    assert saved(watcher) == []


def test_unreachable_endpoint(watcher: Watcher, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", f"http://127.0.0.1:{free_port()}")
    assert add(watcher, "aws", "--no-verify").exit_code == 0
    one_line_error(watcher.cli("registry", "test", "aws"), "registry 'aws'", "unreachable")
    one_line_error(watcher.cli("poll", "aws"), "registry 'aws'", "unreachable")
    assert watcher.stream_entries() == []


@pytest.mark.parametrize(
    ("extra", "url", "fragment"),
    [
        ((), "https://example.com", "is not an ECR registry: use https://ACCOUNT.dkr.ecr.REGION.amazonaws.com"),
        ((), f"https://{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com.evil.example", "is not an ECR registry"),
        ((), "https://12345.dkr.ecr.us-east-1.amazonaws.com", "is not an ECR registry"),
        (("--region", "eu-west-1"), REGISTRY_URL, "does not match the URL's region us-east-1"),
        (("--region", "Europe"), REGISTRY_URL, "is not an AWS region"),
        (("--access-key", ACCESS_KEY), REGISTRY_URL, "--secret-key is missing"),
        (("--username", "bob"), REGISTRY_URL, "--username is not used by provider ecr"),
    ],
)
def test_bad_input_is_one_line(
    watcher: Watcher, aws_env: None, extra: tuple[str, ...], url: str, fragment: str
) -> None:
    result = add(watcher, "aws", *extra, keys=False, url=url)
    one_line_error(result, "registry 'aws'", fragment)
    assert saved(watcher) == []


# ---- pagination and AWS's errors, through botocore's Stubber -------------------------------------------
def test_pagination_of_repositories_and_images(aws_env: None) -> None:
    poller, stub = stubbed()
    page = {"registryId": ACCOUNT, "maxResults": 1000}
    stub.add_response(
        "describe_repositories", {"repositories": [{"repositoryName": "team/b"}], "nextToken": "r1"}, page
    )
    stub.add_response(
        "describe_repositories", {"repositories": [{"repositoryName": "team/a"}]}, page | {"nextToken": "r1"}
    )
    images = page | {"repositoryName": "team/app", "filter": {"tagStatus": "TAGGED"}}
    pushed = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    stub.add_response(
        "describe_images",
        {"imageDetails": [image(sha("1"), "v1", "stable", pushed=pushed), image(sha("2"))], "nextToken": "i1"},
        images,
    )
    stub.add_response(
        "describe_images",
        {"imageDetails": [image(sha("3"), "v2", "dev-2", pushed=pushed)]},
        images | {"nextToken": "i1"},
    )

    async def go() -> tuple[list[object], Any]:
        return await poller.repositories(), await poller.tags("team/app", lambda t: not t.startswith("dev-"))

    repos, tags = run(go())
    stub.assert_no_pending_responses()
    assert repos == ["team/b", "team/a"]
    assert {t: (s.digest, s.pushed_at) for t, s in tags.items()} == {
        "v1": (sha("1"), pushed),
        "stable": (sha("1"), pushed),
        "v2": (sha("3"), pushed),
    }


def test_repository_deleted_between_pages_is_gone(aws_env: None) -> None:
    poller, stub = stubbed()
    stub.add_response("describe_images", {"imageDetails": [image(sha("1"), "v1")], "nextToken": "i1"})
    stub.add_client_error(
        "describe_images",
        "RepositoryNotFoundException",
        f"The repository with name 'team/app' does not exist in the registry with id '{ACCOUNT}'",
        400,
    )
    assert run(poller.tags("team/app", lambda _t: True)) is None


DENIED_HERE = (
    f"User: arn:aws:iam::{ACCOUNT}:user/ci is not authorized to perform: ecr:DescribeRepositories on resource: "
    f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/* because no identity-based policy allows the "
    "ecr:DescribeRepositories action"
)
DENIED_ELSEWHERE = (
    "User: arn:aws:sts::210987654321:assumed-role/ci/run-7 is not authorized to perform: ecr:DescribeRepositories "
    f"on resource: arn:aws:ecr:us-east-1:{ACCOUNT}:repository/* because no resource-based policy allows the "
    "ecr:DescribeRepositories action"
)


@pytest.mark.parametrize(
    ("code", "message", "status", "expected", "fragment"),
    [
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            400,
            errors.AuthError,
            "UnrecognizedClientException",
        ),
        (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.\n\n"
            "The Canonical String for this request should have been\n'POST\n/\n'",
            400,
            errors.AuthError,
            "the secret key does not match the access key",
        ),
        (
            "ExpiredTokenException",
            "The security token included in the request is expired",
            400,
            errors.AuthError,
            "expired",
        ),
        ("AccessDeniedException", DENIED_HERE, 400, errors.PermissionError_, "may not call ecr:DescribeRepositories"),
        ("AccessDeniedException", DENIED_ELSEWHERE, 400, errors.ScopeError, "check the account id in the URL"),
        ("ThrottlingException", "Rate exceeded", 400, errors.RateLimitedError, "ThrottlingException"),
        ("ServerException", "Internal service error", 500, errors.BadResponseError, "ServerException"),
    ],
)
def test_aws_errors_map_to_one_precise_line(
    aws_env: None, code: str, message: str, status: int, expected: type[errors.RegistryError], fragment: str
) -> None:
    poller, stub = stubbed()
    stub.add_client_error("describe_repositories", code, message, status)
    with pytest.raises(expected) as caught:
        run(poller.verify())
    caught.value.registry = "aws"
    text = str(caught.value)
    assert fragment in text
    assert text.startswith(f"registry 'aws': {expected.cause}: ")
    assert "\n" not in text and "arn:" not in text and SECRET_KEY not in text


def test_verify_checks_the_image_listing_permission_too(aws_env: None) -> None:
    poller, stub = stubbed()
    stub.add_response(
        "describe_repositories",
        {"repositories": [{"repositoryName": "team/app"}]},
        {"registryId": ACCOUNT, "maxResults": 1},
    )
    stub.add_client_error(
        "describe_images",
        "AccessDeniedException",
        DENIED_HERE.replace("DescribeRepositories", "DescribeImages").replace("/*", "/team/app"),
        400,
        expected_params={"registryId": ACCOUNT, "repositoryName": "team/app", "maxResults": 1},
    )
    with pytest.raises(errors.PermissionError_, match=r"ecr:DescribeImages"):
        run(poller.verify())
    stub.assert_no_pending_responses()


def test_verify_of_a_named_repository_not_created_yet_passes(aws_env: None) -> None:
    poller, stub = stubbed(repositories=["team/later"])
    stub.add_response("describe_repositories", {"repositories": []})
    stub.add_client_error(
        "describe_images",
        "RepositoryNotFoundException",
        f"The repository with name 'team/later' does not exist in the registry with id '{ACCOUNT}'",
        400,
    )
    run(poller.verify())
    stub.assert_no_pending_responses()  # both calls made (stubbed calls send no HTTP, so `requests` stays 0)


# ---- push times, as AWS sends them (epoch seconds with a fraction), through a fake ECR API -------------
@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local zone far from UTC, so a time read as local time shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_push_times_are_utc_as_ecr_sent_them(
    aws_env: None, local_zone_not_utc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = [1714564800.123456, 1700000000.5, 1714564800, 0.25]
    images = [
        {"registryId": ACCOUNT, "repositoryName": "team/app", "imageDigest": sha(str(i)), "imageTags": [f"v{i}"]}
        | {"imagePushedAt": moment}
        for i, moment in enumerate(sent)
    ]
    with FakeEcrApi(images) as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", api.url)
        poller = ecr_poller()
        raw = poller.client.describe_images(registryId=ACCOUNT, repositoryName="team/app")
        tags = run(poller.tags("team/app", lambda _t: True))
    assert [d["imagePushedAt"].tzinfo for d in raw["imageDetails"]] == [UTC] * len(sent)  # the client's parser
    assert tags is not None
    for i, moment in enumerate(sent):
        pushed = tags[f"v{i}"].pushed_at
        assert pushed is not None and pushed.tzinfo is UTC
        assert pushed == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=moment)
    assert api.targets == ["AmazonEC2ContainerRegistry_V20150921.DescribeImages"] * 2


@pytest.mark.parametrize("moment", [1e20, -1e20, "not a time"])
def test_a_push_time_no_datetime_holds_is_a_bad_response(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, moment: object
) -> None:
    images = [{"repositoryName": "team/app", "imageDigest": sha("1"), "imageTags": ["v1"], "imagePushedAt": moment}]
    with FakeEcrApi(images) as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", api.url)
        poller = ecr_poller()
        with pytest.raises(errors.BadResponseError, match="ECR sent a time that is not one"):
            run(poller.tags("team/app", lambda _t: True))


def test_the_ecr_poller_loads_no_azure_sdk() -> None:
    """The SDK limits it shares a module with (`watcher.registry.sdklimits`) hold azure's policies too, without
    importing the azure SDK: a fresh process that loads the ECR poller has no `azure` module."""
    probe = "import sys, watcher.pollers.ecr; print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]"


def test_what_describe_images_says_is_checked_and_costs_no_request(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DescribeImages' size and media types, as the listing read them: an index, a Helm chart (an artifact)
    and an image are said; a size past MAX_SIZE, a negative or a string one, a media type that is none or
    not a string say nothing, and the listing does not fail; `said` sends no request."""
    oci, docker = "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"
    sent: dict[str, dict[str, Any]] = {
        "multi": {"imageManifestMediaType": "application/vnd.oci.image.index.v1+json", "imageSizeInBytes": 100},
        "chart": {"imageManifestMediaType": oci, "artifactMediaType": "application/vnd.cncf.helm.config.v1+json"},
        "app": {
            "imageManifestMediaType": docker,
            "artifactMediaType": "application/vnd.docker.container.image.v1+json",
        },
        "huge": {"imageSizeInBytes": 2**63, "imageManifestMediaType": "text/html"},
        "typed": {"imageSizeInBytes": "12", "imageManifestMediaType": ["x"], "artifactMediaType": 3},
        "negative": {"imageSizeInBytes": -1},
    }
    images = [image(sha(str(n)), tag) | said for n, (tag, said) in enumerate(sent.items())]
    with FakeEcrApi(images) as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", api.url)
        poller = ecr_poller()

        async def listed_then_said() -> tuple[Any, list[Any]]:
            tags = await poller.tags("team/app", lambda _t: True)
            return tags, await poller.said({sha(str(n)): "team/app" for n in range(len(sent))})

        tags, said = run(listed_then_said())
    assert tags is not None and sorted(tags) == sorted(sent)
    assert {one.digest: (one.kind, one.platforms, one.created, one.size) for one in said} == {
        sha("0"): ("index", None, None, 100),
        sha("1"): ("artifact", None, None, None),
        sha("2"): ("image", None, None, None),
    }
    assert api.targets == ["AmazonEC2ContainerRegistry_V20150921.DescribeImages"]
