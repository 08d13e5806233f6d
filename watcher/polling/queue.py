"""Queueing a poll from outside the workers (the API's and the console's "Poll now", a webhook): the same
Celery tasks beat's tick dispatches, sent at once or refused in one line — never a request left hanging on
the broker.

Repository polls coalesce per repository (Redis keys under the installation's prefix, set and read by one
Lua script a notification, `HINT`):
- while a poll of a repository is queued and not yet started, another hint does nothing but note its time;
- a hint with nothing queued, no listing of the repository started in the last RELIST_SECONDS, and no
  hint of it in the last QUIET_SECONDS is listed at once: pushes one after the other are each reported as
  fast as the first;
- a hint within QUIET_SECONDS of the previous one is part of a burst: it queues a follow-up (below) even
  when the last listing already ended (a listing of a small repository ends within milliseconds, and the
  burst would otherwise be listed again and again);
- a hint arriving after a listing started (so the listing may have missed the change) queues exactly one
  *follow-up*: it starts no sooner than RELIST_SECONDS after that listing started, and then only once the
  repository's hints have been quiet for QUIET_SECONDS — or SETTLE_MAX_SECONDS after it was queued,
  whichever comes first (`BEGIN`, when its task starts). So a burst of notifications for one repository costs
  a listing at its start and one after it settles (one more per SETTLE_MAX_SECONDS while it lasts), and the
  last hint after a listing started always causes one more listing.

A notification may name the tags it pushed (`HookFormat.pushed`); a listing that does not show one of them
yet (Distribution notifies before it links the tag) queues one more listing CONFIRM_SECONDS later, once:
so a forged notification costs at most two listings, and a true one is never left for the next scheduled
poll.

Amplification: a notification naming more than MAX_REPOSITORIES repositories, or the MAX_REPOSITORIES+1st
distinct repository of one registry hinted within one second, queues one registry-wide poll (trigger
`webhook`, coalesced the same way) instead of a listing per repository.

A registry is named here by key (`watcher.registrations.keys`): the tasks carry it, and the Redis keys are
made from it (a registry of the workspace `default` keeps the keys it had before workspaces).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script

from watcher import bus
from watcher.db import session_scope
from watcher.errors import StateError
from watcher.registrations import store as registries
from watcher.registrations.keys import split_key
from watcher.settings import get_settings

#: a queued mark lapses after this long even if no worker ever started its task
QUEUED_SECONDS = 600
#: a repository's polls start at least this far apart while notifications keep coming
RELIST_SECONDS = 1.0
#: a follow-up listing waits until the repository's notifications have been quiet this long...
QUIET_SECONDS = 0.5
#: ...but no longer than this after it was queued
SETTLE_MAX_SECONDS = 5.0
#: a listing not showing a pushed tag yet is made once more this much later
CONFIRM_SECONDS = 1.0
#: at most this many pushed tags are carried to the poll (the rest are only listed)
MAX_EXPECTED_TAGS = 20
#: past this many repositories in one notification, or distinct repositories of one registry hinted within
#: one second, the registry is polled whole instead (one poll, not one listing per repository)
MAX_REPOSITORIES = 100
#: what `hint` answers for each repository: queued at once, queued as a follow-up, or already queued
AT_ONCE, FOLLOW_UP, COALESCED = "at-once", "follow-up", "coalesced"
#: what `hint` answers when the registry is to be polled whole instead
WHOLE = "registry"

# KEYS: the registry's window of the current second, then (queued, started, last hint) per repository.
# ARGV: queued mark's seconds, window limit, quiet ms, then the repositories. Answers -1 (over the limit: poll
# the whole registry), else per repository: -3 already queued, -2 queued at once, >= 0 queued as a follow-up
# that may start in that many ms (a hint within the quiet time of the previous one is in a burst: a
# follow-up, even when no listing started lately).
HINT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = (#KEYS - 1) / 3
for i = 1, n do redis.call('SADD', KEYS[1], ARGV[3 + i]) end
redis.call('PEXPIRE', KEYS[1], 2000)
if redis.call('SCARD', KEYS[1]) > tonumber(ARGV[2]) then return {-1} end
local out = {}
for i = 1, n do
  local queued, started, hinted = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local previous = tonumber(redis.call('GET', hinted) or '0')
  redis.call('SET', hinted, now, 'EX', ARGV[1])
  local left = redis.call('PTTL', started)
  if left < 0 and now - previous < tonumber(ARGV[3]) then left = 0 end
  local kind = 'I'
  if left >= 0 then kind = 'F' end
  if redis.call('SET', queued, kind .. ':' .. now, 'NX', 'EX', ARGV[1]) then
    if left >= 0 then out[i] = left else out[i] = -2 end
  else
    out[i] = -3
  end
end
return out
"""
# KEYS: queued, started, last hint. ARGV: relist ms, quiet ms, settle max ms. Answers 0 (start: the queued
# mark is cleared, the started mark set) or the ms a follow-up (its mark starts with F) should wait for the
# repository's hints to settle.
BEGIN = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local mark = redis.call('GET', KEYS[1])
if mark and string.sub(mark, 1, 1) == 'F' then
  local since = tonumber(string.sub(mark, 3)) or now
  local last = tonumber(redis.call('GET', KEYS[3]) or '0')
  local quiet, most = tonumber(ARGV[2]), tonumber(ARGV[3])
  if now - last < quiet and now - since < most then
    return math.max(1, math.min(quiet - (now - last), since + most - now))
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 0
"""


@dataclass(frozen=True)
class Hinted:
    """What one notification queued: per repository AT_ONCE, FOLLOW_UP or COALESCED, or `whole` (a
    registry-wide poll was queued, or coalesced into one queued already, instead)."""

    repositories: dict[str, str]
    whole: bool = False

    @property
    def queued(self) -> int:
        """How many polls this notification queued."""
        return int(self.whole) if self.whole else sum(kind != COALESCED for kind in self.repositories.values())


def queue_poll(key: str) -> str:
    """Queue a `manual` poll of `key` now; returns the queued task's id (the poll's id until it runs)."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.app import POLL_TASK, app

    with session_scope() as session:
        registries.find(session, key)
    try:
        return str(app.send_task(POLL_TASK, (key,), {"trigger": "manual"}, retry=False).id)
    except (OperationalError, OSError) as exc:
        raise StateError(
            f"registry {split_key(key)[1]!r}: the poll could not be queued: the broker did not answer ({exc})"
        ) from None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def queued_key(key: str, repository: str) -> str:
    """The Redis key that marks a poll of `repository` of the registry `key` as queued (hashed: keys are long)."""
    return f"{get_settings().events_stream}:repository-poll:{_digest(key, repository)}"


