"""`--provider gcr` against a REAL token-auth registry whose token server accepts user `oauth2accesstoken`
with an access token minted by the fake Google token endpoint from a service-account key made here.

The `manifest`-map path runs through `tests/fakes/gcr.py`, a thin proxy that adds GCR's tag-list extension
to the real registry's answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import Result
from google.auth.exceptions import RefreshError

from tests.conftest import Watcher
from tests.fakes.gcr import FakeGcr
from tests.fakes.google_token import FakeGoogleTokenServer, ServiceAccount, rsa_key
from tests.support.images import added_custom_data, ensure_images, said_rows, shown_images
from tests.support.registry import RegistryClient, free_port
from tests.support.token_server import Grant, TokenServer
from watcher import errors
from watcher.diff import TagState
from watcher.pollers.gcr import GcrPoller, read_tag_pages, refresh_error, uploaded_at
from watcher.registrations.forms import build_spec
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec

if TYPE_CHECKING:
    from tests.support.fixtures import RegistryEnv, RegistryFactory

USERNAME, PASSWORD = "alice", "s3cret-pass"  # the pusher's login (tests.support.fixtures)
PROJECT = "watcher-proj"
#: an image's build time, as GCR's `timeCreatedMs` says it
BUILT_MS, BUILT = "1764576000123", "2025-12-01T08:00:00.123Z"


class Clock:
    """A monotonic clock the test moves by hand (token lifetimes without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ExpiringRepositoryTokens(TokenServer):
    """Issues already-expired registry tokens for repository scopes once `expire` is set: the registry then
    answers 401 to a request that carries a token, the case where the poller refreshes its credentials."""

    expire = False

    def issue_token(
        self,
        subject: str,
        grants: tuple[Grant, ...] | list[Grant],
        *,
        service: str | None = None,
        expires_in: int | None = None,
        issued_at: int | None = None,
    ) -> str:
        if self.expire and any(g.type == "repository" for g in grants):
            issued_at = int(time.time()) - 7200
        return super().issue_token(subject, grants, service=service, expires_in=expires_in, issued_at=issued_at)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def google() -> Iterator[FakeGoogleTokenServer]:
    with FakeGoogleTokenServer() as server:
        yield server


@pytest.fixture
def account(google: FakeGoogleTokenServer) -> ServiceAccount:
    sa = ServiceAccount(PROJECT)
    google.register(sa)
    return sa


@pytest.fixture
def token_server(google: FakeGoogleTokenServer) -> Iterator[TokenServer]:
    def google_token(user: str, password: str) -> bool:
        return user == "oauth2accesstoken" and google.accepts(password)

    with ExpiringRepositoryTokens({USERNAME: PASSWORD}, check=google_token) as server:
        yield server


@pytest.fixture
def gcr(registry_factory: RegistryFactory, token_server: TokenServer) -> RegistryEnv:
    return registry_factory("token", token_server=token_server)


def write_key(tmp_path: Path, info: dict[str, Any], name: str = "key.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(info))
    return path


@pytest.fixture
def key_file(tmp_path: Path, account: ServiceAccount, google: FakeGoogleTokenServer) -> Path:
    return write_key(tmp_path, account.info(google.token_uri))


def add(watcher: Watcher, url: str, key: Path | str, *extra: str, project: str = PROJECT) -> Result:
    json_key = f"@{key}" if isinstance(key, Path) else key
    return watcher.add_registry("g", url, "--project-id", project, "--json-key", json_key, *extra, provider="gcr")


def poll(watcher: Watcher) -> dict[str, Any]:
    result = watcher.cli("poll", "g", "--json")
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def changes(summary: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    return [(e["change"], e["repository"], e["tag"], e["digest"], e["previous_digest"]) for e in summary["events"]]


def one_line_failure(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert line.startswith("watcher: registry 'g': "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def spec_for(url: str, key: Path, **options: Any) -> Any:
    return build_spec(
        {"name": "g", "provider": "gcr", "url": url, "project_id": PROJECT, "json_key": f"@{key}", **options}
    )


# -- baseline → push → retag → delete through the real token-auth registry (HEAD path) -------------
def test_lifecycle_with_service_account_key(
    watcher: Watcher,
    gcr: RegistryEnv,
    key_file: Path,
    google: FakeGoogleTokenServer,
    token_server: TokenServer,
    account: ServiceAccount,
) -> None:
    repo = f"{PROJECT}/app"
    first = gcr.client.push_image(repo, "v1")
    outputs = [add(watcher, gcr.url, key_file)]
    assert outputs[-1].exit_code == 0, outputs[-1].stderr
    outputs.append(watcher.cli("registry", "test", "g"))
    assert outputs[-1].exit_code == 0, outputs[-1].stderr

    baseline = poll(watcher)
    assert (baseline["baseline"], baseline["tags"], baseline["events"]) == (True, 1, [])

    second = gcr.client.push_image(repo, "v2")
    pushed = poll(watcher)
    assert changes(pushed) == [("added", repo, "v2", second, "")]
    assert pushed["events"][0]["pushed_at"] == ""  # a plain registry has no `manifest` map: HEAD, no time

    gcr.client.retag(repo, "v2", "v1")
    assert changes(poll(watcher)) == [("updated", repo, "v1", second, first)]

    gcr.client.delete(repo, "v2")  # by digest: v1 and v2 both go
    assert changes(poll(watcher)) == [("removed", repo, "v1", second, ""), ("removed", repo, "v2", second, "")]
    assert [e["change"] for e in watcher.stream_entries()] == ["added", "updated", "removed", "removed"]

    # the registry's token realm saw the Google access token as the password of oauth2accesstoken
    google_logins = [r for r in token_server.requests if r.username == "oauth2accesstoken"]
    assert google_logins and all(r.status == 200 for r in google_logins)
    assert google.presented and set(google.presented) <= {i.token for i in google.issued}
    assert google.errors == []

    outputs += [watcher.cli("registry", "show", "g", "--json"), watcher.cli("registry", "show", "g")]
    shown = json.loads(outputs[-2].stdout)
    assert shown["credentials"] == {"json_key": "set"}
    assert shown["options"]["project_id"] == PROJECT
    seen = "".join(r.stdout + r.stderr for r in outputs) + json.dumps(watcher.stream_entries())
    for secret in [i.token for i in google.issued] + [account.private_key_pem().splitlines()[1], account.key_id]:
        assert secret not in seen


# -- GCR's `manifest` map: digests and push times in one request per repository ---------------------
@pytest.mark.parametrize("millis_as_int", [False, True], ids=["gcr-string-ms", "artifact-registry-int-ms"])
def test_manifest_map_gives_digests_and_push_times(
    watcher: Watcher, gcr: RegistryEnv, key_file: Path, millis_as_int: bool
) -> None:
    repo = f"{PROJECT}/api"
    with (
        FakeGcr(gcr.url, millis_as_int=millis_as_int) as fake,
        RegistryClient(fake.url, username=USERNAME, password=PASSWORD) as pusher,
    ):
        first = pusher.push_image(repo, "v1")
        assert add(watcher, fake.url, key_file).exit_code == 0
        assert poll(watcher)["baseline"]

        before = now_ms()
        second = pusher.push_image(repo, "v2")
        after = now_ms()
        fake.entries[second] = {"timeCreatedMs": BUILT_MS, "imageSizeBytes": "123456"}  # as GCR says them
        heads, gets = fake.count("HEAD", "/manifests/"), fake.count("GET", "/manifests/")
        pushed = poll(watcher)
        assert changes(pushed) == [("added", repo, "v2", second, "")]
        assert before <= parse(pushed["events"][0]["pushed_at"]) <= after
        assert fake.count("HEAD", "/manifests/") == heads  # the map gave the digest: no HEAD per tag
        # ... and its build time, size and kind: the event says the build time, no manifest is read
        assert fake.count("GET", "/manifests/") == gets
        assert added_custom_data(watcher.stream_entries())["v2"]["created"] == BUILT
        assert said_rows(watcher.engine)[("g", second)] == ("image", None, parse(BUILT), 123456)
        shown = shown_images(watcher, "g")["v2"]
        assert (shown["created"], shown["size"], shown["platforms"]) == (BUILT, 123456, [])

        pusher.retag(repo, "v2", "v1")
        moved = poll(watcher)
        assert changes(moved) == [("updated", repo, "v1", second, first)]
        assert moved["events"][0]["pushed_at"] == pushed["events"][0]["pushed_at"]  # the image's upload time

        third = pusher.push_image(repo, "v3")
        fake.hide.add(third)  # not in the map: the poller falls back to HEAD for this tag only
        heads = fake.count("HEAD", "/manifests/")
        hidden = poll(watcher)
        assert changes(hidden) == [("added", repo, "v3", third, "")]
        assert hidden["events"][0]["pushed_at"] == ""
        assert fake.count("HEAD", "/manifests/") == heads + 1

        # a map entry no one can believe: nothing of it is stored, the poll goes on, the manifest is read
        fourth = pusher.push_image(repo, "v4")
        fake.entries[fourth] = {"timeCreatedMs": "99999999999999", "imageSizeBytes": str(2**63), "mediaType": 5}
        assert changes(poll(watcher)) == [("added", repo, "v4", fourth, "")]
        assert ("g", fourth) not in said_rows(watcher.engine)
        assert shown_images(watcher, "g")["v4"]["platforms"] == ["linux/amd64"]  # verified, from the bytes

    if not millis_as_int:  # what GCR said is believed for this registry alone
        plain = watcher.add_registry("plain", gcr.url, "--username", USERNAME, "--password", PASSWORD)
        assert plain.exit_code == 0, plain.output
        assert watcher.cli("poll", "plain").exit_code == 0  # a baseline: nothing described
        assert (shown_images(watcher, "plain")["v2"]["size"], shown_images(watcher, "g")["v2"]["size"]) == (
            None,
            123456,
        )
        spec = RegistrySpec("plain", "oci", gcr.url, {"username": USERNAME, "password": PASSWORD})
        assert ensure_images(watcher.engine, spec, {second: repo}).stored == [second]  # verified: everyone's
        verified = shown_images(watcher, "plain")["v2"]
        assert verified["size"] not in (None, 123456) and verified["platforms"] == ["linux/amd64"]
        assert shown_images(watcher, "g")["v2"]["size"] == verified["size"]
        assert (verified["created"], shown_images(watcher, "g")["v2"]["created"]) == ("1970-01-01T00:00:00.000Z",) * 2


def now_ms() -> datetime:
    millis = time.time_ns() // 1_000_000
    return datetime.fromtimestamp(millis / 1000, UTC)


def parse(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339)


def test_tag_pages_parse_gcr_and_artifact_registry_maps() -> None:
    pages = [
        {
            "name": "p/app",
            "tags": ["a", "b", "c"],
            "manifest": {
                "sha256:1": {"tag": ["a"], "timeUploadedMs": "1552917295327"},
                "sha256:2": {"tag": ["b"], "timeUploadedMs": 1552917295328},
                "sha256:3": {"tag": [], "timeUploadedMs": "1"},  # untagged: ignored
                "sha256:4": {"tag": ["a"], "timeUploadedMs": "1000"},  # older entry for `a` loses
            },
        },
        {"tags": ["d"], "manifest": {"sha256:5": {"tag": ["d"], "timeUploadedMs": "junk"}}},
    ]
    names, known = read_tag_pages(pages, "p/app")
    assert names == ["a", "b", "c", "d"]
    assert known == {
        "a": TagState("sha256:1", datetime(2019, 3, 18, 13, 54, 55, 327000, UTC)),
        "b": TagState("sha256:2", datetime(2019, 3, 18, 13, 54, 55, 328000, UTC)),
        "d": TagState("sha256:5", None),
    }
    assert [uploaded_at(v) for v in (True, None, 0, "-5", 1.5)] == [None] * 5
    with pytest.raises(errors.BadResponseError, match="'manifest' is not an object"):
        read_tag_pages([{"tags": [], "manifest": []}], "p/app")
    with pytest.raises(errors.BadResponseError, match="malformed"):
        read_tag_pages([{"tags": [], "manifest": {"sha256:1": "x"}}], "p/app")


# -- project scoping ------------------------------------------------------------------------------
def test_only_the_projects_repositories_are_watched(
    watcher: Watcher, gcr: RegistryEnv, tmp_path: Path, google: FakeGoogleTokenServer
) -> None:
    ci = ServiceAccount("ci-keys", name="ci")  # a key made in another project is fine
    google.register(ci)
    key_file = write_key(tmp_path, ci.info(google.token_uri))
    for repo in (f"{PROJECT}/app", f"{PROJECT}/team/svc", "other-proj/app", f"{PROJECT}x/app"):
        gcr.client.push_image(repo, "v1")
    assert add(watcher, gcr.url, key_file, "--emit-existing").exit_code == 0
    summary = poll(watcher)
    assert sorted(e["repository"] for e in summary["events"]) == [f"{PROJECT}/app", f"{PROJECT}/team/svc"]

    # globs are matched against the full path, project included (as in events)
    watcher.cli("registry", "remove", "g")
    assert add(watcher, gcr.url, key_file, "--emit-existing", "--repository", f"{PROJECT}/team/*").exit_code == 0
    assert [e["repository"] for e in poll(watcher)["events"]] == [f"{PROJECT}/team/svc"]


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [("other-proj/*", "'watcher-proj/*'"), ("app", "'watcher-proj/app'"), (PROJECT, "'watcher-proj/watcher-proj'")],
)
def test_repository_outside_the_project_is_refused(watcher: Watcher, key_file: Path, pattern: str, hint: str) -> None:
    result = add(watcher, "https://gcr.io", key_file, "--repository", pattern, "--no-verify")
    one_line_failure(result, f"--repository {pattern!r} is outside project {PROJECT!r}", hint)


def test_wrong_project_is_named(watcher: Watcher, gcr: RegistryEnv, key_file: Path) -> None:
    gcr.client.push_image("other-proj/app", "v1")
    result = add(watcher, gcr.url, key_file)
    one_line_failure(result, "not found", f"project {PROJECT!r} has no repositories", "(other-proj)", "--project-id")
    assert json.loads(watcher.cli("registry", "list", "--json").stdout) == []


# -- credentials: refused, unreachable, malformed -------------------------------------------------
def test_key_the_token_endpoint_refuses(
    watcher: Watcher, gcr: RegistryEnv, tmp_path: Path, account: ServiceAccount, google: FakeGoogleTokenServer
) -> None:
    replaced = write_key(tmp_path, account.info(google.token_uri, key=rsa_key(1)))  # a key Google no longer has
    result = add(watcher, gcr.url, replaced)
    line = one_line_failure(result, "credentials refused", "invalid_grant: Invalid JWT Signature.")
    assert "PRIVATE KEY" not in line and account.key_id not in line
    assert google.errors == ["invalid_grant"] and google.issued == []
    assert json.loads(watcher.cli("registry", "list", "--json").stdout) == []


def test_registry_refusing_the_access_token(
    watcher: Watcher, registry_factory: RegistryFactory, key_file: Path, google: FakeGoogleTokenServer
) -> None:
    with TokenServer({USERNAME: PASSWORD}, check=lambda _user, _password: False) as refusing:
        env = registry_factory("token", token_server=refusing)
        result = add(watcher, env.url, key_file)
    line = one_line_failure(result, "credentials refused", "HTTP 401")
    assert google.issued and google.issued[0].token not in line


def test_token_endpoint_unreachable(
    watcher: Watcher, gcr: RegistryEnv, tmp_path: Path, account: ServiceAccount
) -> None:
    token_uri = f"http://127.0.0.1:{free_port()}/token"
    result = add(watcher, gcr.url, write_key(tmp_path, account.info(token_uri)))
    one_line_failure(result, "unreachable", f"Google token endpoint {token_uri}", "Connection refused")


BOGUS_PEM = "-----BEGIN PRIVATE KEY-----\nTUlJQm9ndXNLZXlEYXRh\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"json_key": None}, "--json-key is missing"),
        ({"project": ""}, "--project-id is missing"),
        ({"project": "My_Project"}, "--project-id 'My_Project' is not a Google Cloud project id"),
        ({"json_key": "key.json"}, "--json-key is not JSON (line 1, column 1): pass the key file as --json-key @"),
        ({"json_key": "[1]"}, "--json-key is not a JSON object"),
        (
            {"type": "authorized_user"},
            "--json-key is a credential of type 'authorized_user', not a service-account key",
        ),
        ({"drop": ["private_key", "client_email"]}, "the service-account key lacks client_email, private_key"),
        ({"private_key": BOGUS_PEM}, "the key's private_key is not a valid PEM RSA private key"),
        ({"token_uri": "file:///etc/passwd"}, "the key's token_uri is not an http(s) URL"),
        ({"extra": ["--username", "bob"]}, "--username is not used by provider gcr"),
    ],
)
def test_bad_input_is_one_line_without_the_key(
    watcher: Watcher, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    account = ServiceAccount(PROJECT)
    info: dict[str, Any] = account.info("https://oauth2.googleapis.com/token")
    info.update({k: v for k, v in change.items() if k in ("type", "private_key", "token_uri")})
    for field in change.get("drop", []):
        del info[field]
    key: Path | str = change["json_key"] if change.get("json_key") else write_key(tmp_path, info)
    extra = ["--no-verify", *change.get("extra", [])]
    if change.get("json_key", "") is None:
        result = watcher.cli("registry", "add", "g", "--provider", "gcr", "--project-id", PROJECT, *extra)
    else:
        result = add(watcher, "https://gcr.io", key, *extra, project=change.get("project", PROJECT))
    line = one_line_failure(result, expected)
    assert "PRIVATE KEY" not in line and "TUlJQm9n" not in line and account.key_id not in line


def test_refresh_errors_map_to_causes() -> None:
    uri = "https://oauth2.googleapis.com/token"
    busy = RefreshError("server_error: try later", {}, retryable=True)
    empty = RefreshError("No access token in response.", {})
    refused = RefreshError("invalid_grant: account not found", {})
    assert isinstance(refresh_error(busy, uri), errors.BadResponseError)
    assert isinstance(refresh_error(empty, uri), errors.BadResponseError)
    assert str(refresh_error(refused, uri)) == (
        "credentials refused: Google token endpoint refused the service-account key (invalid_grant: account not found)"
    )


# -- token lifetimes (one poller, a clock moved by hand) --------------------------------------------
def test_access_token_is_refreshed_before_it_expires(
    gcr: RegistryEnv, key_file: Path, google: FakeGoogleTokenServer
) -> None:
    google.expires_in = 120  # shorter than the 300 s margin: refresh at half its life, not on every use
    clock = Clock()
    gcr.client.push_image(f"{PROJECT}/a", "v1")

    async def scenario() -> list[int]:
        poller = GcrPoller(spec_for(gcr.url, key_file))
        poller.google.clock = clock
        hits = []
        try:
            for repo, advance in ((None, 0.0), ("b", 30.0), ("c", 31.0)):
                clock.now += advance
                if repo:  # a new repository needs a new registry token, so the realm sees our password
                    gcr.client.push_image(f"{PROJECT}/{repo}", "v1")
                listing = await poller.listing(Scope())
                assert f"{PROJECT}/{repo or 'a'}" in listing
                hits.append(google.hits)
        finally:
            await poller.aclose()
        return hits

    assert asyncio.run(scenario()) == [1, 1, 2]
    assert google.presented[-1] == google.issued[-1].token  # the realm was shown the new token


def test_registry_401_after_refresh_is_an_auth_error_not_a_loop(
    gcr: RegistryEnv, key_file: Path, google: FakeGoogleTokenServer, token_server: ExpiringRepositoryTokens
) -> None:
    clock = Clock()
    gcr.client.push_image(f"{PROJECT}/a", "v1")

    async def scenario() -> None:
        poller = GcrPoller(spec_for(gcr.url, key_file))
        poller.google.clock = clock
        try:
            await poller.listing(Scope())
            clock.now += 60  # the Google token is still valid, just not brand new
            gcr.client.push_image(f"{PROJECT}/b", "v1")
            token_server.expire = True
            with pytest.raises(errors.AuthError, match="HTTP 401"):
                await poller.listing(Scope())
        finally:
            await poller.aclose()

    asyncio.run(scenario())
    assert google.hits == 2  # the first token, and exactly one refresh on the 401
    asked = [r for r in token_server.requests if f"repository:{PROJECT}/b:pull" in r.scopes]
    assert len(asked) == 2
