"""Fuzzing the CLI's own inputs: `registry add` options and `registry apply` files.

Whatever is typed or written, the command either saves a registry whose every value is within bounds, or
exits non-zero with one line on stderr and saves nothing. Never a traceback (`catch_exceptions=False`
lets any exception fail the test). Bounded: a few hundred examples, well under a minute.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from tests.conftest import Watcher
from watcher.models import Registry
from watcher.registrations.forms import KNOWN_KEYS
from watcher.registrations.spec import MAX_INTERVAL_SECONDS, NAME

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
DIGITS = st.integers(min_value=-(10**25), max_value=10**25).map(str)
NUMBERISH = st.one_of(DIGITS, st.floats().map(repr), st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_0"]))
DURATIONS = st.one_of(
    TEXT, st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 10**15), st.sampled_from(["", "s", "m", "h", "d", "w"]))
)
URLS = st.one_of(
    TEXT,
    st.builds(
        lambda scheme, userinfo, host, port, path: f"{scheme}://{userinfo}{host}{port}{path}",
        st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
        st.sampled_from(["", "u:p@", "u@", ":@", "@"]),
        st.one_of(st.sampled_from(["h", "127.0.0.1", "[::1]", "[::1", "exa mple.com", "ex_ample.com"]), TEXT),
        st.one_of(st.just(""), st.integers(-1, 10**6).map(lambda p: f":{p}"), st.just(":x")),
        st.sampled_from(["", "/", "/v2", "?q", "#f"]),
    ),
)
NAMES = st.one_of(TEXT, st.from_regex(NAME, fullmatch=True), st.from_regex(NAME, fullmatch=True))


def mostly(valid: list[str], fuzz: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """Values that are often valid (so that saving is exercised too), often absent, sometimes anything."""
    return st.one_of(st.none(), st.sampled_from(valid), st.sampled_from(valid), fuzz)


VALID_URLS = ["https://registry.example.com", "http://127.0.0.1:5000", "http://[::1]:5000", "HTTPS://H"]
REGEXES = st.one_of(TEXT, st.sampled_from(["(a+)+$", "v(1", "[", "a{99999999999}", "(?P<x>", "^v\\d+$", "\\"]))


def clear(watcher: Watcher) -> None:
    with watcher.engine.begin() as conn:
        conn.execute(delete(Registry))


def saved(watcher: Watcher) -> list[Registry]:
    with watcher.engine.connect() as conn:
        return list(conn.execute(select(Registry)).all())  # type: ignore[arg-type]


def assert_one_line_or_saved(watcher: Watcher, result: Any, expected: range) -> None:
    """Success saved as many registries as `expected` allows, each within every bound; failure is one line."""
    assert "Traceback" not in result.output
    event(f"exit {result.exit_code}")
    rows = saved(watcher)
    if result.exit_code == 0:
        assert len(rows) in expected, result.output
        for row in rows:
            assert NAME.match(row.name)
            assert 1 <= row.interval_seconds <= MAX_INTERVAL_SECONDS
            assert row.url.startswith(("http://", "https://")) and "@" not in row.url
            options = row.options or {}
            assert 10 <= options["poll_timeout"] <= 86400
            assert 1 <= options.get("max_concurrency", 1) <= 64
            assert math.isfinite(options.get("rate_limit", 1.0)) and 0.1 <= options.get("rate_limit", 1.0) <= 10_000
            assert isinstance(row.emit_existing, bool)
    else:
        assert result.exit_code in (1, 2), result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("watcher: "), result.stderr
        assert rows == [], "a refused command saved something"


@FUZZ
@given(
    name=NAMES,
    url=st.one_of(st.sampled_from(VALID_URLS), URLS),
    interval=mostly(["10s", "5m", "30d", "1", "86400"], DURATIONS),
    poll_timeout=mostly(["10s", "10m", "24h"], DURATIONS),
    concurrency=mostly(["1", "64", "8"], NUMBERISH),
    rate=mostly(["0.1", "10000", "2.5"], NUMBERISH),
    include=mostly(["^v", "^v\\d+\\.\\d+$"], REGEXES),
    repository=mostly(["team/*", "a/b"], TEXT),
    username=mostly(["alice"], TEXT),
)
def test_registry_add_options(
    watcher: Watcher,
    name: str,
    url: str,
    interval: str | None,
    poll_timeout: str | None,
    concurrency: str | None,
    rate: str | None,
    include: str | None,
    repository: str | None,
    username: str | None,
) -> None:
    args = ["registry", "add", name, "--provider", "oci", "--url", url, "--no-verify"]
    for option, value in (
        ("--interval", interval),
        ("--poll-timeout", poll_timeout),
        ("--max-concurrency", concurrency),
        ("--rate-limit", rate),
        ("--include-tags", include),
        ("--repository", repository),
    ):
        if value is not None:
            args += [f"{option}={value}"]
    if username is not None:
        args += [f"--username={username}", "--password=p"]
    clear(watcher)
    result = watcher.cli(*args)
    assert_one_line_or_saved(watcher, result, expected=range(1, 2))
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        assert result.exit_code != 0 and ("u:p@" not in result.output)


# ---- registry apply --------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["false", "true", "yes", "5m", "0s", "31d", "oci", "dockerhub", "https://h", "${HOME}"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3))
KEYS = st.one_of(st.sampled_from(sorted(KNOWN_KEYS)), st.sampled_from(["include-tags", "colour", "<<"]), TEXT)
VALID_ENTRIES = st.fixed_dictionaries(
    {"name": st.from_regex(NAME, fullmatch=True), "provider": st.just("oci"), "url": st.sampled_from(VALID_URLS)},
    optional={
        "interval": st.one_of(st.sampled_from(["10s", "5m", "30d"]), st.integers(1, MAX_INTERVAL_SECONDS)),
        "poll_timeout": st.sampled_from(["10s", "1h", 600]),
        "emit_existing": st.booleans(),
        "max_concurrency": st.integers(1, 64),
        "rate_limit": st.floats(0.1, 10_000),
        "repositories": st.sampled_from([["team/*"], "a/b", []]),
        "include-tags": st.sampled_from(["^v", "x|y"]),
    },
)
FUZZED_ENTRIES = st.fixed_dictionaries(
    {"name": st.one_of(NAMES, SCALARS), "provider": st.sampled_from(["oci", "oci", "ecr", "nope", 7])},
    optional={"url": st.one_of(URLS, SCALARS)},
).flatmap(lambda base: st.dictionaries(KEYS, VALUES, max_size=4).map(lambda extra: {**base, **extra}))
ENTRIES = st.one_of(VALID_ENTRIES, VALID_ENTRIES, FUZZED_ENTRIES)
DOCUMENTS = st.one_of(
    st.lists(VALID_ENTRIES, min_size=1, max_size=3, unique_by=lambda e: str(e["name"])).map(
        lambda entries: {"registries": entries}
    ),
    st.lists(ENTRIES, max_size=3, unique_by=lambda e: str(e.get("name"))).map(lambda entries: {"registries": entries}),
    VALUES,
    st.dictionaries(st.sampled_from(["registries", "other"]), VALUES, max_size=2),
)


def as_yaml(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


STRUCTURAL = {"alias": "a: &x 1\nb: *x\n", "python": "x: !!python/object/apply:os.system ['true']\n"}  # refused
ANYWHERE = {  # refused where they land in the structure; mere text inside a quoted string
    "alias-anywhere": "&x a: *x\n",
    "tag": " !!binary aGk=",
    "python-anywhere": " !!python/name:os.system",
    "deep": "[" * 200 + "]" * 200,
    "control": "\x07",
    "bom": "\ufeff",
}
MUTATIONS = [*["none"] * 10, *STRUCTURAL, *ANYWHERE, "latin1", "huge", "truncate"]


def mutate(text: str, how: str, where: int) -> bytes:
    """Turn a valid YAML text into one that hides an attack or a defect."""
    at = min(where, len(text))
    if how in STRUCTURAL:
        return (STRUCTURAL[how] + text).encode()
    if how == "latin1":
        return (text[:at] + "é" + text[at:]).encode("latin-1", "replace")
    if how == "huge":
        return (text + "# " + "x" * (1024 * 1024) + "\n").encode()
    if how == "truncate":
        return text[:at].encode()
    return (text[:at] + ANYWHERE.get(how, "") + text[at:]).encode()


@FUZZ
@given(
    document=DOCUMENTS,
    how=st.sampled_from(MUTATIONS),
    where=st.integers(0, 400),
)
def test_registry_apply_files(watcher: Watcher, tmp_path: Path, document: Any, how: str, where: int) -> None:
    text = as_yaml(document)
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(mutate(text, how, where))
    clear(watcher)
    result = watcher.cli("registry", "apply", "--no-verify", "-f", str(path))
    entries = document.get("registries") if isinstance(document, dict) else None
    count = len(entries) if isinstance(entries, list) else 0
    expected = range(0, count + 1) if how == "truncate" else range(count, count + 1)  # a cut can drop entries
    assert_one_line_or_saved(watcher, result, expected)
    if how in (*STRUCTURAL, "huge") and result.exit_code == 0:
        raise AssertionError(f"a file with {how} was applied")


def test_the_alphabet_of_names_is_what_the_issue_says() -> None:
    allowed = set(string.ascii_lowercase + string.digits + "-_.")
    assert NAME.match("a" * 63) and not NAME.match("a" * 64)
    assert all(NAME.match(f"a{c}") for c in allowed) and not NAME.match("aB")