def started_key(key: str, repository: str) -> str:
    """The Redis key that says a poll of the repository is listing and started less than RELIST_SECONDS ago."""
    return queued_key(key, repository) + ":started"


def hinted_key(key: str, repository: str) -> str:
    """The Redis key holding when the repository's last hint came (Redis time, ms)."""
    return queued_key(key, repository) + ":hinted"


def window_key(key: str) -> str:
    """The set of the registry's repositories hinted during the current second."""
    return f"{get_settings().events_stream}:hinted:{_digest(key)}:{int(time.time())}"


def whole_key(key: str) -> str:
    """The Redis key that marks a registry-wide webhook poll of `key` as queued."""
    return f"{get_settings().events_stream}:registry-poll:{_digest(key)}"


def hint(key: str, repositories: list[str], expect: dict[str, list[str]] | None = None) -> Hinted:
    """A notification named `repositories` of registry `key`: queue what it needs (see the module's rules),
    in one Redis round trip and one message on the broker per poll queued. Raises StateError when Redis or
    the broker does not answer."""
    if not repositories:
        return Hinted({})
    if len(repositories) > MAX_REPOSITORIES:
        return Hinted({}, whole=queue_whole(key))
    keys, args = _hint_call(key, repositories)
    try:
        answers = _script(bus.connect(), HINT)(keys, args)
    except (redis.RedisError, OSError) as exc:
        raise _unqueued(key, "the polls", exc) from None
    return _queue_answers(key, repositories, expect, answers)


