"""The selection strategies, from the peers' documented semantics (Flux's ImagePolicy, Argo CD Image
Updater, npm's ranges), and a property test of the semver order against the library's own comparison."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import nodesemver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.errors import InputError
from watcher.policies import Candidate, Policy, Selection, Strategy, select, strategies


def tags(*names: str) -> list[Candidate]:
    return [Candidate(name, f"sha256:{index:064x}") for index, name in enumerate(names)]


def chosen(policy: Policy, candidates: list[Candidate]) -> str | None:
    selection = select(policy, candidates)
    return None if selection is None else selection.tag


# (range, prerelease, tags, expected): npm's documented range semantics, and Flux's and Argo CD's examples.
SEMVER_TABLE = [
    ("^1.2", False, ["1.2.3", "1.2.4", "1.9.0", "2.0.0"], "1.9.0"),
    ("^1.2", False, ["1.2.3", "1.3.0-rc.1"], "1.2.3"),  # a pre-release only when asked for
    ("^1.2", True, ["1.2.3", "1.3.0-rc.1"], "1.3.0-rc.1"),
    ("^1.2", True, ["1.2.3", "2.0.0-rc.1"], "1.2.3"),  # never the next major's pre-release
    ("^0.2.3", False, ["0.2.3", "0.2.9", "0.3.0"], "0.2.9"),
    ("~1.2.3", False, ["1.2.2", "1.2.9", "1.3.0"], "1.2.9"),
    (">=1.0 <2.0", False, ["0.9.0", "1.0.0", "1.99.1", "2.0.0"], "1.99.1"),
    (">=1.0, <2.0", False, ["1.5.0", "2.1.0"], "1.5.0"),  # Masterminds' comma
    (">= 1.0", False, ["1.5.0", "0.1.0"], "1.5.0"),
    ("1.2.x", False, ["1.2.0", "1.2.10", "1.3.0"], "1.2.10"),
    ("5.1.x", False, ["5.0.0", "5.1.3", "5.1.4", "5.2.0"], "5.1.4"),  # Flux's podinfo example
    ("1.2.3 - 2.3", False, ["2.3.9", "2.4.0"], "2.3.9"),
    ("1.x || >=2.5.0", False, ["2.4.0", "1.8.0"], "1.8.0"),
    ("1.x || >=2.5.0", False, ["2.4.0", "1.8.0", "3.0.0"], "3.0.0"),
    (">=1.2.3-beta.1", False, ["1.2.3-beta.2", "1.2.4-beta.1", "1.2.2"], "1.2.3-beta.2"),  # same-patch rule
    (">=1.2.3-beta.1", True, ["1.2.3-beta.2", "1.2.4-beta.1"], "1.2.4-beta.1"),
    ("<1.2.3", False, ["1.2.3-rc.1", "1.2.2"], "1.2.2"),
    ("*", False, ["1.0.0", "1.1.0-alpha"], "1.0.0"),
    ("*", True, ["1.0.0", "1.1.0-alpha"], "1.1.0-alpha"),
    ("*", True, ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-beta.11", "1.0.0-rc.1"], "1.0.0-rc.1"),
    ("*", True, ["1.0.0-beta.2", "1.0.0-beta.11"], "1.0.0-beta.11"),  # numeric identifiers compare as numbers
    ("*", False, ["1.0.0-rc.1", "1.0.0"], "1.0.0"),
    (">=1.0.0", False, ["v1.4.0", "1.3.0", "latest", "1.5", "01.6.0"], "v1.4.0"),  # a leading v; only full SemVer
    ("*", False, ["1.2.3", "1.2.3+build.2", "v1.2.3"], "v1.2.3"),  # a tie: the greatest tag
    ("*", False, ["1.2.3+build.9", "1.2.3+build.10"], "1.2.3+build.9"),  # build metadata: no order, tag string
    ("^3", False, ["1.0.0", "2.0.0"], None),
]


@pytest.mark.parametrize(
    ("range_", "prerelease", "names", "expected"),
    SEMVER_TABLE,
    ids=[f"{i}-{row[0]}{'-pre' if row[1] else ''}" for i, row in enumerate(SEMVER_TABLE)],
)
def test_semver_table(range_: str, prerelease: bool, names: list[str], expected: str | None) -> None:
    policy = Policy(Strategy.SEMVER, range_, prerelease=prerelease)
    assert chosen(policy, tags(*names)) == expected
    assert chosen(policy, tags(*reversed(names))) == expected  # the listing's order plays no part


def test_semver_counts_the_tags_it_could_not_read() -> None:
    selection = select(Policy(Strategy.SEMVER, "^1"), tags("1.0.0", "1.1.0", "2.0.0", "latest", "main-abc", "1.2"))
    assert selection == Selection("1.1.0", f"sha256:{1:064x}", considered=3, ignored=3)


def test_semver_with_an_extracted_version() -> None:
    policy = Policy.from_options(semver="^1", filter=r"^release-(?P<version>.+)$", extract="$version")
    assert chosen(policy, tags("release-1.2.0", "release-1.10.0", "release-2.0.0", "1.11.0")) == "release-1.10.0"


FLUX_TIMESTAMPS = ["main-a1b2c3-1611840548", "main-d4e5f6-1611840999", "main-0a0a0a-999", "dev-ffffff-9999999999"]


@pytest.mark.parametrize(("order", "expected"), [("asc", "main-d4e5f6-1611840999"), ("desc", "main-0a0a0a-999")])
def test_numeric_with_extracted_timestamps(order: str, expected: str) -> None:
    """Flux's example: `^main-[a-f0-9]+-(?P<ts>[0-9]+)` with `$ts`, numerical order (999 < 1611840548)."""
    policy = Policy.from_options(numeric=order, filter=r"^main-[a-f0-9]+-(?P<ts>[0-9]+)", extract="$ts")
    selection = select(policy, tags(*FLUX_TIMESTAMPS))
    assert selection is not None and selection.tag == expected
    assert (selection.considered, selection.ignored) == (3, 1)


