"""A hostile registry cannot take credentials elsewhere or make a poll read without bound.

Each test registers the hostile fake (Basic auth) while it behaves, records a baseline, then switches it to
one attack: the poll fails with one line naming the cause, the recorder on the second port was sent no
Authorization header (mostly nothing at all), nothing reaches the stream, and once the registry behaves
again the next poll succeeds and reports the real change made meanwhile.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from click.testing import Result

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder, digest_of
from watcher.settings import get_settings

USERNAME, PASSWORD = "robot", "hostile-s3cret"
DATABASES = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture
def hostile(recorder: Recorder) -> Iterator[HostileRegistry]:
    with HostileRegistry(recorder, username=USERNAME, password=PASSWORD) as server:
        yield server


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def one_line_failure(result: Result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def registered_with_baseline(watcher: Watcher, registry: HostileRegistry) -> None:
    added = watcher.add_registry("r1", registry.url, "--username", USERNAME, "--password", PASSWORD)
    assert added.exit_code == 0, added.output
    assert watcher.cli("poll", "r1").exit_code == 0
    assert watcher.stream_entries() == []


def fixed_then_polled(watcher: Watcher, registry: HostileRegistry) -> None:
    """Back to normal with one real change: the next poll succeeds and reports exactly that change."""
    registry.mode = "normal"
    registry.repositories["team/app"]["v3"] = digest_of("team/app:v3")
    result = watcher.cli("poll", "r1")
    assert result.exit_code == 0, result.output
    assert [(e["change"], e["repository"], e["tag"]) for e in watcher.stream_entries()] == [("added", "team/app", "v3")]


@DATABASES
def test_a_foreign_link_is_not_followed(watcher: Watcher, hostile: HostileRegistry, recorder: Recorder) -> None:
    registered_with_baseline(watcher, hostile)
    hostile.mode = "foreign_link"
    line = one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "bad response", "another origin")
    assert recorder.url in line
    assert recorder.requests == []  # not a single request, let alone credentials
    assert watcher.stream_entries() == []  # the recorder's "planted" tag was never merged
    fixed_then_polled(watcher, hostile)


@DATABASES
def test_a_redirect_to_another_host_and_its_realm_get_nothing(
    watcher: Watcher, hostile: HostileRegistry, recorder: Recorder
) -> None:
    registered_with_baseline(watcher, hostile)
    hostile.mode = "redirect_foreign_realm"
    line = one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "bad response", "redirected to")
    assert "not followed" in line
    assert recorder.authorizations == []
    assert recorder.requests == []
    assert watcher.stream_entries() == []
    fixed_then_polled(watcher, hostile)


@pytest.fixture
def tls_hostile(recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileRegistry]:
    """The hostile registry over https, its certificate from a test CA the watcher is told to trust."""
    import ssl

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    with HostileRegistry(recorder, username=USERNAME, password=PASSWORD, tls=context) as server:
        yield server


@DATABASES
def test_a_realm_over_plain_http_for_an_https_registry_is_refused(
    watcher: Watcher, tls_hostile: HostileRegistry, recorder: Recorder
) -> None:
    assert tls_hostile.url.startswith("https://")
    registered_with_baseline(watcher, tls_hostile)
    tls_hostile.mode = "http_realm"
    line = one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "bad response", "plain http")
    assert recorder.url in line
    assert recorder.requests == []
    assert watcher.stream_entries() == []
    fixed_then_polled(watcher, tls_hostile)


@DATABASES
def test_a_huge_body_stops_at_the_cap(watcher: Watcher, hostile: HostileRegistry) -> None:
    registered_with_baseline(watcher, hostile)
    hostile.mode = "huge_body"  # 40 MiB against the default cap of 32 MiB
    one_line_failure(
        watcher.cli("poll", "r1"),
        "registry 'r1'",
        "bad response",
        "tags of team/",
        "response body exceeds 32 MiB (WATCHER_MAX_BODY_BYTES)",
    )
    assert watcher.stream_entries() == []
    fixed_then_polled(watcher, hostile)


def test_a_600_mb_body_is_never_buffered(
    watcher: Watcher, hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered_with_baseline(watcher, hostile)
    set_env(monkeypatch, WATCHER_MAX_BODY_BYTES=str(4 * 1024 * 1024))
    hostile.huge_bytes = 600 * 1024 * 1024
    hostile.mode = "huge_body"
    tracemalloc.start()
    try:
        result = watcher.cli("poll", "r1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_line_failure(result, "response body exceeds 4 MiB (WATCHER_MAX_BODY_BYTES)")
    assert peak < 64 * 1024 * 1024, f"the poll held {peak / 2**20:.0f} MiB at its peak"


@DATABASES
def test_an_endless_chunked_body_stops_at_the_cap(watcher: Watcher, hostile: HostileRegistry) -> None:
    registered_with_baseline(watcher, hostile)
    hostile.mode = "endless_chunks"
    one_line_failure(
        watcher.cli("poll", "r1"), "registry 'r1'", "tags of team/", "exceeds 32 MiB (WATCHER_MAX_BODY_BYTES)"
    )
    assert watcher.stream_entries() == []
    fixed_then_polled(watcher, hostile)


@DATABASES
def test_endless_pages_stop_at_the_page_cap(
    watcher: Watcher, hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered_with_baseline(watcher, hostile)
    set_env(monkeypatch, WATCHER_MAX_PAGES="25")
    hostile.mode = "endless_pages"
    one_line_failure(watcher.cli("poll", "r1"), "registry 'r1'", "catalog: more than 25 pages (WATCHER_MAX_PAGES)")
    assert watcher.stream_entries() == []
    fixed_then_polled(watcher, hostile)