async def ahint(key: str, repositories: list[str], expect: dict[str, list[str]] | None = None) -> Hinted:
    """`hint` for the event loop (the webhook receiver): the script runs on the loop's asyncio client, and a
    worker thread is taken only when a message is to be sent (a few of a burst's notifications), not for the
    many that coalesce."""
    import anyio.to_thread

    if not repositories:
        return Hinted({})
    if len(repositories) > MAX_REPOSITORIES:
        return await anyio.to_thread.run_sync(hint, key, repositories, expect)
    keys, args = _hint_call(key, repositories)
    try:
        client = await bus.aconnect()
        answers = await _ascript(client)(keys, args)
    except (redis.RedisError, OSError) as exc:
        raise _unqueued(key, "the polls", exc) from None
    if all(answer == -3 for answer in answers):
        return Hinted(dict.fromkeys(repositories, COALESCED))
    return await anyio.to_thread.run_sync(_queue_answers, key, repositories, expect, answers)


def _hint_call(key: str, repositories: list[str]) -> tuple[list[str], list[str | int]]:
    """HINT's keys and arguments."""
    keys = [window_key(key)]
    for repository in repositories:
        keys += [queued_key(key, repository), started_key(key, repository), hinted_key(key, repository)]
    return keys, [QUEUED_SECONDS, MAX_REPOSITORIES, int(QUIET_SECONDS * 1000), *repositories]


def _queue_answers(
    key: str, repositories: list[str], expect: dict[str, list[str]] | None, answers: list[int]
) -> Hinted:
    """Send the messages of the polls HINT `answers` queued (blocking: the broker)."""
    if answers == [-1]:
        return Hinted({}, whole=queue_whole(key))
    kinds: dict[str, str] = {}
    for repository, answer in zip(repositories, answers, strict=True):
        if answer == -3:
            kinds[repository] = COALESCED
            continue
        wait = 0.0 if answer == -2 else max(answer / 1000, QUIET_SECONDS)
        _send(key, repository, (expect or {}).get(repository, []), wait)
        kinds[repository] = AT_ONCE if answer == -2 else FOLLOW_UP
    return Hinted(kinds)


def queue_repository_poll(
    key: str,
    repository: str,
    client: redis.Redis | None = None,
    *,
    expect: list[str] | None = None,
    delay: float = 0.0,
) -> bool:
    """Queue a poll of one repository unless one is queued already; True when this call queued it. `expect`:
    the tags the notification says were pushed; `delay`: seconds to wait at least before it starts (a poll
    queued with a delay is a follow-up: it also waits for the repository's hints to settle)."""
    if not delay:
        return hint(key, [repository], {repository: expect} if expect else None).queued == 1
    client = client or bus.connect()
    mark = queued_key(key, repository)
    try:
        millis = int(client.time()[0]) * 1000
        if not client.set(mark, f"F:{millis}", nx=True, ex=QUEUED_SECONDS):
            return False
        wait = max(client.pttl(started_key(key, repository)) / 1000, delay)
    except (redis.RedisError, OSError) as exc:
        raise _unqueued(key, f"the poll of {repository}", exc) from None
    _send(key, repository, expect or [], wait)
    return True