def test_numeric_reads_whole_numbers_and_decimals_exactly() -> None:
    policy = Policy(Strategy.NUMERIC, "asc")
    assert chosen(policy, tags("9", "10", "2.5", "latest", "1e9", "0x10")) == "10"
    # a nanosecond timestamp keeps its last digit (a float would make these two equal)
    assert chosen(policy, tags("1700000000123456789", "1700000000123456788")) == "1700000000123456789"
    assert chosen(policy, tags("-5", "-10")) == "-5"
    assert chosen(Policy(Strategy.NUMERIC, "desc"), tags("-5", "-10")) == "-10"
    assert chosen(policy, tags("latest", "main")) is None
    long = Policy.from_options(numeric="asc", filter=r"^(?P<n>[0-9]+)$", extract="$n" * 80)  # 80 x 128 digits
    assert chosen(long, tags("9" * 128, "1" + "0" * 127)) == "9" * 128


def test_numeric_ties_are_broken_by_the_tag() -> None:
    policy = Policy.from_options(numeric="asc", filter=r"-(?P<n>[0-9]+)$", extract="${n}")
    assert chosen(policy, tags("a-7", "b-7", "c-3")) == "b-7"
    assert chosen(policy, tags("b-7", "a-7", "c-3")) == "b-7"


CALVER = ["RELEASE.2024-01-01T00-00-00Z", "RELEASE.2023-12-31T23-59-59Z", "RELEASE.2024-02-29T10-00-00Z"]


@pytest.mark.parametrize(
    ("order", "expected"), [("asc", "RELEASE.2024-02-29T10-00-00Z"), ("desc", "RELEASE.2023-12-31T23-59-59Z")]
)
def test_alphabetical_calver(order: str, expected: str) -> None:
    policy = Policy.from_options(alphabetical=order, filter=r"^RELEASE\.")
    selection = select(policy, tags(*CALVER, "latest"))
    assert selection is not None and (selection.tag, selection.considered, selection.ignored) == (expected, 3, 1)


def test_alphabetical_by_an_extracted_key() -> None:
    policy = Policy.from_options(alphabetical="asc", filter=r"^(?P<branch>[a-z]+)-(?P<date>[0-9-]+)$", extract="$date")
    assert chosen(policy, tags("zeta-2024-01-01", "alpha-2024-03-01", "beta-2023-12-31")) == "alpha-2024-03-01"


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_newest_build_by_creation_time() -> None:
    candidates = [
        Candidate("a", "sha256:a", created=T0, pushed_at=T0 + timedelta(days=9)),
        Candidate("b", "sha256:b", created=T0 + timedelta(hours=1), pushed_at=T0),
        Candidate("c", "sha256:c"),  # neither time: ignored
    ]
    assert select(Policy(Strategy.NEWEST_BUILD), candidates) == Selection("b", "sha256:b", 2, 1)


