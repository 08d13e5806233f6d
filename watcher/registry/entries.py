"""How many entries one listing may hold: a catalog's repositories, a repository's tags.

Counted as pages arrive, so a registry announcing millions of names fails the poll at the limit instead
of filling memory first. `WATCHER_MAX_ENTRIES` raises it.
"""

from __future__ import annotations

from watcher import errors
from watcher.settings import get_settings

ENV_VAR = "WATCHER_MAX_ENTRIES"


def check_entries(count: int, what: str) -> None:
    """Fail the listing `what` once it has more than `max_entries` entries."""
    limit = get_settings().max_entries
    if count > limit:
        raise errors.BadResponseError(
            f"{what}: more than {limit:,} entries, the limit; raise {ENV_VAR} to list a registry this large"
        )
