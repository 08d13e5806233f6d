"""Bad input and failing registries: one clear line naming the registry and cause, nothing saved, no event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.support.faults import Action, FaultProxy
from tests.support.fixtures import PASSWORD, RegistryEnv
from tests.support.registry import free_port
from watcher.models import Event, Registry


def one_line_error(result, *needles: str) -> str:
    """The command failed with exactly one line on stderr containing every needle, and no traceback."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_saved(watcher: Watcher) -> None:
    with watcher.engine.connect() as conn:
        assert conn.scalar(select(func.count(Registry.id))) == 0
        assert conn.scalar(select(func.count(Event.id))) == 0
    assert watcher.stream_entries() == []


@pytest.fixture
def proxy(registry: RegistryEnv) -> Iterator[FaultProxy]:
    fault = FaultProxy(registry.url)
    yield fault
    fault.close()


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--provider", "oci", "--url", "ftp://host"], ["'r1'", "URL", "not valid"]),
        (["--provider", "oci", "--url", "https://host/some/path"], ["must name only the host"]),
        (["--provider", "quay", "--url", "https://quay.io"], ["unknown provider 'quay'", "oci"]),
        (["--provider", "oci", "--url", "https://h", "--username", "u"], ["--password is missing"]),
        (["--provider", "oci", "--url", "https://h", "--region", "eu"], ["--region is not used by provider oci"]),
        (["--provider", "oci", "--url", "https://h", "--interval", "soon"], ["interval 'soon'"]),
        (
            ["--provider", "oci", "--url", "https://h", "--include-tags", "v(1"],
            ["--include-tags", "regular expression"],
        ),
        (["--provider", "oci", "--url", "https://h", "--password", "@/nonexistent/file"], ["cannot read"]),
    ],
)
def test_bad_input_is_one_line_and_saves_nothing(watcher: Watcher, args: list[str], needles: list[str]) -> None:
    one_line_error(watcher.cli("registry", "add", "r1", *args), *needles)
    nothing_saved(watcher)


def test_a_bad_name_is_refused(watcher: Watcher) -> None:
    one_line_error(watcher.add_registry("no spaces", "https://h"), "name")


def test_a_duplicate_name_is_refused(watcher: Watcher, registry: RegistryEnv) -> None:
    assert watcher.add_registry("r1", registry.url).exit_code == 0
    one_line_error(watcher.add_registry("r1", registry.url), "already exists")


def test_unknown_registry_names_are_one_line(watcher: Watcher) -> None:
    for command in (
        ["poll", "nope"],
        ["registry", "show", "nope"],
        ["registry", "remove", "nope"],
        ["registry", "test", "nope"],
    ):
        one_line_error(watcher.cli(*command), "no registry named 'nope'")


# ---- connection tests at add time --------------------------------------------------------------------
def test_wrong_credentials_are_refused_and_never_echoed(watcher: Watcher, basic_registry: RegistryEnv) -> None:
    result = watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", "wrong-" + PASSWORD)
    one_line_error(result, "registry 'r1'", "credentials refused")
    assert PASSWORD not in result.output
    nothing_saved(watcher)


def test_missing_credentials_on_a_private_registry(watcher: Watcher, token_registry: RegistryEnv) -> None:
    result = watcher.add_registry("r1", token_registry.url)
    one_line_error(result, "registry 'r1'", "credentials refused")
    nothing_saved(watcher)


def test_unreachable_host(watcher: Watcher) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    one_line_error(watcher.add_registry("r1", url), "registry 'r1'", "unreachable")
    nothing_saved(watcher)


def test_untrusted_tls_certificate(watcher: Watcher, registry: RegistryEnv, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    tls = FaultProxy(registry.url, tls_cert=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    try:
        result = watcher.add_registry("r1", tls.url)
    finally:
        tls.close()
    one_line_error(result, "registry 'r1'", "TLS")
    nothing_saved(watcher)


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (401, "credentials refused"),
        (403, "permission missing"),
        (404, "not found"),
        (429, "rate limited"),
        (500, "bad response"),
        (503, "bad response"),
    ],
)
def test_http_failures_when_listing(watcher: Watcher, proxy: FaultProxy, status: int, cause: str) -> None:
    proxy.add(r"^/v2/_catalog", "status", status=status, headers={"Retry-After": "0"})
    one_line_error(
        watcher.add_registry("r1", proxy.url),
        "registry 'r1'",
        cause,
        str(status),
    )
    nothing_saved(watcher)


