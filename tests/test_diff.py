"""diff() is pure: property-tested against its inverse, apply()."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from watcher.diff import ChangeKind, Listing, TagState, apply, diff

names = st.sampled_from(["app", "team/api", "team/web", "lib/x", "z"])
tags = st.sampled_from(["latest", "v1", "v2", "1.0.0", "main", "dev"])
digests = st.sampled_from([f"sha256:{c * 64}" for c in "abcdef"])
states = st.builds(TagState, digests, st.none() | st.datetimes(timezones=st.just(UTC)))
listings = st.dictionaries(names, st.dictionaries(tags, states, min_size=1, max_size=6), max_size=5)


def digests_of(listing: Listing) -> dict[str, dict[str, str]]:
    return {repo: {tag: s.digest for tag, s in tagmap.items()} for repo, tagmap in listing.items() if tagmap}


@given(listings, listings)
def test_applying_the_diff_to_the_old_snapshot_gives_the_new_listing(old: Listing, new: Listing) -> None:
    assert digests_of(apply(old, diff(old, new))) == digests_of(new)


@given(listings)
def test_an_unchanged_listing_has_no_changes(listing: Listing) -> None:
    assert diff(listing, listing) == []


@given(listings, listings)
def test_each_tag_changes_at_most_once_and_in_a_stable_order(old: Listing, new: Listing) -> None:
    changes = diff(old, new)
    keys = [(c.repository, c.tag) for c in changes]
    assert keys == sorted(set(keys))


@given(listings, listings)
def test_change_kinds_match_what_happened(old: Listing, new: Listing) -> None:
    for c in diff(old, new):
        before, after = old.get(c.repository, {}).get(c.tag), new.get(c.repository, {}).get(c.tag)
        if c.kind is ChangeKind.ADDED:
            assert before is None and after is not None and c.digest == after.digest
        elif c.kind is ChangeKind.REMOVED:
            assert after is None and before is not None and c.digest == before.digest
        else:
            assert before and after and c.previous_digest == before.digest != c.digest == after.digest


def test_a_concrete_diff() -> None:
    pushed = datetime(2026, 1, 2, tzinfo=UTC)
    old: Listing = {"app": {"v1": TagState("sha256:1"), "latest": TagState("sha256:1")}}
    new: Listing = {
        "app": {"v1": TagState("sha256:1"), "latest": TagState("sha256:2", pushed), "v2": TagState("sha256:2")}
    }
    changes = diff(old, new)
    assert [(c.kind.value, c.tag, c.digest, c.previous_digest) for c in changes] == [
        ("updated", "latest", "sha256:2", "sha256:1"),
        ("added", "v2", "sha256:2", ""),
    ]
    assert changes[0].pushed_at == pushed