def test_newest_build_with_equal_creation_times() -> None:
    """Argo CD's newest-build: tags built at the same time (one image, several tags; reproducible builds
    with a fixed date) are told apart by push time, then by the tag, so the choice is stable."""
    same = [
        Candidate("x", "sha256:1", created=T0, pushed_at=T0 + timedelta(minutes=1)),
        Candidate("y", "sha256:2", created=T0, pushed_at=T0 + timedelta(minutes=5)),
        Candidate("z", "sha256:3", created=T0, pushed_at=T0 + timedelta(minutes=2)),
    ]
    assert chosen(Policy(Strategy.NEWEST_BUILD), same) == "y"
    untimed_push = [Candidate(tag, "sha256:1", created=T0) for tag in ("m", "q", "k")]
    assert chosen(Policy(Strategy.NEWEST_BUILD), untimed_push) == "q"
    assert chosen(Policy(Strategy.NEWEST_BUILD), list(reversed(untimed_push))) == "q"


def test_newest_build_falls_back_to_the_push_time_and_takes_naive_times_as_utc() -> None:
    candidates = [
        Candidate("built", "sha256:1", created=T0),
        Candidate("pushed", "sha256:2", pushed_at=(T0 + timedelta(hours=1)).replace(tzinfo=None)),
    ]
    assert chosen(Policy(Strategy.NEWEST_BUILD), candidates) == "pushed"
    filtered = Policy.from_options(newest_build=True, filter="^built$")
    assert select(filtered, candidates) == Selection("built", "sha256:1", 1, 1)


def test_digest_follows_a_moved_latest() -> None:
    """Argo CD's digest strategy: the selection is the tag's current digest, so a push that moves `latest`
    changes it."""
    policy = Policy.from_options(digest="latest")
    before = [Candidate("latest", "sha256:" + "a" * 64), Candidate("1.0.0", "sha256:" + "a" * 64)]
    after = [Candidate("latest", "sha256:" + "b" * 64), Candidate("1.0.0", "sha256:" + "a" * 64)]
    assert select(policy, before) == Selection("latest", "sha256:" + "a" * 64, 1, 1)
    assert select(policy, after) == Selection("latest", "sha256:" + "b" * 64, 1, 1)
    assert select(policy, after[1:]) is None


def test_options_round_trip() -> None:
    for policy in (
        Policy(Strategy.SEMVER, "^1.2", prerelease=True),
        Policy(Strategy.NUMERIC, "desc", filter="(?P<n>[0-9]+)", extract="$n"),
        Policy(Strategy.NEWEST_BUILD, filter="^main-"),
        Policy(Strategy.DIGEST, "latest"),
    ):
        assert Policy.from_options(**policy.options()) == policy
    assert Policy(Strategy.SEMVER, "^1.2", prerelease=True).describe() == "semver ^1.2 (pre-releases)"


INVALID = [
    ({}, "a policy needs one strategy"),
    ({"semver": "^1", "numeric": "asc"}, "a policy takes one strategy, not --semver and --numeric"),
    ({"newest_build": True, "digest": "latest"}, "not --newest-build and --digest"),
    ({"semver": ""}, "--semver needs a range"),
    ({"semver": ">=foo"}, "is not a valid range"),
    ({"semver": "^1.2.3.4"}, "is not a valid range"),
    ({"semver": "^1." * 100}, "longer than 256"),
    ({"numeric": "up"}, "--numeric takes asc or desc, not 'up'"),
    ({"alphabetical": ""}, "--alphabetical takes asc or desc"),
    ({"digest": "la test"}, "is not a valid tag"),
    ({"numeric": "asc", "prerelease": True}, "--prerelease applies to --semver only"),
    ({"numeric": "asc", "filter": "(a"}, "--filter '(a' is not a valid RE2 regular expression"),
    ({"numeric": "asc", "filter": "(a\nb"}, "missing ): (a b"),  # RE2 quotes the pattern raw
    ({"numeric": "asc", "filter": "(?=x)"}, "look-arounds"),
    ({"numeric": "asc", "filter": "x" * 1025}, "--filter is longer than 1024"),
    ({"numeric": "asc", "extract": "$ts"}, "--extract takes its groups from --filter"),
    ({"numeric": "asc", "filter": "(?P<a>x)", "extract": "$ts"}, "names group 'ts'; --filter's named groups: a"),
    ({"numeric": "asc", "filter": "(x)", "extract": "$2"}, "names group 2; --filter has 1"),
    ({"numeric": "asc", "filter": "(x)", "extract": "a$"}, "a '$' that names no group"),
    ({"numeric": "asc", "filter": "(x)", "extract": "${1"}, "a '$' that names no group"),
    ({"newest_build": True, "filter": "(?P<a>x)", "extract": "$a"}, "--extract has no use there"),
    ({"digest": "latest", "filter": "x"}, "--filter has no use there"),
    ({"semver": 1.2}, "--semver must be text (quote it in YAML), not float"),  # YAML's unquoted 1.2
    ({"alphabetical": "asc", "filter": "\ud800"}, "--filter is not valid Unicode text"),  # a lone surrogate
]