def test_a_malformed_body(watcher: Watcher, proxy: FaultProxy) -> None:
    proxy.add(r"^/v2/_catalog", "malformed")
    one_line_error(watcher.add_registry("r1", proxy.url), "bad response", "not JSON")
    nothing_saved(watcher)


# ---- failures during polls ---------------------------------------------------------------------------
def baseline(watcher: Watcher, url: str, registry: RegistryEnv, scope: str) -> None:
    for repo in ("a", "b", "c"):
        registry.client.push_image(f"{scope}/{repo}", "v1")
    assert watcher.add_registry("r1", url, "--repository", f"{scope}/*").exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0


def snapshot(watcher: Watcher) -> str:
    return watcher.cli("registry", "show", "r1", "--json").stdout


@pytest.mark.parametrize(
    ("path", "action", "cause"),
    [
        (r"/tags/list", "drop", "unreachable"),  # the connection drops mid-listing
        (r"/tags/list", "malformed", "bad response"),
        (r"/manifests/", "status", "bad response"),  # a 5xx mid-listing
    ],
)
def test_a_failed_listing_changes_nothing_of_its_repository_and_emits_nothing(
    watcher: Watcher, registry: RegistryEnv, proxy: FaultProxy, unique_repo: str, path: str, action: Action, cause: str
) -> None:
    """The repository is what is all or nothing: those that failed keep their snapshot and emit nothing,
    those listed before the failures began commit theirs; the next good poll reports the rest, once."""
    baseline(watcher, proxy.url, registry, unique_repo)
    registry.client.push_image(f"{unique_repo}/a", "v2")
    registry.client.delete(f"{unique_repo}/c", "v1")
    tags_before = json.loads(snapshot(watcher))["tags"]
    proxy.add(path, action, after=1, headers={"Retry-After": "0"})  # the first request passes, then failures
    line = one_line_error(watcher.cli("poll", "r1"), "registry 'r1'", cause)
    failed = {repo for repo in "abc" if f"{unique_repo}/{repo} (" in line}
    assert failed or "repositories failed" not in line, line
    first = {(e["change"], e["repository"][-1], e["tag"]) for e in watcher.stream_entries()}
    assert not {repo for _, repo, _ in first} & failed, (first, line)
    if not first:  # nothing committed: the snapshot is as it was
        assert json.loads(snapshot(watcher))["tags"] == tags_before
    assert json.loads(snapshot(watcher))["last_poll"]["outcome"] == "failed"
    proxy.clear()
    assert watcher.cli("poll", "r1").exit_code == 0
    assert sorted((e["change"], e["repository"][-1], e["tag"]) for e in watcher.stream_entries()) == [
        ("added", "a", "v2"),
        ("removed", "c", "v1"),
    ]


def test_a_registry_stopped_and_restarted_invents_no_removal(
    watcher: Watcher, registry_factory, unique_repo: str
) -> None:
    env = registry_factory()
    baseline(watcher, env.url, env, unique_repo)
    env.server.stop()
    one_line_error(watcher.cli("poll", "r1"), "registry 'r1'", "unreachable")
    env.server.start()
    result = watcher.cli("poll", "r1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["events"] == []
    assert watcher.stream_entries() == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["registry", "add", "r1", "--url", "https://h"], "Missing option '--provider'"),
        (["registry", "add", "r1", "--provider", "oci", "--max-concurrency", "many"], "'many' is not a valid integer"),
        (["registry", "frobnicate"], "No such command 'frobnicate'"),
        (["events", "--limit", "0"], "--limit"),
    ],
)
def test_usage_mistakes_are_one_line_too(watcher: Watcher, args: list[str], needle: str) -> None:
    result = watcher.cli(*args)
    assert result.exit_code == 2
    line = one_line_error(result, needle)
    assert line.startswith("watcher: ") and line.endswith("--help`)")
