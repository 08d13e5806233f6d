"""`strategies.reselect` — a selection worked out from the stored one and a change — always gives `select`'s
answer on the tags after the change (or declines), whatever tags were added, removed or moved."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.diff import TagState
from watcher.policies import Candidate, Policy, Strategy, select
from watcher.policies.strategies import UNKNOWN, reselect

POLICIES = [
    Policy(Strategy.SEMVER, "^1.2"),
    Policy(Strategy.SEMVER, ">=1.0 <2.0 || ^4", prerelease=True),
    Policy(Strategy.SEMVER, "*", filter="^v"),
    Policy(Strategy.NUMERIC, "asc", filter=r"^main-[a-f0-9]+-(?P<ts>[0-9]+)$", extract="$ts"),
    Policy(Strategy.NUMERIC, "desc"),
    Policy(Strategy.ALPHABETICAL, "asc"),
    Policy(Strategy.ALPHABETICAL, "desc", filter="^RELEASE"),
    Policy(Strategy.DIGEST, "latest"),
    Policy(Strategy.NEWEST_BUILD),
]
NAMES = [
    *("1.2.0", "1.2.3", "v1.2.3", "1.2.3+b.7", "1.3.0-rc.1", "1.9.9", "2.0.0", "4.1.0", "0.1.0", "v4.0.0-rc.2"),
    *("main-abc-100", "main-abc-99", "main-def-100", "main-0-7"),
    *("RELEASE.2024-01-01", "RELEASE.2025-06-30", "latest", "dev", "10", "9", "-3", "2.5", "x"),
]
DIGESTS = [f"sha256:{index:064x}" for index in range(3)]
SNAPSHOT = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(DIGESTS), max_size=len(NAMES))


@settings(max_examples=150, deadline=None, database=None)
@given(policy=st.sampled_from(POLICIES), before=SNAPSHOT, after=SNAPSHOT)
def test_reselect_equals_a_full_selection(policy: Policy, before: dict[str, str], after: dict[str, str]) -> None:
    previous = select(policy, [Candidate(tag, digest) for tag, digest in before.items()])
    tags = {tag: TagState(digest) for tag, digest in after.items()}
    added = [tag for tag in after if tag not in before]
    removed = [tag for tag in before if tag not in after]
    found = reselect(policy, previous, tags, added, removed)
    full = select(policy, [Candidate(tag, digest) for tag, digest in after.items()])
    if found is not UNKNOWN:
        assert found == full
    # it declines only where the change alone cannot tell (`digest` never does): a newest-build ranking, the
    # selection removed, or nothing selected before and an added tag qualifying now
    newly = previous is None and select(policy, [Candidate(tag, after[tag]) for tag in added]) is not None
    gone = previous is not None and previous.tag in removed
    ranked = policy.strategy is Strategy.NEWEST_BUILD
    expected_unknown = policy.strategy is not Strategy.DIGEST and (ranked or gone or newly)
    assert (found is UNKNOWN) == expected_unknown


def test_a_moved_tag_ranked_below_the_selection_ranks_nothing_again() -> None:
    """1 % of a repository moved: the selection is kept without computing any other tag's key."""
    policy = Policy(Strategy.NUMERIC, "asc", filter=r"^build-(?P<n>[0-9]+)$", extract="$n")
    before = {f"build-{n:05}": DIGESTS[0] for n in range(1000)}
    previous = select(policy, [Candidate(tag, digest) for tag, digest in before.items()])
    assert previous is not None and previous.tag == "build-00999"
    after = before | {"build-00010": DIGESTS[1], "build-00999": DIGESTS[2], "other": DIGESTS[0]}
    found = reselect(policy, previous, {t: TagState(d) for t, d in after.items()}, ["other"], [])
    assert found == select(policy, [Candidate(t, d) for t, d in after.items()])
    assert found is not UNKNOWN and (found.tag, found.digest, found.considered, found.ignored) == (  # type: ignore[union-attr]
        "build-00999",
        DIGESTS[2],
        1000,
        1,
    )
