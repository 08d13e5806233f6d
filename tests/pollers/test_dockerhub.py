"""`--provider dockerhub` end to end: the fake Hub API lists what a REAL token-auth registry holds.

Pushes, retags and deletes go to the real registry; the fake Hub (tests/fakes/dockerhub.py) reads that
registry's storage, so both sides always agree. The watcher reaches the registry through a recording proxy
(tests/support/faults.py), which shows which manifest requests it made: a HEAD where the API gave no
digest, nothing at all where it did.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest

from tests.conftest import Watcher
from tests.fakes.dockerhub import FakeDockerHub
from tests.support.cdevents import validate_cloudevent
from tests.support.faults import FaultProxy
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv, RegistryFactory
from tests.support.images import added_custom_data, said_rows, shown_images
from tests.support.registry import free_port
from tests.support.token_server import TokenServer
from watcher.pollers.dockerhub import API_URL_ENV, usable_seconds
from watcher.registry.hostlimits import quota_left, retry_after_seconds


@dataclass
class Hub:
    """The fake Hub API, the real registry behind it, the proxy the watcher uses, and a fresh namespace."""

    api: FakeDockerHub
    registry: RegistryEnv
    proxy: FaultProxy
    namespace: str

    def push(self, repo: str, tag: str, seed: str | None = None) -> str:
        return self.registry.client.push_image(f"{self.namespace}/{repo}", tag, seed=seed or f"{repo}:{tag}")

    def add(self, watcher: Watcher, *extra: str, password: str = PASSWORD, name: str = "hub") -> list[str]:
        args = ["registry", "add", name, "--provider", "dockerhub", "--url", self.proxy.url]
        args += ["--username", USERNAME, "--password", password, "--namespace", self.namespace, *extra]
        return args

    def manifest_requests(self) -> list[tuple[str, str]]:
        """Manifests asked for by tag (one by digest is a new image's metadata: `watcher.polling.images`)."""
        return [
            (m, path) for m, path in self.proxy.requests if "/manifests/" in path and "/manifests/sha256:" not in path
        ]


@contextmanager
def hub_on(registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    namespace = f"org{secrets.token_hex(4)}"
    users = registry.token_server.users if registry.token_server else {}
    api = FakeDockerHub(registry.server.storage_dir, users, namespaces={namespace})
    proxy = FaultProxy(registry.url)
    monkeypatch.setenv(API_URL_ENV, api.url)
    try:
        yield Hub(api, registry, proxy, namespace)
    finally:
        proxy.close()
        api.close()


@pytest.fixture
def hub(token_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """Hub in front of the session's token-auth registry (user alice)."""
    with hub_on(token_registry, monkeypatch) as made:
        yield made


@pytest.fixture
def public_hub(registry_factory: RegistryFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """Hub in front of a registry whose token server gives anonymous clients pull tokens, as Docker Hub's does."""
    with TokenServer({USERNAME: PASSWORD}, anonymous_pull=True) as tokens:
        env = registry_factory("token", token_server=tokens)
        with hub_on(env, monkeypatch) as made:
            yield made


def ok(result: object) -> None:
    assert getattr(result, "exit_code", None) == 0, getattr(result, "output", result)


def poll(watcher: Watcher, name: str = "hub") -> dict:
    result = watcher.cli("poll", name, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_failure(result: object, *needles: str) -> str:
    """The command failed with one line on stderr holding every needle; no traceback."""
    assert getattr(result, "exit_code", 0) != 0
    stderr: str = getattr(result, "stderr", "")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def changes(report: dict) -> list[tuple[str, str, str]]:
    return [(e["change"], e["repository"], e["tag"]) for e in report["events"]]


def api_tag(hub: Hub, repo: str, tag: str) -> dict:
    """What the Hub API says about one tag (read straight from the fake, outside the watcher)."""
    url = f"{hub.api.url}/v2/namespaces/{hub.namespace}/repositories/{repo}/tags?page_size=100"
    entries = httpx.get(url).json()["results"]
    return next(e for e in entries if e["name"] == tag)


# ---- the whole cycle --------------------------------------------------------------------------------------
def test_baseline_push_retag_delete_poll(watcher: Watcher, hub: Hub) -> None:
    ns = hub.namespace
    v1 = hub.push("app", "v1")
    hub.registry.client.retag(f"{ns}/app", "v1", "latest")
    hub.push("api", "1.0")
    ok(watcher.cli(*hub.add(watcher)))
    assert hub.api.logins == 1

    baseline = poll(watcher)
    assert baseline["baseline"] is True and baseline["events"] == []
    assert (baseline["repositories"], baseline["tags"]) == (2, 3)

    v2 = hub.push("app", "v2")
    hub.registry.client.retag(f"{ns}/app", "v2", "latest")  # latest moves from v1 to v2
    hub.registry.client.delete(f"{ns}/api", "1.0")  # the repository's only tag
    hub.push("new", "0.1")  # a new repository: its tags are added
    arm = hub.registry.client.push_image(f"{ns}/new", "arm", platform="linux/arm64")
    multi = hub.registry.client.push_index(f"{ns}/new", "multi", [hub.push("new", "amd"), arm])
    hostile = hub.push("new", "odd")  # what Hub says of it cannot be believed: nothing of it is kept
    odd = [{"os": "linux", "architecture": f"arch{n}"} for n in range(10_000)]
    hub.api.entries[(f"{ns}/new", "odd")] = {"images": odd, "full_size": -1, "media_type": 7, "content_type": []}
    hub.api.entries[(f"{ns}/new", "amd")] = {"images": [{"os": "linux", "architecture": "x" * 65}], "full_size": 2**63}
    report = poll(watcher)
    # each repository commits on its own: across repositories the order is the order they committed in
    assert sorted(changes(report)) == [
        ("added", f"{ns}/app", "v2"),
        ("added", f"{ns}/new", "0.1"),
        ("added", f"{ns}/new", "amd"),
        ("added", f"{ns}/new", "arm"),
        ("added", f"{ns}/new", "multi"),
        ("added", f"{ns}/new", "odd"),
        ("removed", f"{ns}/api", "1.0"),
        ("updated", f"{ns}/app", "latest"),
    ]
    # what Hub's tag entries say of each new image is in its event and in `watcher images`: no manifest read
    said = {tag: data["platforms"] for tag, data in added_custom_data(watcher.stream_entries()).items()}
    assert said == {"v2": ["linux/amd64"], "0.1": ["linux/amd64"], "arm": ["linux/arm64"]} | {
        "multi": ["linux/amd64", "linux/arm64"],
        "amd": [],  # an over-long architecture is no platform, a size past MAX_SIZE no size
        "odd": ["linux/amd64"],  # nothing Hub said was kept: read from the manifest and config, verified
    }
    rows = said_rows(watcher.engine)
    assert rows[("hub", multi)][:2] == (
        "index",
        [{"os": "linux", "architecture": p, "variant": None} for p in ("amd64", "arm64")],
    )
    assert rows[("hub", v2)][0] == "image" and rows[("hub", v2)][3] > 0
    assert ("hub", hostile) not in rows and rows[("hub", arm)][3] == api_tag(hub, "new", "arm")["full_size"]
    images = shown_images(watcher, "hub")
    assert (images["multi"]["platforms"], images["arm"]["size"]) == (
        ["linux/amd64", "linux/arm64"],
        rows[("hub", arm)][3],
    )
    assert {path for _, path in hub.proxy.requests if "/manifests/sha256:" in path} == {
        f"/v2/{ns}/new/manifests/{hostile}"
    }
    moved = next(e for e in report["events"] if e["change"] == "updated")
    added = next(e for e in report["events"] if e["tag"] == "v2")
    assert (moved["digest"], moved["previous_digest"]) == (v2, v1)
    pushed = datetime.fromisoformat(api_tag(hub, "app", "v2")["tag_last_pushed"])
    in_ms = pushed.replace(microsecond=pushed.microsecond // 1000 * 1000)  # events carry milliseconds
    assert datetime.fromisoformat(added["pushed_at"]) == in_ms  # pushed_at is the API's tag_last_pushed

    entries = watcher.stream_entries()
    assert sorted((e["change"], e["repository"], e["tag"]) for e in entries) == sorted(changes(report))
    for entry in entries:
        validate_cloudevent(json.loads(entry["cloudevent"]))
        assert entry["registry"] == "hub" and entry["pushed_at"]

    assert poll(watcher)["events"] == []
    # Every digest came from the API: the registry was pinged by `registry add`, never asked for a manifest.
    assert hub.manifest_requests() == []
    shown = watcher.cli("registry", "show", "hub", "--json")
    ok(shown)
    assert PASSWORD not in shown.output and json.loads(shown.stdout)["options"]["namespace"] == ns


def test_a_tag_without_digest_in_the_api_is_resolved_by_head(watcher: Watcher, hub: Hub) -> None:
    ns = hub.namespace
    v1 = hub.push("app", "v1")
    other = hub.push("app", "v2")
    hub.api.omit_digest.add((f"{ns}/app", "v2"))
    ok(watcher.cli(*hub.add(watcher, "--emit-existing")))
    report = poll(watcher)
    assert sorted((e["tag"], e["digest"]) for e in report["events"]) == [("v1", v1), ("v2", other)]
    assert {e["tag"]: bool(e["pushed_at"]) for e in report["events"]} == {"v1": True, "v2": True}
    requests = hub.manifest_requests()
    assert requests and set(requests) == {("HEAD", f"/v2/{ns}/app/manifests/v2")}  # a HEAD, never a GET


def test_pagination_follows_next_links(watcher: Watcher, hub: Hub) -> None:
    hub.api.max_page_size = 2
    digest = hub.push("app", "t0")
    for i in range(1, 5):
        hub.registry.client.retag(f"{hub.namespace}/app", "t0", f"t{i}")
    for repo in ("b", "c"):
        hub.push(repo, "v1")
    ok(watcher.cli(*hub.add(watcher, "--emit-existing")))
    report = poll(watcher)
    app = sorted(e["tag"] for e in report["events"] if e["repository"].endswith("/app"))
    assert app == ["t0", "t1", "t2", "t3", "t4"] and report["repositories"] == 3
    assert {e["digest"] for e in report["events"] if e["repository"].endswith("/app")} == {digest}
    pages = {r.query for r in hub.api.requests_to(f"/{hub.namespace}/repositories/app/tags")}
    assert {"page_size=100", "page=2&page_size=2", "page=3&page_size=2"} <= pages


def test_the_default_namespace_is_the_username(watcher: Watcher, hub: Hub) -> None:
    repo = f"{USERNAME}/app-{secrets.token_hex(4)}"
    hub.registry.client.push_image(repo, "v1")
    args = ["registry", "add", "hub", "--provider", "dockerhub", "--url", hub.proxy.url]
    ok(watcher.cli(*args, "--username", USERNAME, "--password", PASSWORD, "--repository", f"{repo}*"))
    report = poll(watcher)
    assert (report["repositories"], report["tags"]) == (1, 1)
    assert hub.api.requests_to(f"/v2/repositories/{USERNAME}/")


def test_anonymous_access_needs_a_namespace(watcher: Watcher, public_hub: Hub) -> None:
    hub = public_hub
    hub.push("app", "v1")
    base = ["registry", "add", "hub", "--provider", "dockerhub", "--url", hub.proxy.url]
    one_line_failure(watcher.cli(*base), "--namespace is missing")
    ok(watcher.cli(*base, "--namespace", hub.namespace))
    assert (poll(watcher)["tags"], hub.api.logins) == (1, 0)
    assert all(r.user is None for r in hub.api.records)


# ---- errors -------------------------------------------------------------------------------------------------
def test_a_wrong_password_is_refused_in_one_line(watcher: Watcher, hub: Hub) -> None:
    result = watcher.cli(*hub.add(watcher, password="not-the-password"))
    line = one_line_failure(result, "registry 'hub'", "credentials refused")
    assert "not-the-password" not in result.output + line
    assert json.loads(watcher.cli("registry", "list", "--json").stdout) == []


def test_an_unknown_namespace_is_one_line(watcher: Watcher, hub: Hub) -> None:
    """Hub lists a namespace that does not exist as an empty one; its profile routes tell them apart."""
    args = hub.add(watcher)
    args[args.index("--namespace") + 1] = "nosuchns"
    one_line_failure(watcher.cli(*args), "registry 'hub'", "namespace 'nosuchns' does not exist on Docker Hub")
    assert hub.api.requests_to("/v2/repositories/nosuchns/")[0].status == 200  # the empty page, as on Hub
    assert json.loads(watcher.cli("registry", "list", "--json").stdout) == []


@pytest.mark.parametrize("kind", ["organisation", "user"])
def test_an_existing_empty_namespace_is_accepted(watcher: Watcher, hub: Hub, kind: str) -> None:
    empty = f"empty{secrets.token_hex(4)}"
    if kind == "organisation":
        hub.api.namespaces.add(empty)
    else:
        hub.api.users[empty] = "not-used"
    args = hub.add(watcher)
    args[args.index("--namespace") + 1] = empty
    ok(watcher.cli(*args))
    assert (poll(watcher)["repositories"], poll(watcher)["events"]) == (0, [])


def test_a_namespace_that_disappears_fails_the_poll_and_reports_nothing_removed(watcher: Watcher, hub: Hub) -> None:
    ghost = f"ghost{secrets.token_hex(4)}"
    hub.api.namespaces.add(ghost)
    args = hub.add(watcher)
    args[args.index("--namespace") + 1] = ghost
    ok(watcher.cli(*args))
    poll(watcher)
    hub.api.namespaces.discard(ghost)
    one_line_failure(watcher.cli("poll", "hub"), "registry 'hub'", f"namespace '{ghost}' does not exist")
    assert watcher.stream_entries() == []


def test_an_unreachable_api_is_one_line(watcher: Watcher, hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_URL_ENV, f"http://127.0.0.1:{free_port()}")
    one_line_failure(watcher.cli(*hub.add(watcher)), "registry 'hub'", "unreachable")


def test_two_factor_accounts_are_told_to_use_a_token(watcher: Watcher, hub: Hub) -> None:
    hub.api.new_login_route = False  # only the deprecated /v2/users/login: the poller falls back to it
    hub.api.two_factor.add(USERNAME)
    one_line_failure(watcher.cli(*hub.add(watcher)), "credentials refused", "personal access token")
    hub.api.two_factor.clear()
    ok(watcher.cli(*hub.add(watcher)))
    assert [r.path for r in hub.api.records if r.method == "POST"][-2:] == ["/v2/auth/token", "/v2/users/login"]


# ---- tokens --------------------------------------------------------------------------------------------------
def test_a_revoked_token_is_replaced_by_one_new_login(watcher: Watcher, hub: Hub) -> None:
    hub.push("app", "v1")
    ok(watcher.cli(*hub.add(watcher)))
    logins = hub.api.logins
    hub.api.revoke_at = re.compile(r"/tags")
    assert poll(watcher)["tags"] == 1
    assert hub.api.logins == logins + 2  # the poll's login, and one more after the 401
    assert [r.status for r in hub.api.requests_to("/tags")][-2:] == [401, 200]


def test_a_token_refused_again_is_a_credentials_error_not_a_loop(watcher: Watcher, hub: Hub) -> None:
    hub.push("app", "v1")
    ok(watcher.cli(*hub.add(watcher)))
    before = len(hub.api.records)
    hub.api.refuse_tokens = True
    one_line_failure(watcher.cli("poll", "hub"), "registry 'hub'", "credentials refused")
    seen = hub.api.records[before:]
    assert [(r.method, r.status) for r in seen] == [("POST", 200), ("GET", 401), ("POST", 200), ("GET", 401)]


def test_tokens_are_used_until_shortly_before_they_expire() -> None:
    def jwt(exp: float) -> str:
        claims = base64.urlsafe_b64encode(json.dumps({"exp": int(exp)}).encode()).rstrip(b"=").decode()
        return f"e30.{claims}.signature"

    assert 530 < usable_seconds(jwt(time.time() + 600)) <= 540
    assert 4 < usable_seconds(jwt(time.time() + 10)) <= 5
    assert usable_seconds("not-a-jwt") == 540  # Hub's documented 10 minutes, less the margin


# ---- rate limits ------------------------------------------------------------------------------------------------
def test_a_429_is_retried_after_retry_after(watcher: Watcher, hub: Hub) -> None:
    hub.push("app", "v1")
    ok(watcher.cli(*hub.add(watcher)))
    hub.api.throttle(r"/tags", times=1, retry_after="1")
    assert poll(watcher)["tags"] == 1
    attempts = hub.api.requests_to("/tags")[-2:]
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0  # by the fake's own clock: nothing came before Retry-After


def test_a_429_that_persists_gives_up_after_the_retries(watcher: Watcher, hub: Hub) -> None:
    hub.push("app", "v1")
    ok(watcher.cli(*hub.add(watcher)))
    before = len(hub.api.records)
    hub.api.throttle(r"/tags", times=100, retry_after="0")
    one_line_failure(watcher.cli("poll", "hub"), "registry 'hub'", "rate limited")
    tries = [r for r in hub.api.records[before:] if r.path.endswith("/tags")]
    assert [r.status for r in tries] == [429] * 4  # one try and three retries, then the error: no spinning


def test_a_low_quota_slows_the_poller_before_the_limit(watcher: Watcher, hub: Hub) -> None:
    hub.api.max_page_size = 1
    digest = hub.push("app", "t0")
    for i in range(1, 5):
        hub.registry.client.retag(f"{hub.namespace}/app", "t0", f"t{i}")
    ok(watcher.cli(*hub.add(watcher)))
    before = len(hub.api.records)
    hub.api.quota = (3, 1)  # three requests a second; the poll needs seven (login, repositories, 5 tag pages)
    report = poll(watcher)
    assert report["tags"] == 5 and digest
    seen = hub.api.records[before:]
    assert len(seen) == 7
    assert [r.status for r in seen] == [200] * 7  # it never ran into the limit: it spread its requests


def test_rate_limit_headers_of_registries_and_of_the_hub_api() -> None:
    now = time.time()
    assert quota_left({"ratelimit-remaining": "76;w=21600"}) == (76, 21600.0)
    left, window = quota_left({"x-ratelimit-remaining": "5", "x-ratelimit-reset": str(int(now) + 30)}) or (0, 0)
    assert left == 5 and 28 < window <= 30
    assert quota_left({"x-ratelimit-remaining": "many"}) is None
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert 8 < (retry_after_seconds({"x-retry-after": str(int(now) + 10)}) or 0) <= 10  # Hub's old header
