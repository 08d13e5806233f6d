"""saving.compare() is diff() for one repository, straight from its stored rows: property-tested against it."""

from __future__ import annotations

from datetime import UTC

from hypothesis import given
from hypothesis import strategies as st

from watcher.diff import TagState, diff
from watcher.polling.saving import compare

tags = st.sampled_from(["latest", "v1", "v2", "1.0.0", "main", "dev", "tmp-1"])
digests = st.sampled_from([f"sha256:{c * 64}" for c in "abcd"])
times = st.none() | st.datetimes(timezones=st.just(UTC))
states = st.builds(TagState, digests, times)
rows = st.dictionaries(tags, st.tuples(st.integers(1, 10**6), digests, times), max_size=7)
listings = st.dictionaries(tags, states, max_size=7)
#: tags the scope no longer wants: their stored rows are deleted silently, never a `removed` event
excluded = st.sets(tags, max_size=3)


@given(rows, listings, excluded)
def test_compare_finds_what_diff_finds_and_the_rows_out_of_scope(
    stored: dict[str, tuple[int, str, object]], listed: dict[str, TagState], unwanted: set[str]
) -> None:
    old = {tag: TagState(digest, at) for tag, (_, digest, at) in stored.items() if tag not in unwanted}  # type: ignore[arg-type]

    changes, out_of_scope = compare("team/api", stored, listed, lambda tag: tag not in unwanted)  # type: ignore[arg-type]

    assert changes == diff({"team/api": old}, {"team/api": listed})
    assert sorted(out_of_scope) == sorted(row_id for tag, (row_id, _, _) in stored.items() if tag in unwanted)
