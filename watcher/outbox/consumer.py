"""`watcher events tail`: a stream consumer, alone or in a consumer group that survives dead members.

In a group, entries another consumer read but never acknowledged (it died) are claimed after they have
been idle for a while, so no event is left behind; each entry is acknowledged after it was printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import redis

GroupEntry = tuple[str, dict[str, str]]


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the group at the stream's end (new members see new events), the stream too if need be."""
    try:
        client.xgroup_create(stream, group, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def read_group(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    *,
    claim_idle_ms: int = 60_000,
    block_ms: int = 1000,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[GroupEntry]:
    """Entries for this consumer: first its own unacknowledged ones, then abandoned ones, then new ones.
    The caller acknowledges with `client.xack(stream, group, entry_id)` once it has handled an entry."""
    ensure_group(client, stream, group)
    own: Any = client.xreadgroup(group, consumer, {stream: "0"})
    for _, entries in own or []:
        yield from ((entry_id, fields) for entry_id, fields in entries if fields)
    while keep_going():
        cursor = "0-0"
        while True:
            reply: Any = client.xautoclaim(stream, group, consumer, claim_idle_ms, cursor, count=100)
            cursor, claimed = reply[0], reply[1]
            yield from ((entry_id, fields) for entry_id, fields in claimed if fields)
            if cursor in ("0-0", b"0-0"):
                break
        fresh: Any = client.xreadgroup(group, consumer, {stream: ">"}, count=100, block=block_ms)
        for _, entries in fresh or []:
            yield from entries


def read_live(
    client: redis.Redis, stream: str, *, block_ms: int = 1000, keep_going: Callable[[], bool] = lambda: True
) -> Iterator[GroupEntry]:
    """Entries appended from now on, without a group (nothing is acknowledged)."""
    newest: Any = client.xrevrange(stream, count=1)
    last: str = newest[0][0] if newest else "0-0"
    while keep_going():
        replies: Any = client.xread({stream: last}, count=100, block=block_ms)
        for _, entries in replies or []:
            for entry_id, fields in entries:
                last = entry_id
                yield entry_id, fields
