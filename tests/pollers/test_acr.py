"""`--provider acr`: basic credentials against a real token-auth registry, Azure AD against the fakes.

ACR's `/oauth2/token` takes Basic credentials like any Distribution token server, so the username and
password mode runs against the real CNCF registry with our token server. The Azure AD mode needs ACR's
own `/acr/v1/` API and an AAD authority, neither of which can run here: `tests/fakes/acr.py` and
`tests/fakes/aad.py` speak their wire formats over TLS with a test CA, and the azure SDK is pointed at
them the standard ways (`AZURE_AUTHORITY_HOST`, `REQUESTS_CA_BUNDLE`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import trustme
from click.testing import Result

from tests.conftest import Watcher
from tests.fakes.aad import FakeAad, write_ca
from tests.fakes.acr import FakeAcr
from tests.support.images import added_custom_data, said_rows, shown_images
from tests.support.registry import free_port
from watcher import errors
from watcher.diff import TagState
from watcher.outbox.events import rfc3339
from watcher.pollers.acr import AcrPoller, Meter
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.hostlimits import HostLimits
from watcher.registry.imagekinds import MAX_PLATFORMS

if TYPE_CHECKING:
    from tests.support.fixtures import RegistryEnv

TENANT, CLIENT_ID, CLIENT_SECRET = "72f988bf-0000-4000-8000-000000000001", "watcher-sp", "sp-s3cret-value"
AZURE_ENV = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
)


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca(ca, tmp_path_factory.mktemp("acr-ca"))


@pytest.fixture
def aad(ca: trustme.CA) -> Iterator[FakeAad]:
    with FakeAad(ca) as authority:
        authority.add_app(TENANT, CLIENT_ID, CLIENT_SECRET)
        yield authority


@pytest.fixture
def acr(ca: trustme.CA, aad: FakeAad) -> Iterator[FakeAcr]:
    with FakeAcr(ca, aad, page_size=2) as registry:
        yield registry


@pytest.fixture
def azure(aad: FakeAad, ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAad:
    """The azure SDK pointed at the fake authority, trusting the fakes' CA, with no ambient Azure login."""
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")  # never a developer's `az login`
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", aad.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    return aad


def fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retries, so a refused connection surfaces at once instead of after the backoff."""
    monkeypatch.setattr(AcrPoller, "default_limits", HostLimits(retries=0))


def aad_args(secret: str = CLIENT_SECRET) -> list[str]:
    return ["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--client-secret", secret]


def add_aad(watcher: Watcher, url: str, *extra: str) -> Result:
    """`registry add acr-aad` with the service principal's AAD credentials."""
    return watcher.add_registry("acr-aad", url, *aad_args(), *extra, provider="acr")


def poll_json(watcher: Watcher, name: str) -> dict[str, Any]:
    result = watcher.cli("poll", name, "--json")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def changes(summary: dict[str, Any]) -> set[tuple[str, ...]]:
    return {(e["change"], e["repository"], e["tag"], e["digest"], e["previous_digest"]) for e in summary["events"]}


def one_line_error(result: Any, name: str, cause: str, *secrets: str) -> str:
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"watcher: registry {name!r}: {cause}: "), lines[0]
    assert "Traceback" not in result.output
    for secret in secrets:
        assert secret not in result.output
    return str(lines[0])


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def references(*architectures: str) -> list[dict[str, str]]:
    """An index's `references` as ACR lists them, a linux platform each, and an attestation's."""
    found = [
        {"digest": f"sha256:{n:064x}", "architecture": arch, "os": "linux"} for n, arch in enumerate(architectures)
    ]
    return [*found, {"digest": "sha256:" + "f" * 64, "architecture": "unknown", "os": "unknown"}]


# -- username and password: the real registry's token flow ---------------------------------------------
def test_basic_credentials_poll_push_retag_delete(
    watcher: Watcher, token_registry: RegistryEnv, unique_repo: str
) -> None:
    client = token_registry.client
    v1 = client.push_image(unique_repo, "v1", seed="one")
    old = client.push_image(unique_repo, "old", seed="old")
    added = watcher.add_registry(
        "acr-basic",
        token_registry.url,
        "--username",
        token_registry.username or "",
        "--password",
        token_registry.password or "",
        "--repository",
        f"{unique_repo}*",
        provider="acr",
    )
    assert added.exit_code == 0, added.stderr
    baseline = poll_json(watcher, "acr-basic")
    assert baseline["baseline"] and baseline["events"] == [] and baseline["tags"] == 2

    v2 = client.push_image(unique_repo, "v2", seed="two")
    client.retag(unique_repo, "v2", "v1")
    client.delete(unique_repo, "old")
    summary = poll_json(watcher, "acr-basic")

    assert changes(summary) == {
        ("added", unique_repo, "v2", v2, ""),
        ("updated", unique_repo, "v1", v2, v1),
        ("removed", unique_repo, "old", old, ""),
    }
    assert [e["tag"] for e in watcher.stream_entries()] == ["old", "v1", "v2"]
    shown = watcher.cli("registry", "show", "acr-basic", "--json")
    assert token_registry.password and token_registry.password not in shown.output
    assert json.loads(shown.stdout)["credentials"]["password"] == "set"


