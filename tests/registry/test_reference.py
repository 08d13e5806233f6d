"""The OCI grammar: every name the grammar generates is accepted, known-bad ones are refused, lengths hold."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from watcher.errors import InputError
from watcher.models import DIGEST_LENGTH
from watcher.registrations.scope import Scope
from watcher.registry.reference import (
    REPOSITORY_LENGTH,
    TAG_LENGTH,
    digest_problem,
    is_digest,
    is_repository,
    is_tag,
    shown,
)

ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
SEPARATOR = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """`[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, built piece by piece."""
    parts = [draw(ALNUM)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(SEPARATOR), draw(ALNUM)]
    return "".join(parts)


REPOSITORIES = (
    st.lists(path_components(), min_size=1, max_size=5)
    .map("/".join)
    .filter(lambda name: len(name) <= REPOSITORY_LENGTH)
)
TAGS = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")


@given(REPOSITORIES)
def test_every_repository_name_of_the_grammar_is_accepted(name: str) -> None:
    assert is_repository(name)


@given(TAGS)
def test_every_tag_of_the_grammar_is_accepted(tag: str) -> None:
    assert is_tag(tag)


@given(st.sampled_from(["sha256", "sha512"]), st.binary())
def test_real_sha256_and_sha512_digests_are_accepted(algorithm: str, data: bytes) -> None:
    assert is_digest(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")


@given(st.from_regex(r"\A[a-z0-9]+(?:[+._-][a-z0-9]+)*\Z"), st.from_regex(r"\A[a-zA-Z0-9=_-]+\Z"))
def test_other_algorithms_are_accepted_when_well_formed_and_short(algorithm: str, encoded: str) -> None:
    assume(algorithm not in ("sha256", "sha512"))  # those are checked exactly
    digest = f"{algorithm}:{encoded}"
    assert is_digest(digest) == (len(digest) <= DIGEST_LENGTH)


@given(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.text()), st.dictionaries(st.text(), st.text())
    )
)
def test_values_that_are_not_strings_are_never_names(value: object) -> None:
    assert not is_repository(value)
    assert not is_tag(value)
    assert not is_digest(value)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/../../b",
        "../../etc",
        "team/app/../../x",
        "Team/app",
        "team//app",
        "/team/app",
        "team/app/",
        "team/-app",
        "team/app_",
        "team/a___b",
        "team/a._b",
        "team app",
        "team/app:v1",
        "team/app@sha256",
        "team/%2e%2e",
        "a" * (REPOSITORY_LENGTH + 1),
    ],
)
def test_bad_repository_names_are_refused(name: str) -> None:
    assert not is_repository(name)


@pytest.mark.parametrize(
    "tag",
    ["", "a/../../b", "v1#frag", "v1?x=1", "%2e%2e", ".hidden", "-rc", "v1 ", "v1\n", "tag:x", "é", "t" * 129],
)
def test_bad_tags_are_refused(tag: str) -> None:
    assert not is_tag(tag)


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "not-a-digest; rm -rf /",
        "sha256",
        "sha256:",
        ":abc",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha512:" + "a" * 64,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
        "blake3:abc/def",
        "blake3:" + "a" * DIGEST_LENGTH,
        "sha256:" + "a" * 64 + ";",
    ],
)
def test_bad_digests_are_refused(digest: str) -> None:
    assert digest_problem(digest) is not None


def test_lengths_at_the_limit() -> None:
    assert is_repository("a" * REPOSITORY_LENGTH)
    assert is_repository("/".join(["ab"] * 85))  # 254 characters
    assert is_tag("t" * TAG_LENGTH)
    assert is_digest("sha512:" + "0" * 128)
    assert is_digest("blake3:" + "a" * (DIGEST_LENGTH - len("blake3:")))


def test_a_bad_value_is_shown_short() -> None:
    assert shown("a/../../b") == "'a/../../b'"
    assert shown([1, 2]) == "[1, 2]"
    assert len(shown("x" * 10_000)) <= 80
    assert len(shown([[list(range(100))] * 100] * 100)) <= 80


def test_tag_filters_are_re2_linear_time() -> None:
    scope = Scope((), "(a+)+$")
    started = time.monotonic()
    assert not scope.wants_tag("a" * 40 + "-")  # exponential for a backtracking engine
    assert not scope.wants_tag("a" * 5000 + "!")
    assert scope.wants_tag("aaa")
    assert time.monotonic() - started < 5  # bounded, not hung


@pytest.mark.parametrize("pattern", ["(?=x)", "(?!rc)", r"(a)\1", "(a", "x{1001}"])
def test_a_pattern_re2_rejects_is_an_input_error(pattern: str) -> None:
    with pytest.raises(InputError, match=r"--exclude-tags .* is not a valid RE2 regular expression"):
        Scope((), "", pattern)


@pytest.mark.parametrize("pattern", ["a/../../b", "Team/app", "team/app/"])
def test_a_literal_repository_must_be_a_valid_name(pattern: str) -> None:
    with pytest.raises(InputError, match="is not a valid OCI repository name"):
        Scope((pattern,))
    assert Scope(("team/*",)).wants_repository("team/app")