def _send(key: str, repository: str, expect: list[str], wait: float) -> None:
    """The message itself; the queued mark is taken back when the broker refuses it."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.app import REPOSITORY_POLL_TASK, app

    options = {"expect": expect[:MAX_EXPECTED_TAGS]} if expect else {}
    try:
        countdown = wait if wait > 0 else None
        app.send_task(REPOSITORY_POLL_TASK, (key, repository), options, countdown=countdown, retry=False)
    except (OperationalError, OSError) as exc:
        with contextlib.suppress(redis.RedisError, OSError):
            bus.connect().delete(queued_key(key, repository))  # else the mark lapses on its own
        raise _unqueued(key, f"the poll of {repository}", exc) from None


def defer(key: str, repository: str, expect: list[str] | None, wait: float) -> None:
    """Send a follow-up again, to start `wait` seconds from now (its queued mark stays: hints coalesce)."""
    from watcher.tasks.app import REPOSITORY_POLL_TASK, app

    options = {"expect": expect} if expect else {}
    app.send_task(REPOSITORY_POLL_TASK, (key, repository), options, countdown=wait, retry=False)


def queue_whole(key: str) -> bool:
    """Queue one registry-wide poll of `key`, trigger `webhook`, unless one is queued already; True when this
    call queued it."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.app import POLL_TASK, app

    mark = whole_key(key)
    try:
        if not bus.connect().set(mark, "1", nx=True, ex=QUEUED_SECONDS):
            return False
        app.send_task(POLL_TASK, (key,), {"trigger": "webhook"}, retry=False)
    except (redis.RedisError, OperationalError, OSError) as exc:
        with contextlib.suppress(redis.RedisError, OSError):
            bus.connect().delete(mark)
        raise _unqueued(key, "the registry-wide poll", exc) from None
    return True


def whole_started(key: str) -> None:
    """A registry-wide webhook poll starts: a notification from now on may queue another. Never raises."""
    with contextlib.suppress(redis.RedisError, OSError):
        bus.connect().delete(whole_key(key))


def whole_waits(key: str) -> bool:
    """A registry-wide webhook poll found the registry busy and will try again: it marks itself queued, so
    notifications meanwhile coalesce into it; False when another such poll is queued already (this one is
    then dropped: that one lists after every hint so far)."""
    try:
        return bool(bus.connect().set(whole_key(key), "1", nx=True, ex=QUEUED_SECONDS))
    except (redis.RedisError, OSError):
        return True


def _unqueued(key: str, what: str, exc: BaseException) -> StateError:
    name = split_key(key)[1]  # a person reads it, in their workspace
    return StateError(f"registry {name!r}: {what} could not be queued: the broker did not answer ({exc})")


def begin(key: str, repository: str) -> float:
    """A repository poll's task starts: 0 when it is to list now (its queued mark cleared: a notification
    arriving from now on queues another one), or the seconds a follow-up should wait for the repository's
    notifications to settle."""
    keys = [queued_key(key, repository), started_key(key, repository), hinted_key(key, repository)]
    args = [int(RELIST_SECONDS * 1000), int(QUIET_SECONDS * 1000), int(SETTLE_MAX_SECONDS * 1000)]
    waited: int = _script(bus.connect(), BEGIN)(keys, args)
    return waited / 1000


@lru_cache(maxsize=16)
def _script(client: redis.Redis, source: str) -> Script:
    """The script registered once per client (its SHA computed once)."""
    return client.register_script(source)


#: HINT registered on each asyncio client
_ascripts: weakref.WeakKeyDictionary[redis.asyncio.Redis, AsyncScript] = weakref.WeakKeyDictionary()


def _ascript(client: redis.asyncio.Redis) -> AsyncScript:
    script = _ascripts.get(client)
    if script is None:
        script = _ascripts[client] = client.register_script(HINT)
    return script


def started(key: str, repository: str, client: redis.Redis | None = None) -> None:
    """A repository poll starts: a notification arriving from now on queues another one, to start
    RELIST_SECONDS after this one if this one is still listing then (`finished`)."""
    pipeline = (client or bus.connect()).pipeline(transaction=False)
    pipeline.delete(queued_key(key, repository))
    pipeline.set(started_key(key, repository), "1", px=int(RELIST_SECONDS * 1000))
    pipeline.execute()


def finished(key: str, repository: str) -> None:
    """A repository poll is done (whatever its outcome): a poll queued from now on starts at once. Never
    raises: if Redis is away, the mark lapses by itself within RELIST_SECONDS."""
    with contextlib.suppress(redis.RedisError, OSError):
        bus.connect().delete(started_key(key, repository))
