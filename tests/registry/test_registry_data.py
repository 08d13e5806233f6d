"""Registry data is checked against the OCI grammar before it reaches a URL, the snapshot or the stream.

Against the hostile registry fake, on SQLite and PostgreSQL: invalid names are left out (and counted),
an invalid digest fails the poll with one line, oversized listings fail at the entries cap, tag filters
run in linear time, and every valid value — a sha512 digest, a 128-character tag, a 255-character
repository name — is stored and emitted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from click.testing import Result
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder, digest_of
from watcher.models import Event, Tag
from watcher.pollers import poller_for
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registry.reference import is_digest, is_repository, is_tag
from watcher.settings import get_settings

BOTH = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
VALID = {
    ("team/app", "v1"),
    ("team/app", "v2"),
    ("team/web", "latest"),
}


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with Recorder() as recorder, HostileRegistry(recorder) as server:
        yield server


def one_line_failure(result: Result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]


def streamed(watcher: Watcher) -> list[tuple[str, str, str, str]]:
    """(change, repository, tag, digest) of every stream entry, each checked to be valid OCI."""
    entries = [(e["change"], e["repository"], e["tag"], e["digest"]) for e in watcher.stream_entries()]
    for _, repository, tag, digest in entries:
        assert is_repository(repository) and is_tag(tag) and is_digest(digest), (repository, tag, digest)
    return entries


def listed(server: HostileRegistry, **options: object) -> tuple[dict[str, dict[str, str]], list[str], int]:
    """The listing one poller makes of the fake, its ignored lines and count (no database involved)."""
    spec = RegistrySpec("h", "oci", server.url, options=dict(options))
    poller = poller_for(spec)

    async def go() -> dict[str, dict[str, str]]:
        try:
            found = await poller.listing(Scope.from_options(spec.options))
        finally:
            await poller.aclose()
        return {repo: {tag: state.digest for tag, state in tags.items()} for repo, tags in found.items()}

    return asyncio.run(go()), poller.ignored, poller.ignored_count


# -- invalid names are left out -----------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("mode", ["non_string_tags", "path_tricks", "long_names"])
def test_invalid_names_are_left_out_and_never_requested(watcher: Watcher, hostile: HostileRegistry, mode: str) -> None:
    hostile.mode = mode
    added = watcher.add_registry("h", hostile.url, "--emit-existing")  # verify() lists the catalog too
    assert added.exit_code == 0, added.output
    result = watcher.cli("poll", "h")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert {(repo, tag) for _, repo, tag, _ in streamed(watcher)} == VALID
    requested = [line.split(" ", 1)[1] for line in hostile.requests]
    manifests = {path.rsplit("/manifests/", 1)[1] for path in requested if "/manifests/" in path}
    digests = {digest for _, _, _, digest in streamed(watcher)}  # their images read for the events
    assert manifests - digests == {tag for _, tag in VALID}
    assert not [p for p in requested if ".." in p or "#" in p or "%" in p or "?x=" in p or len(p) > 300]

    hostile.mode = "normal"  # the registry mended: nothing changed, so nothing is emitted
    assert watcher.cli("poll", "h").exit_code == 0
    assert len(streamed(watcher)) == len(VALID)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "non_string_tags",
            [
                "repository 1 is not a valid OCI repository name: it is a JSON number, not a string",
                "repository {'a': 1} is not a valid OCI repository name: it is a JSON object, not a string",
                "repository None is not a valid OCI repository name: it is a JSON null, not a string",
                "tag 1 of team/app is not a valid OCI tag: it is a JSON number, not a string",
                "tag None of team/web is not a valid OCI tag: it is a JSON null, not a string",
            ],
        ),
        (
            "path_tricks",
            [
                "repository '../../etc' is not a valid OCI repository name",
                "repository 'team/app/../../x' is not a valid OCI repository name",
                "tag 'a/../../b' of team/app is not a valid OCI tag",
                "tag 'v1#frag' of team/web is not a valid OCI tag",
                "tag '%2e%2e' of team/app is not a valid OCI tag",
            ],
        ),
        (
            "long_names",
            [
                "repository 'aaaaaaaa",
                "is longer than 255 characters",
                f"tag '{'t' * 30}",
                "of team/app is not a valid OCI tag: it is longer than 128 characters",
            ],
        ),
    ],
)
def test_each_ignored_name_is_one_line_and_counted(
    watcher: Watcher, hostile: HostileRegistry, mode: str, expected: list[str]
) -> None:
    hostile.mode = mode
    found, lines, count = listed(hostile)
    assert found == {"team/app": hostile.repositories["team/app"], "team/web": hostile.repositories["team/web"]}
    assert count == len(lines)
    assert count == {"non_string_tags": 3 + 2 * 4, "path_tricks": 2 + 2 * 4, "long_names": 1 + 2}[mode]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)
    assert all("\n" not in line and len(line) < 300 for line in lines)


def test_ignored_lines_are_capped_and_all_counted(watcher: Watcher, hostile: HostileRegistry) -> None:
    hostile.repositories = {"team/app": {"v1": digest_of("v1")}}
    hostile.mode = "non_string_tags"
    many = {f"BAD-{i}": digest_of(str(i)) for i in range(300)}  # upper case: not valid repository names
    hostile.repositories.update({name: {"v1": digest_of(name)} for name in many})
    found, lines, count = listed(hostile)
    assert list(found) == ["team/app"]
    assert count == 300 + 3 + 4  # 300 names, the mode's 3 repositories and team/app's 4 tags
    assert len(lines) == 100


# -- invalid digests fail the poll ------------------------------------------------------------------
@BOTH
def test_an_invalid_digest_fails_the_poll_with_one_line(watcher: Watcher, hostile: HostileRegistry) -> None:
    assert watcher.add_registry("h", hostile.url).exit_code == 0
    assert watcher.cli("poll", "h").exit_code == 0  # baseline
    hostile.repositories["team/app"]["v3"] = digest_of("team/app:v3")
    hostile.mode = "bad_digest"
    result = watcher.cli("poll", "h")
    one_line_failure(result, "registry 'h': bad response: team/", "'not-a-digest; rm -rf /'", "digest")
    assert streamed(watcher) == []
    with watcher.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Tag).where(Tag.digest.like("not-a-digest%"))) == 0
        assert conn.scalar(select(func.count()).select_from(Event)) == 0

    hostile.mode = "normal"  # mended: the next poll succeeds and reports the real change once
    assert watcher.cli("poll", "h").exit_code == 0
    assert streamed(watcher) == [("added", "team/app", "v3", digest_of("team/app:v3"))]


# -- every valid value fits ------------------------------------------------------------------------
@BOTH
def test_sha512_a_128_character_tag_and_a_255_character_repository_are_stored_and_emitted(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    long_repository, long_tag = "a" * 255, "t" * 128
    hostile.repositories[long_repository] = {long_tag: digest_of("long")}
    hostile.mode = "sha512_digest"
    assert watcher.add_registry("h", hostile.url, "--emit-existing").exit_code == 0
    result = watcher.cli("poll", "h")
    assert result.exit_code == 0, result.output
    entries = streamed(watcher)
    assert {(repo, tag) for _, repo, tag, _ in entries} == VALID | {(long_repository, long_tag)}
    assert all(digest.startswith("sha512:") and len(digest) == 7 + 128 for _, _, _, digest in entries)
    shown = watcher.cli("events", "--repository", long_repository, "--json")
    assert shown.exit_code == 0, shown.output
    assert long_tag in shown.output and "sha512:" in shown.output


# -- tag filters in linear time ----------------------------------------------------------------------
@BOTH
def test_a_catastrophic_tag_filter_finishes_at_once(watcher: Watcher, hostile: HostileRegistry) -> None:
    evil = "a" * 40 + "-"  # a valid tag on which a backtracking `(a+)+$` takes 2**40 steps
    hostile.repositories["team/app"][evil] = digest_of("evil")
    hostile.repositories["team/app"]["aaaa"] = digest_of("aaaa")
    hostile.mode = "catastrophic_tags"  # and "a" * 40 + "!" (not a valid tag: ignored)
    assert watcher.add_registry("h", hostile.url, "--include-tags", "(a+)+$", "--emit-existing").exit_code == 0
    started = time.monotonic()
    result = watcher.cli("poll", "h")
    assert time.monotonic() - started < 30  # bounded, not hung
    assert result.exit_code == 0, result.output
    assert [(repo, tag) for _, repo, tag, _ in streamed(watcher)] == [("team/app", "aaaa")]


@pytest.mark.parametrize("pattern", ["(?!rc)", r"(v)\1", "(unclosed"])
def test_a_pattern_re2_rejects_is_refused_at_add(watcher: Watcher, hostile: HostileRegistry, pattern: str) -> None:
    result = watcher.add_registry("h", hostile.url, "--include-tags", pattern)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not a valid RE2 regular expression" in lines[0], result.output
    assert "h" not in watcher.cli("registry", "list").output.split()


def test_a_literal_repository_that_is_not_a_valid_name_is_refused_at_add(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    result = watcher.add_registry("h", hostile.url, "--repository", "a/../../b", "--no-verify")
    assert result.exit_code != 0
    assert "not a valid OCI repository name" in result.output and len(result.output.strip().splitlines()) == 1


# -- the entries cap ---------------------------------------------------------------------------------
@pytest.fixture
def two_entries(monkeypatch: pytest.MonkeyPatch, watcher: Watcher) -> Iterator[None]:
    monkeypatch.setenv("WATCHER_MAX_ENTRIES", "2")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_catalog_over_the_entries_cap_fails_with_one_line(
    watcher: Watcher, hostile: HostileRegistry, two_entries: None
) -> None:
    assert watcher.add_registry("h", hostile.url).exit_code == 0
    hostile.repositories["team/third"] = {"v1": digest_of("third")}
    one_line_failure(watcher.cli("poll", "h"), "catalog: more than 2 entries", "WATCHER_MAX_ENTRIES")
    assert streamed(watcher) == []


def test_a_tag_list_over_the_entries_cap_fails_with_one_line(
    watcher: Watcher, hostile: HostileRegistry, two_entries: None
) -> None:
    assert watcher.add_registry("h", hostile.url, "--repository", "team/app").exit_code == 0
    hostile.repositories["team/app"]["v3"] = digest_of("v3")
    one_line_failure(watcher.cli("poll", "h"), "tags of team/app: more than 2 entries", "WATCHER_MAX_ENTRIES")