@pytest.mark.parametrize(("options", "message"), INVALID, ids=[f"invalid-{i}" for i in range(len(INVALID))])
def test_invalid_input_is_one_line(options: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as raised:
        Policy.from_options(**options)  # type: ignore[arg-type]
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_a_range_full_of_blanks_is_refused_quickly() -> None:
    """The library's trimming regexes take seconds on runs of blanks (npm's CVE-2022-25883); ours collapse
    them first."""
    started = time.process_time()
    with pytest.raises(InputError, match="is not a valid range"):
        Policy(Strategy.SEMVER, "1" + " " * 250 + "<")
    assert time.process_time() - started < 0.5


def test_extract_accepts_every_documented_form() -> None:
    policy = Policy.from_options(alphabetical="asc", filter=r"^(?P<a>[a-z]+)-([0-9]+)$", extract="${a}$$$2-$a")
    assert select(policy, tags("x-1", "y-2")) == Selection("y-2", f"sha256:{1:064x}", 2, 0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_range_text_is_a_policy_or_one_input_error(text: str) -> None:
    try:
        Policy(Strategy.SEMVER, text)
    except InputError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=40), st.text(max_size=20))
def test_any_filter_and_extract_text_is_a_policy_or_one_input_error(pattern: str, extract: str) -> None:
    try:
        Policy(Strategy.ALPHABETICAL, "asc", filter=pattern, extract=extract)
    except InputError as exc:
        assert "\n" not in str(exc)


identifier = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    st.text(alphabet="abcrz-", min_size=1, max_size=4).filter(lambda s: not s.isdigit()),
)
version_text = st.builds(
    lambda major, minor, patch, pre, build, v: (
        f"{'v' if v else ''}{major}.{minor}.{patch}"
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(identifier, max_size=3),
    st.lists(st.sampled_from(["b", "7", "x1"]), max_size=2),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(version_text, min_size=1, max_size=30, unique=True))
def test_semver_selection_is_the_librarys_maximum(names: list[str]) -> None:
    """With `*` and pre-releases admitted, the selection is the greatest version by the library's own
    comparison, ties (build metadata, a `v`) going to the greatest tag."""

    def compare(a: str, b: str) -> int:
        order = nodesemver.make_semver(a, False).compare(nodesemver.make_semver(b, False))
        return int(order) or (a > b) - (a < b)

    expected = max(names, key=functools.cmp_to_key(compare))
    assert chosen(Policy(Strategy.SEMVER, "*", prerelease=True), tags(*names)) == expected
    releases = [name for name in names if "-" not in name.split("+")[0]]
    expected_release = max(releases, key=functools.cmp_to_key(compare)) if releases else None
    assert chosen(Policy(Strategy.SEMVER, "*"), tags(*names)) == expected_release


def test_keys_kept_between_selections_belong_to_their_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same tags under two ranges, two filters, with and without pre-releases, and with caches emptied
    every few entries: each policy answers as if it were the first."""
    names = tags("1.0.0", "1.5.0", "2.0.0", "2.1.0-rc.1", "v2.0.5", "rel-1.9.0", "rel-3.0.0")
    policies = {
        Policy(Strategy.SEMVER, "^1"): "1.5.0",
        Policy(Strategy.SEMVER, "^2"): "v2.0.5",
        Policy(Strategy.SEMVER, "^2", prerelease=True): "2.1.0-rc.1",
        Policy(Strategy.SEMVER, "^1", filter=r"^rel-(?P<v>.*)", extract="$v"): "rel-1.9.0",
        Policy(Strategy.SEMVER, "*", filter=r"^rel-(?P<v>.*)", extract="$v"): "rel-3.0.0",
        Policy(Strategy.ALPHABETICAL, "asc", filter="^rel-"): "rel-3.0.0",
        Policy(Strategy.ALPHABETICAL, "asc"): "v2.0.5",
    }
    for _ in range(2):
        for policy, expected in policies.items():
            assert chosen(policy, names) == expected, policy.describe()
    monkeypatch.setattr(strategies, "_CACHE_LIMIT", 3)
    strategies._keys.clear()
    strategies._versions.clear()
    for _ in range(2):
        for policy, expected in policies.items():
            assert chosen(policy, names) == expected, policy.describe()
    assert len(strategies._keys) <= 3 and len(strategies._versions) <= 3


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"semver": "^1\x00"}, "semver"),
        ({"alphabetical": "asc", "filter": "a\x00"}, "filter"),
        ({"semver": "*", "filter": "("}, "filter"),
    ],
)
def test_a_nul_or_a_pattern_re2_refuses_is_one_line_naming_its_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as refused:
        Policy.from_options(**options)
    assert refused.value.field == field and "\n" not in str(refused.value)