def test_basic_wrong_password_is_refused_in_one_line(watcher: Watcher, token_registry: RegistryEnv) -> None:
    result = watcher.add_registry(
        "acr-bad",
        token_registry.url,
        "--username",
        token_registry.username or "",
        "--password",
        "wrong-Passw0rd",
        provider="acr",
    )
    one_line_error(result, "acr-bad", "credentials refused", "wrong-Passw0rd")
    assert watcher.cli("registry", "list", "--json").stdout.strip() == "[]"


# -- Azure AD: the /acr/v1/ API through the SDK, against the fakes --------------------------------------
def test_aad_poll_push_retag_delete_with_pushed_at(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    app = {tag: acr.push("team/app", tag) for tag in ("v1", "v2", "v3")}
    base = acr.push("base", "latest")
    for name in ("ci/a", "ci/b"):
        acr.push(name, "1")
    added = add_aad(watcher, acr.url, "--rate-limit", "1000")  # a request per new digest: not paced to 15/s
    assert added.exit_code == 0, added.stderr
    baseline = poll_json(watcher, "acr-aad")
    assert baseline["baseline"] and baseline["events"] == []
    assert (baseline["repositories"], baseline["tags"]) == (4, 6)

    v4 = acr.push("team/app", "v4")
    acr.retag("team/app", "v2", "v1")
    acr.untag("team/app", "v3")
    svc = acr.push("new/svc", "1.0")
    acr.attributes[svc] = {"mediaType": OCI_INDEX, "imageSize": 5678, "references": references("amd64", "arm64")}
    odd = acr.push("new/svc", "odd")  # what ACR says of these cannot be believed: nothing of it is stored
    acr.attributes[odd] = {
        "mediaType": OCI_INDEX,
        "imageSize": -1,
        "references": references(*(f"arch{n}" for n in range(MAX_PLATFORMS + 1))),
    }
    long = acr.push("new/svc", "long")
    acr.attributes[long] = {"architecture": "x" * 65, "imageSize": "1", "mediaType": None, "digest": svc}
    acr.delete_repository("base")
    summary = poll_json(watcher, "acr-aad")

    assert changes(summary) == {
        ("added", "team/app", "v4", v4, ""),
        ("updated", "team/app", "v1", app["v2"], app["v1"]),
        ("removed", "team/app", "v3", app["v3"], ""),
        ("added", "new/svc", "1.0", svc, ""),
        ("added", "new/svc", "odd", odd, ""),
        ("added", "new/svc", "long", long, ""),
        ("removed", "base", "latest", base, ""),
    }
    # with Azure AD there is no OCI client: the new digests' platforms are what ACR's manifest properties say
    said = {tag: data["platforms"] for tag, data in added_custom_data(watcher.stream_entries()).items()}
    assert said == {"v4": ["linux/amd64"], "1.0": ["linux/amd64", "linux/arm64"], "odd": [], "long": []}
    platforms = [{"os": "linux", "architecture": arch, "variant": None} for arch in ("amd64", "arm64")]
    assert (
        said_rows(watcher.engine)
        == {
            ("acr-aad", v4): ("image", platforms[:1], None, 1234),  # createdTime is a push time: no build time
            ("acr-aad", app["v2"]): ("image", platforms[:1], None, 1234),  # v1's new digest, of the baseline
            ("acr-aad", svc): ("index", platforms, None, 5678),
            ("acr-aad", odd): ("index", None, None, None),  # too many platforms are none, -1 bytes no size
        }
    )
    shown = shown_images(watcher, "acr-aad")
    assert (shown["1.0"]["platforms"], shown["1.0"]["size"], shown["1.0"]["created"]) == (
        ["linux/amd64", "linux/arm64"],
        5678,
        None,
    )
    pushed = {(e["repository"], e["tag"]): e["pushed_at"] for e in summary["events"]}
    assert pushed[("team/app", "v4")] == rfc3339(acr.repos["team/app"]["v4"].updated)
    assert pushed[("team/app", "v1")] == rfc3339(acr.repos["team/app"]["v1"].updated)
    assert pushed[("new/svc", "1.0")] == rfc3339(acr.repos["new/svc"]["1.0"].updated)
    assert all(pushed.values())  # removed tags keep the time they were pushed
    assert len(watcher.stream_entries()) == 7
    # Catalog and tag lists both needed a second page (the fake serves two names a page).
    assert "/acr/v1/_catalog?last=ci/b" in acr.counters.listing_paths
    assert "/acr/v1/team%2Fapp/_tags?last=v2" in acr.counters.listing_paths


def test_aad_secret_is_never_shown(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    acr.push("app", "v1")
    assert add_aad(watcher, acr.url).exit_code == 0
    shown = watcher.cli("registry", "show", "acr-aad", "--json")
    assert json.loads(shown.stdout)["credentials"]["client_secret"] == "set"
    assert json.loads(shown.stdout)["credentials"]["tenant_id"] == TENANT
    tested = watcher.cli("registry", "test", "acr-aad")
    assert tested.exit_code == 0, tested.stderr
    for output in (shown.output, tested.output, watcher.cli("registry", "list").output):
        assert CLIENT_SECRET not in output


def test_aad_wrong_client_secret_is_refused_in_one_line(
    watcher: Watcher, azure: FakeAad, acr: FakeAcr, ca_file: Path
) -> None:
    # A real `watcher` process: in-process, pytest's log capture would hide the SDK's own warning lines.
    env = watcher.env() | {"REQUESTS_CA_BUNDLE": str(ca_file), "AZURE_AUTHORITY_HOST": azure.url}
    command = ["watcher", "registry", "add", "acr-aad", "--provider", "acr", "--url", acr.url, *aad_args("nope-123")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("watcher: registry 'acr-aad': credentials refused: Azure AD: AADSTS7000215: ")
    assert "nope-123" not in result.stderr and CLIENT_SECRET not in result.stderr
    assert acr.counters.exchanges == 0


def test_aad_unknown_tenant_is_refused(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    result = watcher.add_registry(
        "acr-aad",
        acr.url,
        "--tenant-id",
        "no-such-tenant",
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        provider="acr",
    )
    line = one_line_error(result, "acr-aad", "credentials refused", CLIENT_SECRET)
    assert "no-such-tenant" in line and "tenant id" in line


def test_aad_catalog_forbidden_is_permission_missing(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    acr.push("app", "v1")
    acr.deny("/acr/v1/_catalog")
    result = add_aad(watcher, acr.url)
    line = one_line_error(result, "acr-aad", "permission missing", CLIENT_SECRET)
    assert "HTTP 403" in line and "DENIED" in line


def test_aad_identity_without_a_role_is_permission_missing(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    acr.push("app", "v1")
    acr.grant_nothing()
    result = add_aad(watcher, acr.url)
    line = one_line_error(result, "acr-aad", "permission missing", CLIENT_SECRET)
    assert "catalog: HTTP 401" in line


def test_aad_untrusted_certificate_is_a_tls_error(
    watcher: Watcher, azure: FakeAad, acr: FakeAcr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # the system CAs only
    started = time.monotonic()
    result = add_aad(watcher, acr.url)
    line = one_line_error(result, "acr-aad", "TLS error", CLIENT_SECRET)
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert time.monotonic() - started < 3  # a certificate problem is not retried


def test_aad_unreachable_registry(watcher: Watcher, azure: FakeAad, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_failures(monkeypatch)
    url = f"https://127.0.0.1:{free_port()}"
    result = add_aad(watcher, url)
    line = one_line_error(result, "acr-aad", "unreachable", CLIENT_SECRET)
    assert "Connection refused" in line


def test_aad_unreachable_authority(
    watcher: Watcher, azure: FakeAad, acr: FakeAcr, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_failures(monkeypatch)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"https://127.0.0.1:{free_port()}")
    result = add_aad(watcher, acr.url)
    line = one_line_error(result, "acr-aad", "unreachable", CLIENT_SECRET)
    assert "Azure AD" in line


def test_default_credential_chain_reads_the_environment(
    watcher: Watcher, azure: FakeAad, acr: FakeAcr, monkeypatch: pytest.MonkeyPatch
) -> None:
    acr.push("app", "v1")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    added = watcher.add_registry("acr-env", acr.url, provider="acr")
    assert added.exit_code == 0, added.stderr
    assert poll_json(watcher, "acr-env")["tags"] == 1
    assert azure.token_requests >= 1


def test_no_credentials_anywhere_says_so(watcher: Watcher, azure: FakeAad, acr: FakeAcr) -> None:
    result = watcher.add_registry("acr-none", acr.url, provider="acr")
    line = one_line_error(result, "acr-none", "credentials refused")
    assert "no credential found" in line


# -- token refresh, limits, listing details: the poller itself --------------------------------------------
def aad_spec(url: str, **options: Any) -> RegistrySpec:
    creds = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    spec = RegistrySpec("acr-aad", "acr", url, creds, {"repositories": [], **options})
    AcrPoller.validate(spec)
    return spec


async def _with_poller(spec: RegistrySpec, steps: Any) -> Any:
    poller = AcrPoller(spec)
    try:
        return await steps(poller)
    finally:
        await poller.aclose()


def test_refused_token_is_renewed_once_then_an_auth_error(azure: FakeAad, acr: FakeAcr) -> None:
    acr.push("app", "v1")

    async def steps(poller: AcrPoller) -> None:
        assert await poller.repositories() == ["app"]
        acr.revoke_refresh_tokens()  # as when ACR's refresh token expires mid-poll
        assert set(await poller.tags("app", lambda _t: True) or {}) == {"v1"}
        assert (acr.counters.exchanges, azure.token_requests) == (2, 2)
        acr.revoke_refresh_tokens()
        azure.add_app(TENANT, CLIENT_ID, "rotated-secret")  # and now Azure AD refuses us too
        with pytest.raises(errors.AuthError, match="AADSTS7000215"):
            await poller.tags("app", lambda _t: True)
        assert azure.token_requests == 3  # one renewal, no loop

    asyncio.run(_with_poller(aad_spec(acr.url), steps))


def test_tags_of_a_vanished_repository_are_none_and_filters_apply(azure: FakeAad, acr: FakeAcr) -> None:
    acr.push("app", "v1")
    acr.push("app", "v2-rc")

    async def steps(poller: AcrPoller) -> tuple[Any, ...]:
        kept = await poller.tags("app", lambda tag: "rc" not in tag)
        return kept, await poller.tags("gone", lambda _t: True), poller.requests

    kept, gone, requests = asyncio.run(_with_poller(aad_spec(acr.url), steps))
    assert set(kept) == {"v1"}
    assert kept["v1"] == TagState(acr.repos["app"]["v1"].digest, acr.repos["app"]["v1"].updated)
    assert gone is None
    assert requests >= 4  # challenge, exchange, token, listing for the first call


def test_concurrency_is_bounded_by_max_concurrency(azure: FakeAad, acr: FakeAcr) -> None:
    for n in range(6):
        acr.push(f"repo{n}", "v1")
    spec = aad_spec(acr.url, max_concurrency=2, rate_limit=1000)

    async def steps(poller: AcrPoller) -> int:
        inside = peak = 0
        original = poller.api._call_once_more_on_401  # type: ignore[union-attr]

        def counting(what: str, call: Any) -> Any:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            try:
                return original(what, call)
            finally:
                inside -= 1

        poller.api._call_once_more_on_401 = counting  # type: ignore[union-attr,method-assign]
        listing = await poller.listing(Scope())
        assert len(listing) == 6
        return peak

    assert asyncio.run(_with_poller(spec, steps)) == 2


def test_meter_spaces_requests_by_the_rate_limit() -> None:
    meter = Meter(requests_per_second=50)
    started = time.monotonic()
    for _ in range(6):
        meter.on_request(None)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 5 / 50


def test_meter_tallies_each_attempt_by_status() -> None:
    meter = Meter(requests_per_second=0)
    for status in (401, 200, 200):
        meter.on_response(None, SimpleNamespace(http_response=SimpleNamespace(status_code=status)))  # type: ignore[arg-type]
    meter.on_exception(None)  # type: ignore[arg-type]
    assert meter.counts.codes == {"200": 2, "401": 1, "error": 1}
    assert meter.counts.total == 4


# -- what `registry add` accepts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--username", "u", "--password", "p", "--tenant-id", "t"], "use either --username/--password or"),
        (["--tenant-id", "t", "--client-id", "c"], "--client-secret is missing"),
        (["--client-secret", "hidden-value"], "--tenant-id is missing"),
        (["--username", "u"], "--password is missing"),
        (["--region", "westeurope"], "--region is not used by provider acr"),
    ],
)
def test_credential_combinations_are_checked(watcher: Watcher, args: list[str], message: str) -> None:
    result = watcher.add_registry("x", "https://x.azurecr.io", *args, provider="acr")
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "hidden-value" not in result.output


def test_azure_ad_needs_https(watcher: Watcher) -> None:
    result = watcher.add_registry("x", "http://x.azurecr.io", *aad_args(), provider="acr")
    assert result.exit_code == 1 and "needs an https:// URL" in result.stderr
